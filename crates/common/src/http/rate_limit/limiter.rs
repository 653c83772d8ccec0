//! [`Rate`] and the bounded, keyed GCRA state behind [`Limiter`].

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};
use http::HeaderValue;

use crate::http::forwarded::TrustedProxies;

/// The most often a full table is swept on demand (the timer sweeps besides).
const SWEEP_AT_MOST_EVERY_MS: u64 = 1000;

/// How many requests a client may make: `count` per `per`, and up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per period, e.g. 100 in `100/min`.
    pub count: NonZeroU32,
    /// The period.
    pub per: Duration,
    /// The most requests let through back to back (`RATE_LIMIT_BURST`, default `count`).
    pub burst: NonZeroU32,
}

impl Rate {
    /// Parses `n/s`, `n/sec`, `n/min` or `n/hour` (the burst is `n`); `None` for anything else,
    /// including 0 and rates finer than one request per nanosecond.
    pub fn parse(s: &str) -> Option<Self> {
        let (n, unit) = s.split_once('/')?;
        let count = n.trim().parse::<NonZeroU32>().ok()?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return None,
        };
        let rate = Self {
            count,
            per,
            burst: count,
        };
        rate.quota().map(|_| rate)
    }

    /// The same rate with another burst.
    pub fn with_burst(self, burst: NonZeroU32) -> Self {
        Self { burst, ..self }
    }

    /// One request's share of the period: GCRA lets one more through every `interval`.
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }

    fn quota(&self) -> Option<Quota> {
        Quota::with_period(self.interval()).map(|q| q.allow_burst(self.burst))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "hour",
        };
        write!(f, "{}/{unit} (burst {})", self.count, self.burst)
    }
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through; `remaining` more may follow at once, and the budget is whole again in `reset`.
    Allowed {
        /// Requests left in the burst after this one.
        remaining: u32,
        /// Until the burst is whole again.
        reset: Duration,
    },
    /// Refused: the next request from this client is let through after `retry_after`.
    Limited {
        /// How long to wait.
        retry_after: Duration,
    },
}

/// governor's concurrent keyed store, shared with the [`Limiter`] so it can see how many keys
/// there are and whether a key is known before a check adds it.
#[derive(Debug)]
struct Bounded<K: Hash + Eq + Clone>(Arc<DashMapStateStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for Bounded<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for Bounded<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Keyed = RateLimiter<IpAddr, Bounded<IpAddr>, DefaultClock, StateInformationMiddleware>;

/// The rate limit of every client, keyed by IP. Share one (`Arc`) between every place that
/// counts, so one client has one budget.
pub struct Limiter {
    rate: Rate,
    /// `RateLimit-Limit`, the same on every answer: written once, each answer clones it.
    pub(super) limit_header: HeaderValue,
    keyed: Keyed,
    keys: Arc<DashMapStateStore<IpAddr>>,
    max_keys: usize,
    /// When the last on-demand sweep ran (ms since `born`): a flood of new clients while the
    /// table is full must not cost a sweep of every key per request.
    swept_at: AtomicU64,
    born: Instant,
    /// Whose `X-Forwarded-For` names the client.
    pub(crate) trusted: TrustedProxies,
    /// Paths never limited (prefixes when they end in `/`): the health probes and the metrics
    /// scrapes, which must get through however busy their source is.
    pub(crate) exempt: Vec<String>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("rate", &self.rate)
            .field("keys", &self.keys.len())
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter of `rate` per client, remembering at most `max_keys` clients.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        let keys = Arc::new(DashMapStateStore::default());
        // `Rate::parse` refused any rate governor cannot hold, and a `Rate` built by hand with
        // such a rate falls back to one request per nanosecond rather than panicking.
        let quota = rate
            .quota()
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX).allow_burst(rate.burst));
        let keyed: RateLimiter<_, _, _> =
            RateLimiter::new(quota, Bounded(keys.clone()), DefaultClock::default());
        let keyed = keyed.with_middleware::<StateInformationMiddleware>();
        Self {
            rate,
            limit_header: HeaderValue::from(rate.burst.get()),
            keyed,
            keys,
            max_keys: max_keys.max(1),
            swept_at: AtomicU64::new(0),
            born: Instant::now(),
            trusted: TrustedProxies::default(),
            exempt: Vec::new(),
        }
    }

    /// Believes `X-Forwarded-For` from these proxies (see [`TrustedProxies::client_ip`]).
    pub fn trust(mut self, proxies: TrustedProxies) -> Self {
        self.trusted = proxies;
        self
    }

    /// Never limits these paths (a path ending in `/` is a prefix).
    pub fn exempt(mut self, paths: &[&str]) -> Self {
        self.exempt.extend(paths.iter().map(|p| p.to_string()));
        self
    }

    /// The configured rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// How many clients are remembered now.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn is_exempt(&self, path: &str) -> bool {
        self.exempt.iter().any(|p| {
            if p.ends_with('/') {
                path.starts_with(p.as_str())
            } else {
                path == p
            }
        })
    }

    /// Counts one request from `ip` and decides.
    ///
    /// A client not yet known while `max_keys` are remembered is refused after one sweep of idle
    /// keys, as nginx's `limit_req` does when its zone is full: letting it through unlimited would
    /// hand the limit to anyone with enough addresses.
    ///
    /// The cap is checked before the key is added, so edge threads racing on new clients may
    /// overshoot it by one each; the next check sweeps.
    pub fn check(&self, ip: IpAddr) -> Decision {
        // A known client (the common case) costs one shard lookup here; counting the keys reads
        // every shard, so it is done only for a new one.
        if !self.keys.contains_key(&ip) && self.keys.len() >= self.max_keys {
            let now = self.born.elapsed().as_millis() as u64;
            let last = self.swept_at.load(Ordering::Relaxed);
            let due = now.saturating_sub(last) >= SWEEP_AT_MOST_EVERY_MS || last == 0;
            if due
                && self
                    .swept_at
                    .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.keyed.retain_recent();
            }
            if self.keys.len() >= self.max_keys {
                return Decision::Limited {
                    retry_after: self.rate.interval().max(Duration::from_secs(1)),
                };
            }
        }
        let interval = self.rate.interval();
        let burst = self.rate.burst.get();
        match self.keyed.check_key(&ip) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision::Allowed {
                    remaining,
                    reset: interval * (burst - remaining.min(burst)),
                }
            }
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(self.keyed.clock().now()),
            },
        }
    }

    /// Forgets the clients whose budget is whole again (they are as if never seen). Run it on a
    /// timer (see [`Limiter::spawn_sweeper`]) so idle keys do not pile up.
    pub fn retain_recent(&self) {
        self.keyed.retain_recent();
        self.keyed.shrink_to_fit();
    }

    /// Sweeps idle keys every `every` on the current tokio runtime, until the limiter is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(limiter) => limiter.retain_recent(),
                    None => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn rates_parse_in_every_unit_and_refuse_the_rest() {
        let r = Rate::parse("100/min").unwrap();
        assert_eq!(
            (r.count.get(), r.per, r.burst.get()),
            (100, Duration::from_secs(60), 100)
        );
        assert_eq!(r.interval(), Duration::from_millis(600));
        assert_eq!(Rate::parse("10/s").unwrap().per, Duration::from_secs(1));
        assert_eq!(Rate::parse("10/sec").unwrap().per, Duration::from_secs(1));
        assert_eq!(
            Rate::parse("5 / hour").unwrap().per,
            Duration::from_secs(3600)
        );
        for bad in [
            "", "100", "0/min", "-1/s", "100/day", "x/min", "100/", "/min",
        ] {
            assert_eq!(Rate::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_burst_passes_and_the_next_request_is_limited() {
        // 3/min: three back to back, then a wait of about one interval (20 s).
        let limiter = Limiter::new(Rate::parse("3/min").unwrap(), 100);
        let remaining: Vec<_> = (0..3)
            .map(|_| match limiter.check(ip(1)) {
                Decision::Allowed { remaining, .. } => remaining,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        match limiter.check(ip(1)) {
            Decision::Limited { retry_after } => {
                assert!(retry_after > Duration::from_secs(19), "{retry_after:?}");
                assert!(retry_after <= Duration::from_secs(20), "{retry_after:?}");
            }
            other => panic!("the fourth is limited: {other:?}"),
        }
        assert!(
            matches!(limiter.check(ip(2)), Decision::Allowed { .. }),
            "another client has its own budget"
        );
    }

    #[test]
    fn a_full_table_refuses_new_clients_but_not_known_ones() {
        let limiter = Limiter::new(Rate::parse("10/min").unwrap(), 2);
        assert!(matches!(limiter.check(ip(1)), Decision::Allowed { .. }));
        assert!(matches!(limiter.check(ip(2)), Decision::Allowed { .. }));
        assert!(matches!(limiter.check(ip(3)), Decision::Limited { .. }));
        assert!(matches!(limiter.check(ip(1)), Decision::Allowed { .. }));
        assert_eq!(limiter.keys(), 2, "never more than max_keys");
    }

    #[test]
    fn exempt_paths_match_exactly_or_by_prefix() {
        let limiter =
            Limiter::new(Rate::parse("1/s").unwrap(), 10).exempt(&["/health/", "/metrics"]);
        assert!(limiter.is_exempt("/health/ready"));
        assert!(limiter.is_exempt("/metrics"));
        assert!(!limiter.is_exempt("/metrics/x"));
        assert!(!limiter.is_exempt("/"));
    }
}
