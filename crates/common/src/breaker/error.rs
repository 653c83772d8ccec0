//! The error a refused call gets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::core::State;

/// The breaker refused the call: it is open, forced open, or half-open with every probe place
/// taken. The service behind it was not called.
#[derive(Debug, Clone)]
pub struct CircuitOpen {
    name: Arc<str>,
    state: State,
    retry_after: Duration,
}

impl CircuitOpen {
    pub(crate) fn new(name: Arc<str>, state: State, retry_after: Duration) -> Self {
        Self {
            name,
            state,
            retry_after,
        }
    }

    /// The service whose breaker refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state that refused.
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until a call may go through again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `Retry-After` in whole seconds, rounded up and at least 1 (RFC 9110 §10.2.3: a
    /// delay in seconds; 0 would invite a retry storm).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }

    /// The `Retry-After` header's value.
    pub fn retry_after_header(&self) -> HeaderValue {
        HeaderValue::from(self.retry_after_secs())
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker for {} is {}: retry after {} s",
            self.name,
            self.state,
            self.retry_after_secs()
        )
    }
}

impl std::error::Error for CircuitOpen {}
