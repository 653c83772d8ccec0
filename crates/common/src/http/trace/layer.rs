//! [`TraceLayer`]: wraps a service in [`Trace`].

use tower::Layer;

use super::service::Trace;

/// Traces every request of the wrapped service (see the [module docs](super)).
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer {
    log: bool,
}

impl TraceLayer {
    /// Request ids and response times, without a log line per request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also one `info` log line per request (target `request`).
    pub fn log_requests(mut self, on: bool) -> Self {
        self.log = on;
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace::new(inner, self.log)
    }
}
