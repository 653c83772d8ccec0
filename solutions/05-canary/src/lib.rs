//! Reference answer to exercise 05: the canary's traffic splitter and its verdict.
//! Graded by `exercises/05-canary/tests/grader.rs`, the learner's own grader.

/// Which version serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The version in production.
    Stable,
    /// The new version being tried on a share of the users.
    Canary,
}

/// The bucket of `user` under `salt`: a number in `0..100` that depends only on the two strings.
///
/// The same in every process, after every restart and with every Rust release (a user must
/// never move between versions by accident); spread evenly over the 100 buckets; and different
/// salts must bucket a user independently, so two rollouts do not pick the same users.
pub fn bucket(salt: &str, user: &str) -> u8 {
    // FNV-1a, 64-bit: its published offset basis and prime. Stable by definition, unlike
    // std's DefaultHasher, whose algorithm may change between Rust releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain([b':']).chain(user.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % 100) as u8
}

/// Where `user` goes when the canary takes `canary_percent` percent of users (above 100 counts
/// as 100): the canary iff the user's bucket is below the percentage.
pub fn split(salt: &str, user: &str, canary_percent: u8) -> Version {
    if bucket(salt, user) < canary_percent.min(100) {
        Version::Canary
    } else {
        Version::Stable
    }
}

/// What one version did during one step: its requests, how many of them failed, and the
/// latency of each request that was timed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// Requests served.
    pub requests: u64,
    /// Of them, failures (5xx or no answer); never more than `requests`.
    pub errors: u64,
    /// Latency samples in milliseconds, in no particular order.
    pub latencies_ms: Vec<u64>,
}

/// When a canary is judged unhealthy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// The canary's error rate may be up to this many times the stable one's…
    pub error_ratio: f64,
    /// …plus this much (a rate: 0.01 is one percentage point).
    pub error_floor: f64,
    /// The canary's p95 may be up to this many times the stable one's…
    pub latency_ratio: f64,
    /// …plus this many milliseconds.
    pub latency_floor_ms: f64,
    /// Fewer requests than this on either side, and there is no verdict yet.
    pub min_requests: u64,
}

impl Default for Rules {
    /// The seed guide's 1.5× and 1.3×, with floors of one percentage point and 20 ms, and 50
    /// requests a side.
    fn default() -> Self {
        Self {
            error_ratio: 1.5,
            error_floor: 0.01,
            latency_ratio: 1.3,
            latency_floor_ms: 20.0,
            min_requests: 50,
        }
    }
}

/// A rule the canary broke, with the numbers it was judged on.
#[derive(Debug, Clone, PartialEq)]
pub enum Breach {
    /// Its error rate was above `limit`.
    ErrorRate {
        /// The canary's error rate.
        canary: f64,
        /// The stable pool's.
        stable: f64,
        /// `error_ratio × stable + error_floor`.
        limit: f64,
    },
    /// Its p95 latency was above `limit_ms`.
    Latency {
        /// The canary's p95.
        canary_p95_ms: u64,
        /// The stable pool's.
        stable_p95_ms: u64,
        /// `latency_ratio × stable + latency_floor_ms`.
        limit_ms: f64,
    },
}

/// The verdict on one step.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The canary did as well as the stable pool, within the rules: go on.
    Healthy,
    /// The canary broke at least one rule: roll back. Every rule it broke is listed, the error
    /// rate first.
    Unhealthy(Vec<Breach>),
    /// Too few requests to judge: hold the step. Never a pass.
    NotEnoughData {
        /// The stable pool's requests.
        stable: u64,
        /// The canary's requests.
        canary: u64,
        /// What each side needs.
        needed: u64,
    },
}

/// `errors / requests`, and 0 for a window with no requests.
pub fn error_rate(w: &Window) -> f64 {
    if w.requests == 0 {
        0.0
    } else {
        w.errors as f64 / w.requests as f64
    }
}

/// The 95th percentile of `samples` by the nearest-rank method: the smallest sample with at
/// least 95% of the samples at or below it (the `⌈0.95 n⌉`-th in sorted order). `None` with no
/// samples.
pub fn p95(samples: &[u64]) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    // ⌈0.95 n⌉ in integers, so no float rounding decides the rank.
    let rank = (95 * sorted.len()).div_ceil(100);
    Some(sorted[rank.max(1) - 1])
}

/// Judges the canary against the stable pool over the same window.
///
/// Not enough data when either side has fewer than `min_requests` requests. Otherwise
/// unhealthy if the canary's error rate is above `error_ratio × stable + error_floor`, or its
/// p95 above `latency_ratio × stable p95 + latency_floor_ms` (checked only when both sides have
/// latency samples); exactly at a limit is still healthy.
pub fn verdict(stable: &Window, canary: &Window, rules: &Rules) -> Verdict {
    if stable.requests < rules.min_requests || canary.requests < rules.min_requests {
        return Verdict::NotEnoughData {
            stable: stable.requests,
            canary: canary.requests,
            needed: rules.min_requests,
        };
    }
    let mut breaches = Vec::new();
    let (s, c) = (error_rate(stable), error_rate(canary));
    let limit = rules.error_ratio * s + rules.error_floor;
    if c > limit {
        breaches.push(Breach::ErrorRate {
            canary: c,
            stable: s,
            limit,
        });
    }
    if let (Some(s), Some(c)) = (p95(&stable.latencies_ms), p95(&canary.latencies_ms)) {
        let limit_ms = rules.latency_ratio * s as f64 + rules.latency_floor_ms;
        if c as f64 > limit_ms {
            breaches.push(Breach::Latency {
                canary_p95_ms: c,
                stable_p95_ms: s,
                limit_ms,
            });
        }
    }
    if breaches.is_empty() {
        Verdict::Healthy
    } else {
        Verdict::Unhealthy(breaches)
    }
}
