//! Every request traced: an `X-Request-Id` (the client's, when it is a short safe token, else a
//! fresh one) passed to the worker and reflected; an `X-Response-Time` on the answer; and, when
//! asked, one log line per request with its id, method, path, worker, status and duration
//! (`LOG_FORMAT=json` makes it a JSON line a log shipper can index).
//!
//! The time is to the response head, where the header is written: the body may stream on for
//! long after. Metrics (`common::metrics`) time to the body's end.
//!
//! Layout: [`TraceLayer`], [`Trace`] (the service), [`ResponseFuture`].
//!
//! Depends on `http::headers` and `http::check` (the request id's rules).

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::TraceLayer;
pub use service::Trace;
