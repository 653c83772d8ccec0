//! Every request traced: an `X-Request-Id` (the client's, when it is a short safe token, else a
//! fresh one) passed to the worker and reflected; an `X-Response-Time` on the answer; and, when
//! asked, one log line per request with its id, method, path, worker, status and duration
//! (`LOG_FORMAT=json` makes it a JSON line a log shipper can index).
//!
//! The time is to the response head, where the header is written: the body may stream on for
//! long after. Metrics (`common::metrics`) time to the body's end.
//!
//! Layout: [`TraceLayer`], [`Trace`] (the service), [`ResponseFuture`], and `access` (what a
//! request's line says, written as an event or by the writer the cluster's logging installs).
//!
//! Depends on `http::headers` and `http::check` (the request id's rules).

mod access;
mod future;
mod layer;
mod service;

pub(crate) use access::{ACCESS_TARGET, Access, write_directly_with};
pub use future::ResponseFuture;
pub use layer::TraceLayer;
pub use service::Trace;

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::{Request, Response};
    use tower::{Layer, ServiceExt};

    use super::*;

    /// The traced answer, and the request id the inner service saw.
    async fn call(id: Option<&str>) -> (Response<()>, String) {
        let inner = tower::service_fn(|req: Request<()>| async move {
            let seen = req.headers()["x-request-id"].to_str().unwrap().to_owned();
            let mut resp = Response::new(());
            resp.headers_mut().insert("x-seen", seen.parse().unwrap());
            Ok::<_, Infallible>(resp)
        });
        let mut req = Request::get("/").body(()).unwrap();
        if let Some(id) = id {
            req.headers_mut()
                .insert("x-request-id", id.parse().unwrap());
        }
        let resp = TraceLayer::new().layer(inner).oneshot(req).await.unwrap();
        let seen = resp.headers()["x-seen"].to_str().unwrap().to_owned();
        (resp, seen)
    }

    #[tokio::test]
    async fn a_safe_id_is_kept_an_unsafe_one_replaced_and_the_time_is_set() {
        let (resp, seen) = call(Some("trace-42")).await;
        assert_eq!(seen, "trace-42", "the inner service sees the client's id");
        assert_eq!(resp.headers()["x-request-id"], "trace-42");
        assert!(
            resp.headers()["x-response-time"]
                .to_str()
                .unwrap()
                .ends_with("ms")
        );
        let (resp, seen) = call(Some("not <safe>")).await;
        assert_ne!(seen, "not <safe>");
        assert_eq!(resp.headers()["x-request-id"].to_str().unwrap(), seen);
        let (resp, seen) = call(None).await;
        assert_eq!(seen.len(), 25, "a minted id: {seen}");
        assert_eq!(resp.headers()["x-request-id"].to_str().unwrap(), seen);
    }
}
