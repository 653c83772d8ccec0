//! Consistent hashing: the same key always reaches the same worker, and a worker that comes or goes
//! moves only its own share of the keys.
//!
//! Use it when a worker keeps something per key that is costly to rebuild: a cache, a connection to
//! a shard, a rate-limit bucket. The key is a request header (e.g. `X-User-Id`, set with
//! `HASH_HEADER`) or, when the header is absent, the request path.
//!
//! The ring is [`HashRing`] from the sticky-sessions lesson: it holds every slot ever seen, and a
//! lookup skips slots that are not ready, so a restarting worker keeps its points and gets its keys
//! back when it returns while its keys meanwhile spread over the other workers.

use std::sync::RwLock;

use http::HeaderName;

use super::ring::{DEFAULT_VNODES, HashRing, hash_bytes};
use super::selector::{RequestInfo, Selector, Worker};

/// Routes by the hash of a header, or of the path without one.
#[derive(Debug)]
pub struct ConsistentHash {
    header: Option<HeaderName>,
    /// Read on every request; written only when a slot appears for the first time.
    ring: RwLock<HashRing<usize>>,
}

impl ConsistentHash {
    /// Hashes the value of `header` when the request has it, else the path. `None`: always the path.
    pub fn new(header: Option<HeaderName>) -> Self {
        Self {
            header,
            ring: RwLock::new(HashRing::new(DEFAULT_VNODES)),
        }
    }

    /// The bytes a request is placed by.
    fn key<'a>(&self, req: &'a RequestInfo<'_>) -> &'a [u8] {
        self.header
            .as_ref()
            .and_then(|h| req.headers.get(h))
            .map(|v| v.as_bytes())
            .unwrap_or_else(|| req.uri.path().as_bytes())
    }

    /// Puts slots not yet on the ring onto it; the write lock only when one is new.
    fn learn(&self, ready: &[Worker]) {
        let missing = {
            let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
            ready.iter().any(|b| !ring.contains(b.slot()))
        };
        if missing {
            let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
            for b in ready {
                ring.add(b.slot());
            }
        }
    }
}

impl Selector for ConsistentHash {
    fn select(&self, req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        self.learn(ready);
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        ring.find_map(hash_bytes(self.key(req)), |slot| {
            ready.iter().position(|b| b.slot() == slot)
        })
    }

    fn name(&self) -> &'static str {
        "consistent-hash"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::rotor::testing::{Req, backends};

    fn slot(ch: &ConsistentHash, req: &Req, ready: &[Worker]) -> usize {
        ready[ch.select(&req.info(), ready).expect("a pick")].slot()
    }

    #[test]
    fn the_same_key_always_reaches_the_same_worker() {
        let ready = backends(&[1, 2, 3]);
        let ch = ConsistentHash::new(Some(HeaderName::from_static("x-user-id")));
        for user in 0..50 {
            let req = Req::get("/anything").header("x-user-id", &format!("user-{user}"));
            let first = slot(&ch, &req, &ready);
            for _ in 0..3 {
                assert_eq!(slot(&ch, &req, &ready), first, "user-{user}");
            }
        }
    }

    #[test]
    fn without_the_header_the_path_is_the_key() {
        let ready = backends(&[1, 2, 3]);
        let ch = ConsistentHash::new(Some(HeaderName::from_static("x-user-id")));
        let by_path = ConsistentHash::new(None);
        for p in 0..50 {
            let req = Req::get(&format!("/items/{p}"));
            assert_eq!(
                slot(&ch, &req, &ready),
                slot(&by_path, &req, &ready),
                "/items/{p}"
            );
        }
    }

    #[test]
    fn keys_spread_over_every_worker() {
        let ready = backends(&[1, 2]);
        let ch = ConsistentHash::new(None);
        let mut got = [0; 3];
        for p in 0..2000 {
            got[slot(&ch, &Req::get(&format!("/items/{p}")), &ready)] += 1;
        }
        assert!(
            got[1] > 800 && got[2] > 800,
            "2000 paths over 2 workers: {got:?}"
        );
    }

    #[test]
    fn a_missing_worker_moves_only_its_own_keys() {
        let all = backends(&[1, 2, 3]);
        let without_2: Vec<_> = all.iter().filter(|b| b.slot() != 2).cloned().collect();
        let ch = ConsistentHash::new(None);
        for p in 0..500 {
            let req = Req::get(&format!("/items/{p}"));
            let before = slot(&ch, &req, &all);
            let after = slot(&ch, &req, &without_2);
            assert!(
                before == 2 || before == after,
                "/items/{p} moved {before} → {after}"
            );
        }
    }
}
