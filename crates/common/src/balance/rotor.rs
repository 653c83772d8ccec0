//! What the "least something" strategies share: pick the lowest score, and break ties fairly.
//!
//! Why ties need care: at rest every worker has 0 requests in flight, so a plain `min_by_key` picks
//! the first worker every time, and sequential traffic (one client, one request at a time) all lands
//! on worker 1. That is the Node course's 40/0 split in another form. Starting the scan at a
//! rotating offset makes equal workers take turns, at the cost of one relaxed atomic add per pick.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A rotating start position for the tie-breaking scan.
#[derive(Debug, Default)]
pub(crate) struct Rotor(AtomicUsize);

impl Rotor {
    /// Where to start scanning `n` candidates this time.
    pub(crate) fn start(&self, n: usize) -> usize {
        // Relaxed: the counter only spreads ties, it orders nothing.
        self.0.fetch_add(1, Ordering::Relaxed) % n.max(1)
    }
}

/// The index of the lowest `score` in `items`, scanning from `start` and wrapping, so among equal
/// scores the first one at or after `start` wins. `None` only when `items` is empty.
pub(crate) fn least_by<T, K: PartialOrd>(
    items: &[T],
    start: usize,
    mut score: impl FnMut(&T) -> K,
) -> Option<usize> {
    let n = items.len();
    let mut best: Option<(usize, K)> = None;
    for step in 0..n {
        let i = (start + step) % n;
        let s = score(&items[i]);
        // Strictly lower only: an equal score later in the scan does not displace an earlier one.
        if best.as_ref().is_none_or(|(_, b)| s < *b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// Backends and requests for unit tests, without processes or sockets.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use http::{HeaderMap, HeaderValue, Method, Uri};

    use crate::balance::{RequestInfo, Selector, Worker};

    /// One backend per slot (pid = 1000 + slot), no observers, a socket that does not exist.
    pub(crate) fn backends(slots: &[usize]) -> Vec<Worker> {
        slots.iter().map(|&s| backend(s, 1000 + s as u32)).collect()
    }

    /// A backend for `slot` running as `pid`.
    pub(crate) fn backend(slot: usize, pid: u32) -> Worker {
        Worker::new(slot, pid, 0, Arc::default())
    }

    /// Sets a backend's in-flight count, as the edge would after dispatching that many requests.
    pub(crate) fn set_in_flight(b: &Worker, n: u64) {
        b.counters().in_flight.store(n, Ordering::Relaxed);
    }

    /// A request to send through a selector in a test.
    pub(crate) struct Req {
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        client: SocketAddr,
    }

    impl Req {
        /// `GET path` from 127.0.0.1.
        pub(crate) fn get(path: &str) -> Self {
            Self {
                method: Method::GET,
                uri: path.parse().expect("test paths are valid URIs"),
                headers: HeaderMap::new(),
                client: SocketAddr::from(([127, 0, 0, 1], 40000)),
            }
        }

        /// Adds a header.
        pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
            let value = HeaderValue::from_str(value).expect("test header values are valid");
            self.headers.insert(name, value);
            self
        }

        pub(crate) fn info(&self) -> RequestInfo<'_> {
            RequestInfo {
                method: &self.method,
                uri: &self.uri,
                headers: &self.headers,
                client: self.client,
            }
        }
    }

    /// The slot `selector` picks from `ready` for a plain `GET /`.
    pub(crate) fn pick(selector: &dyn Selector, ready: &[Worker]) -> usize {
        let req = Req::get("/");
        let i = selector
            .select(&req.info(), ready)
            .expect("the selector picked a worker");
        ready[i].slot()
    }

    /// `n` picks in a row with nothing in flight, as slot numbers.
    pub(crate) fn sequence(selector: &dyn Selector, ready: &[Worker], n: usize) -> Vec<usize> {
        (0..n).map(|_| pick(selector, ready)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_score_wins_wherever_the_scan_starts() {
        let scores = [3, 1, 2];
        for start in 0..3 {
            assert_eq!(least_by(&scores, start, |s| *s), Some(1), "start {start}");
        }
    }

    #[test]
    fn ties_go_to_the_first_at_or_after_the_start() {
        let scores = [0, 5, 0, 0];
        //  start 0 → index 0; start 1 → scans 1,2,… → 2; start 3 → 3; start 2 → 2
        assert_eq!(least_by(&scores, 0, |s| *s), Some(0));
        assert_eq!(least_by(&scores, 1, |s| *s), Some(2));
        assert_eq!(least_by(&scores, 2, |s| *s), Some(2));
        assert_eq!(least_by(&scores, 3, |s| *s), Some(3));
        assert_eq!(least_by::<u32, u32>(&[], 0, |s| *s), None);
    }
}
