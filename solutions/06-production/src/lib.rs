//! Reference answer to exercise 06 (production): the readiness rule, the admin check and the
//! GCRA rate-limit decision. Graded by `exercises/06-production/tests/grader.rs`.

/// What `/health/ready` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadinessInput {
    /// Workers in the Ready state.
    pub workers_ready: usize,
    /// The session store's last check: `Some(true)` reachable, `Some(false)` not, `None` when
    /// there is no external store (sessions in memory).
    pub store_reachable: Option<bool>,
    /// A graceful shutdown has begun.
    pub draining: bool,
}

/// Why the cluster is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// Shutting down: a load balancer must stop sending before the listener closes.
    Draining,
    /// No worker could serve a request.
    NoWorkerReady,
    /// Sessions could not be read or written.
    StoreUnreachable,
}

/// The readiness verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Send traffic.
    Ready,
    /// Do not, and why.
    NotReady(NotReady),
}

impl Readiness {
    /// The status `/health/ready` answers with: 200 or 503.
    pub fn status(self) -> u16 {
        match self {
            Readiness::Ready => 200,
            Readiness::NotReady(_) => 503,
        }
    }
}

/// Ready when not draining, at least one worker is Ready, and the store (if there is one) is
/// reachable; otherwise the first reason of those three, in that order.
pub fn readiness(input: ReadinessInput) -> Readiness {
    if input.draining {
        return Readiness::NotReady(NotReady::Draining);
    }
    if input.workers_ready == 0 {
        return Readiness::NotReady(NotReady::NoWorkerReady);
    }
    if input.store_reachable == Some(false) {
        return Readiness::NotReady(NotReady::StoreUnreachable);
    }
    Readiness::Ready
}

/// Why an admin request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token is configured (unset or empty): the admin API is off, never open.
    AdminOff,
    /// No `Authorization` header.
    Missing,
    /// A header, but not `Bearer <token>`.
    NotBearer,
    /// A bearer token, but not the configured one.
    WrongToken,
}

/// The admin check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAuth {
    /// Go ahead.
    Authorised,
    /// Refused, and why.
    Denied(Denied),
}

impl AdminAuth {
    /// The status to answer a refusal with (200 when authorised): 404 while the admin API is
    /// off (there is nothing there), 401 otherwise.
    pub fn status(self) -> u16 {
        match self {
            AdminAuth::Authorised => 200,
            AdminAuth::Denied(Denied::AdminOff) => 404,
            AdminAuth::Denied(_) => 401,
        }
    }
}

/// Whether `a` and `b` are the same bytes, taking a time that depends only on their lengths:
/// different lengths are `false` at once (the length is not the secret); equal lengths look at
/// every pair of bytes, whatever the first ones were.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

/// Checks an `Authorization` header value against the configured token, in this order:
/// - no token configured (`None` or empty): `Denied(AdminOff)`, whatever was sent;
/// - no header: `Denied(Missing)`;
/// - the header must be the scheme `Bearer` (in any case), one or more spaces, and a token that
///   is not empty; anything else is `Denied(NotBearer)`;
/// - the token is compared with [`constant_time_eq`]: `Authorised`, or `Denied(WrongToken)`.
pub fn check_admin(header: Option<&str>, token: Option<&str>) -> AdminAuth {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return AdminAuth::Denied(Denied::AdminOff);
    };
    let Some(header) = header else {
        return AdminAuth::Denied(Denied::Missing);
    };
    let Some((scheme, rest)) = header.split_once(' ') else {
        return AdminAuth::Denied(Denied::NotBearer);
    };
    let presented = rest.trim_start_matches(' ');
    if !scheme.eq_ignore_ascii_case("bearer") || presented.is_empty() {
        return AdminAuth::Denied(Denied::NotBearer);
    }
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        AdminAuth::Authorised
    } else {
        AdminAuth::Denied(Denied::WrongToken)
    }
}

/// A rate limit for GCRA: one request per `emission_interval_ms` on average, up to `burst` at
/// once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The time one request "costs", in ms: the period divided by the requests allowed in it.
    pub emission_interval_ms: u64,
    /// How many requests may arrive at the same instant (at least 1).
    pub burst: u32,
}

impl Limit {
    /// `count` requests per `period_ms`, with a burst of `burst`; e.g. 100 a minute is
    /// `Limit::per(100, 60_000, 100)`.
    pub fn per(count: u32, period_ms: u64, burst: u32) -> Self {
        Self {
            emission_interval_ms: period_ms / u64::from(count.max(1)),
            burst: burst.max(1),
        }
    }
}

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it through; store `tat_ms` for the client's next request.
    Allow {
        /// The new theoretical arrival time.
        tat_ms: u64,
        /// How many more requests could arrive right now and be allowed.
        remaining: u32,
    },
    /// Refuse it (429); the stored time is unchanged.
    Deny {
        /// How long until one request would be allowed, in ms (for `Retry-After`).
        retry_after_ms: u64,
    },
}

/// The GCRA decision for a request at `now_ms` from a client whose stored theoretical arrival
/// time is `tat_ms` (`None`: never seen, or forgotten).
///
/// With `T` the emission interval and `tau = T * (burst - 1)` the tolerance:
/// - the client's `tat` is the stored one, or `now_ms` when there is none or it is in the past;
/// - a request before `tat - tau` is early: `Deny`, with `retry_after_ms = tat - tau - now_ms`;
/// - any other is allowed: the new stored time is `tat + T`, and `remaining` is how many more
///   requests at `now_ms` would be allowed, `(now_ms + tau + T - new tat) / T` rounded down.
///
/// No input may panic: the arithmetic saturates.
pub fn gcra(limit: Limit, tat_ms: Option<u64>, now_ms: u64) -> Decision {
    let t = limit.emission_interval_ms;
    let tau = t.saturating_mul(u64::from(limit.burst.max(1) - 1));
    let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
    let allow_at = tat.saturating_sub(tau);
    if now_ms < allow_at {
        return Decision::Deny {
            retry_after_ms: allow_at - now_ms,
        };
    }
    let new_tat = tat.saturating_add(t);
    // Allowed means tat <= now + tau, so new_tat <= now + tau + t: what is left of the
    // tolerance, in whole requests. A zero interval limits nothing: the burst is always left.
    let left = now_ms
        .saturating_add(tau)
        .saturating_add(t)
        .saturating_sub(new_tat);
    let remaining = left.checked_div(t).map_or(limit.burst.max(1) - 1, |n| {
        u32::try_from(n).unwrap_or(u32::MAX)
    });
    Decision::Allow {
        tat_ms: new_tat,
        remaining,
    }
}
