//! Session affinity: send every request of a session to the worker that holds it.
//!
//! The session id names its slot (see [`crate::session`]), so routing reads the cookie and needs no
//! shared table:
//! 1. a well-formed session cookie whose slot is ready goes to that slot (`cookie_routed`);
//! 2. one whose slot is not ready (restarting, scaled away, Failed) goes to the ring successor of
//!    the session id among the ready slots (`remapped`): only that slot's sessions move, spread over
//!    the others rather than piled on one neighbour, and each one lands on the same worker every time;
//! 3. no cookie, or a malformed one: a new session. By default (`STICKY_NEW=balance`) the balancing
//!    strategy places it (least connections; `balance_routed`), as HAProxy's `cookie … insert` and
//!    nginx's `sticky cookie` do; with `STICKY_NEW=ip` the client's IP is placed on the ring
//!    (`ip_routed`), for clients that drop cookies. Either way the worker it reaches mints the
//!    session for its own slot, so the next request, carrying the cookie, comes back to it.
//!    IP placement sends every fresh client behind one address (a NAT, a test on localhost) to one
//!    worker, which is why it is not the default.
//!
//! The ring holds every slot ever seen and lookups skip slots that are not ready, so a worker that
//! restarts in its slot gets exactly its old clients back. This is the Node course's bug fixed: there
//! the worker that created a session (chosen by IP hash) was not the worker later requests reached
//! (chosen by `md5(sessionId) % n`), so half the sessions were lost on their second request.

use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use serde::Serialize;

use super::least_connections::LeastConnections;
use super::ring::{DEFAULT_VNODES, HashRing, hash_bytes};
use super::selector::{RequestInfo, Selector, Worker};
pub use crate::config::StickyNew;
/// Moved to `http::forwarded`, where the rate limit reads it too; still named here.
pub use crate::http::forwarded::TrustedProxies;
use crate::session::{COOKIE_NAME, cookie_value, parse_id};

/// Slots with per-slot counters; beyond it a slot is still routed, just not counted apart.
const COUNTED_SLOTS: usize = 257;

/// How requests were placed on one slot.
#[derive(Debug, Default)]
struct SlotRouting {
    cookie: AtomicU64,
    ip: AtomicU64,
    balanced: AtomicU64,
    remapped_in: AtomicU64,
}

/// The sticky-session selector. Keep an `Arc` of it to read [`Sticky::stats`].
pub struct Sticky {
    cookie: String,
    trusted: TrustedProxies,
    /// Every slot seen so far; read on every request, written only when a new slot first appears.
    ring: RwLock<HashRing<usize>>,
    /// How a request without a usable session cookie is placed.
    new_sessions: StickyNew,
    /// The strategy that places new sessions under [`StickyNew::Balance`].
    balance: Box<dyn Selector>,
    cookie_routed: AtomicU64,
    ip_routed: AtomicU64,
    balance_routed: AtomicU64,
    remapped: AtomicU64,
    invalid_cookies: AtomicU64,
    per_slot: Box<[SlotRouting]>,
}

impl std::fmt::Debug for Sticky {
    // By hand: the balancing strategy is a trait object with only a name to show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sticky")
            .field("cookie", &self.cookie)
            .field("trusted", &self.trusted)
            .field("new_sessions", &self.new_sessions)
            .field("balance", &self.balance.name())
            .finish_non_exhaustive()
    }
}

/// What [`Sticky`] has done, as `/sticky-stats` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StickyStats {
    /// The strategy's name.
    pub strategy: &'static str,
    /// Requests routed by their session cookie to the slot that minted it.
    pub cookie_routed: u64,
    /// How requests with no (usable) cookie are placed: `balance` or `ip`.
    pub new_sessions: &'static str,
    /// Requests with no (usable) cookie, placed by client IP (`STICKY_NEW=ip`).
    pub ip_routed: u64,
    /// Requests with no (usable) cookie, placed by the balancing strategy (`STICKY_NEW=balance`).
    pub balance_routed: u64,
    /// Requests whose session's slot was not ready, sent to its ring successor.
    pub remapped: u64,
    /// Requests whose session cookie was malformed (then placed as new ones are).
    pub invalid_cookies: u64,
    /// Per slot, for the slots that were sent anything.
    pub slots: Vec<SlotStats>,
}

/// One slot's share in [`StickyStats`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotStats {
    /// The slot.
    pub slot: usize,
    /// Requests that came to it by cookie.
    pub cookie_routed: u64,
    /// Requests that came to it by IP.
    pub ip_routed: u64,
    /// New sessions the balancing strategy gave it.
    pub balance_routed: u64,
    /// Requests it took for another slot's sessions.
    pub remapped_in: u64,
}

impl Sticky {
    /// A selector reading the `sessionId` cookie and trusting `X-Forwarded-For` from `trusted`.
    pub fn new(trusted: TrustedProxies) -> Self {
        Self::with_cookie(COOKIE_NAME, trusted)
    }

    /// As [`Sticky::new`] with another cookie name.
    pub fn with_cookie(cookie: &str, trusted: TrustedProxies) -> Self {
        Self {
            cookie: cookie.to_string(),
            trusted,
            ring: RwLock::new(HashRing::new(DEFAULT_VNODES)),
            new_sessions: StickyNew::default(),
            balance: Box::new(LeastConnections::new()),
            cookie_routed: AtomicU64::new(0),
            ip_routed: AtomicU64::new(0),
            balance_routed: AtomicU64::new(0),
            remapped: AtomicU64::new(0),
            invalid_cookies: AtomicU64::new(0),
            per_slot: (0..COUNTED_SLOTS).map(|_| SlotRouting::default()).collect(),
        }
    }

    /// Places new sessions as `mode` says (the default is [`StickyNew::Balance`]).
    pub fn new_sessions(mut self, mode: StickyNew) -> Self {
        self.new_sessions = mode;
        self
    }

    /// Places new sessions with `strategy` under [`StickyNew::Balance`] (least connections unless
    /// told otherwise).
    pub fn balance_with(mut self, strategy: impl Selector + 'static) -> Self {
        self.balance = Box::new(strategy);
        self
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StickyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let slots = self
            .per_slot
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                get(&s.cookie) + get(&s.ip) + get(&s.balanced) + get(&s.remapped_in) > 0
            })
            .map(|(slot, s)| SlotStats {
                slot,
                cookie_routed: get(&s.cookie),
                ip_routed: get(&s.ip),
                balance_routed: get(&s.balanced),
                remapped_in: get(&s.remapped_in),
            })
            .collect();
        StickyStats {
            strategy: self.name(),
            cookie_routed: get(&self.cookie_routed),
            new_sessions: match self.new_sessions {
                StickyNew::Balance => "balance",
                StickyNew::Ip => "ip",
            },
            ip_routed: get(&self.ip_routed),
            balance_routed: get(&self.balance_routed),
            remapped: get(&self.remapped),
            invalid_cookies: get(&self.invalid_cookies),
            slots,
        }
    }

    /// Where a request would go, without counting it: `(index in ready, how)`, or
    /// [`Placed::New`] when the balancing strategy is to place it. Generic over how a slot is read
    /// from an element so the edge's `&[Worker]` is used as it is (no allocation on the request
    /// path) and tests can pass bare slot numbers.
    fn place<T>(
        &self,
        headers: &HeaderMap,
        client: SocketAddr,
        ready: &[T],
        slot_of: impl Fn(&T) -> usize,
    ) -> Option<Placed> {
        self.learn(ready, &slot_of);
        let index_of = |slot: usize| ready.iter().position(|b| slot_of(b) == slot);
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        let mut invalid = false;
        if let Some(id) = cookie_value(headers, &self.cookie) {
            match parse_id(id) {
                Some(slot) => {
                    if let Some(i) = index_of(slot) {
                        return Some(Placed::At(i, Route::Cookie));
                    }
                    let i = ring.find_map(hash_bytes(id.as_bytes()), index_of)?;
                    return Some(Placed::At(i, Route::Remapped));
                }
                None => invalid = true,
            }
        }
        if self.new_sessions == StickyNew::Balance {
            return Some(Placed::New { invalid });
        }
        let ip = self.trusted.client_ip(client.ip(), headers);
        let key = match ip {
            IpAddr::V4(v4) => hash_bytes(&v4.octets()),
            IpAddr::V6(v6) => hash_bytes(&v6.octets()),
        };
        let i = ring.find_map(key, index_of)?;
        Some(Placed::At(i, Route::Ip { invalid }))
    }

    /// Puts any slot not yet on the ring onto it. The read lock is enough to check; the write lock
    /// is taken only when a slot appears for the first time.
    fn learn<T>(&self, ready: &[T], slot_of: &impl Fn(&T) -> usize) {
        let missing = {
            let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
            ready.iter().any(|b| !ring.contains(slot_of(b)))
        };
        if missing {
            let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
            for b in ready {
                ring.add(slot_of(b));
            }
        }
    }

    fn count(&self, slot: usize, route: Route) {
        let per = self.per_slot.get(slot);
        match route {
            Route::Cookie => {
                self.cookie_routed.fetch_add(1, Ordering::Relaxed);
                per.map(|p| p.cookie.fetch_add(1, Ordering::Relaxed));
            }
            Route::Remapped => {
                self.remapped.fetch_add(1, Ordering::Relaxed);
                per.map(|p| p.remapped_in.fetch_add(1, Ordering::Relaxed));
            }
            Route::Ip { invalid } => {
                self.ip_routed.fetch_add(1, Ordering::Relaxed);
                if invalid {
                    self.invalid_cookies.fetch_add(1, Ordering::Relaxed);
                }
                per.map(|p| p.ip.fetch_add(1, Ordering::Relaxed));
            }
            Route::Balanced { invalid } => {
                self.balance_routed.fetch_add(1, Ordering::Relaxed);
                if invalid {
                    self.invalid_cookies.fetch_add(1, Ordering::Relaxed);
                }
                per.map(|p| p.balanced.fetch_add(1, Ordering::Relaxed));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Cookie,
    Remapped,
    Ip { invalid: bool },
    Balanced { invalid: bool },
}

/// What [`Sticky::place`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// This index of the ready set, by this route.
    At(usize, Route),
    /// A new session, for the balancing strategy to place.
    New { invalid: bool },
}

impl Selector for Sticky {
    fn select(&self, req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        let (i, route) = match self.place(req.headers, req.client, ready, |b| b.slot())? {
            Placed::At(i, route) => (i, route),
            Placed::New { invalid } => (
                self.balance.select(req, ready)?,
                Route::Balanced { invalid },
            ),
        };
        if let Some(b) = ready.get(i) {
            self.count(b.slot(), route);
        }
        Some(i)
    }

    fn name(&self) -> &'static str {
        "sticky"
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::session::mint_id;

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("sessionId={id}")).unwrap(),
        );
        h
    }

    fn slot_for(s: &Sticky, h: &HeaderMap, client: &str, ready: &[usize]) -> (usize, Route) {
        match s.place(h, peer(client), ready, |s| *s).unwrap() {
            Placed::At(i, route) => (ready[i], route),
            Placed::New { .. } => panic!("placed by the balancer, not by the ring"),
        }
    }

    /// The sticky selector that places new sessions by client IP.
    fn by_ip() -> Sticky {
        Sticky::new(TrustedProxies::default()).new_sessions(StickyNew::Ip)
    }

    #[test]
    fn a_cookie_goes_to_the_slot_it_names() {
        let s = Sticky::new(TrustedProxies::default());
        for slot in 1..=4 {
            assert_eq!(
                slot_for(&s, &cookie(&mint_id(slot)), "10.0.0.1", &[1, 2, 3, 4]),
                (slot, Route::Cookie)
            );
        }
    }

    #[test]
    fn without_a_cookie_the_same_ip_always_gets_the_same_slot() {
        let s = by_ip();
        let none = HeaderMap::new();
        let first = slot_for(&s, &none, "192.0.2.7", &[1, 2, 3]);
        for _ in 0..10 {
            assert_eq!(slot_for(&s, &none, "192.0.2.7", &[1, 2, 3]), first);
        }
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            seen.insert(slot_for(&s, &none, &format!("198.51.100.{i}"), &[1, 2, 3]).0);
        }
        assert_eq!(
            seen.len(),
            3,
            "different IPs spread over every slot: {seen:?}"
        );
    }

    #[test]
    fn a_missing_slot_moves_only_its_own_sessions_and_each_consistently() {
        let s = Sticky::new(TrustedProxies::default());
        let all = [1, 2, 3, 4];
        let without_3 = [1, 2, 4];
        let mut landed = std::collections::BTreeMap::new();
        for _ in 0..400 {
            let id = mint_id(3);
            let (slot, route) = slot_for(&s, &cookie(&id), "10.0.0.1", &without_3);
            assert_eq!(route, Route::Remapped);
            assert_eq!(
                slot_for(&s, &cookie(&id), "10.9.9.9", &without_3).0,
                slot,
                "same id, same fallback"
            );
            *landed.entry(slot).or_insert(0) += 1;
        }
        assert_eq!(
            landed.len(),
            3,
            "slot 3's sessions spread over the others: {landed:?}"
        );
        for slot in [1, 2, 4] {
            assert_eq!(
                slot_for(&s, &cookie(&mint_id(slot)), "10.0.0.1", &without_3),
                (slot, Route::Cookie)
            );
        }
        // Slot 3 returns: its sessions come home.
        assert_eq!(
            slot_for(&s, &cookie(&mint_id(3)), "10.0.0.1", &all),
            (3, Route::Cookie)
        );
    }

    #[test]
    fn a_malformed_cookie_is_routed_by_ip_and_counted() {
        let s = by_ip();
        let (_, route) = slot_for(&s, &cookie("../../etc/passwd"), "10.0.0.1", &[1, 2]);
        assert_eq!(route, Route::Ip { invalid: true });
        s.count(1, route);
        let stats = s.stats();
        assert_eq!((stats.ip_routed, stats.invalid_cookies), (1, 1));
        assert_eq!(stats.slots[0].slot, 1);
    }

    #[test]
    fn without_a_cookie_a_new_session_is_left_to_the_balancer_by_default() {
        let s = Sticky::new(TrustedProxies::default());
        let none = HeaderMap::new();
        assert_eq!(
            s.place(&none, peer("127.0.0.1"), &[1, 2, 3, 4], |s| *s),
            Some(Placed::New { invalid: false })
        );
        assert_eq!(
            s.place(&cookie("nonsense"), peer("127.0.0.1"), &[1, 2], |s| *s),
            Some(Placed::New { invalid: true })
        );
        // A valid cookie still goes home, and a missing slot's sessions still move on the ring.
        assert_eq!(
            slot_for(&s, &cookie(&mint_id(2)), "127.0.0.1", &[1, 2]),
            (2, Route::Cookie)
        );
        assert_eq!(
            slot_for(&s, &cookie(&mint_id(3)), "127.0.0.1", &[1, 2]).1,
            Route::Remapped
        );
    }

    #[test]
    fn three_hundred_fresh_clients_from_one_ip_spread_over_four_workers_and_are_counted() {
        use crate::balance::rotor::testing::backends;
        let s = Sticky::new(TrustedProxies::default());
        let ready = backends(&[1, 2, 3, 4]);
        let none = HeaderMap::new();
        let info = RequestInfo {
            method: &http::Method::GET,
            uri: &"/".parse().unwrap(),
            headers: &none,
            client: peer("127.0.0.1"),
        };
        let mut per = [0usize; 4];
        for _ in 0..300 {
            per[s.select(&info, &ready).unwrap()] += 1;
        }
        assert!(
            per.iter().all(|n| *n == 75),
            "even, one client each in turn: {per:?}"
        );
        let stats = s.stats();
        assert_eq!(
            (stats.balance_routed, stats.ip_routed, stats.new_sessions),
            (300, 0, "balance")
        );
        assert_eq!(by_ip().stats().new_sessions, "ip");
    }
}
