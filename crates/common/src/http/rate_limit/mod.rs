//! A rate limit per client IP: GCRA (the generic cell rate algorithm) through `governor`, keyed by
//! the client's address, as a tower middleware.
//!
//! Put in front of the whole edge, one limiter holds for the whole cluster however many workers
//! serve: a limiter per worker would let N times the limit through. Answers past the limit are
//! `429 Too Many Requests` (RFC 6585 §4) with `Retry-After`; every answer carries the
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers of the IETF httpapi
//! draft, so a well-behaved client can slow down before it is refused.
//!
//! Layout (as tower's own middleware):
//! - [`Rate`]: `RATE_LIMIT` (`100/min`, `10/s`, `5000/hour`) and `RATE_LIMIT_BURST`, parsed;
//! - [`Limiter`]: the keyed GCRA state, bounded: idle keys are dropped by
//!   [`Limiter::retain_recent`] (on a timer) and at most `max_keys` are kept;
//! - [`RateLimitLayer`], [`RateLimit`] (the service) and [`ResponseFuture`];
//! - [`ClientAddr`]: the request extension the service keys on.
//!
//! Depends on `http::forwarded` (whose `X-Forwarded-For` to believe) and nothing else.

mod future;
mod layer;
mod limiter;
mod service;

pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub use limiter::{Decision, Limiter, Rate};
pub use service::{ClientAddr, RateLimit};
