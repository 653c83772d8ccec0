//! The crate's error alias, for everything that is only reported, never matched on.
//!
//! Where a caller does match on an error (a worker connection that failed before or after the
//! request was sent, a body that was too large), the layer that knows defines a small enum of its
//! own; this alias is for the rest, as in tokio's mini-redis.

/// The error type for everything that only needs to be reported, not matched on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
