//! [`ResponseFuture`]: the inner answer with `X-Request-Id` and `X-Response-Time` set, logged.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderName, HeaderValue, Method, Response};
use pin_project_lite::pin_project;

use crate::http::headers::{X_REQUEST_ID, X_WORKER_ID};

static X_RESPONSE_TIME: HeaderName = HeaderName::from_static("x-response-time");

/// What the log line needs of the request, kept only when lines are logged.
#[derive(Debug)]
pub(super) struct Logged {
    pub method: Method,
    pub path: String,
}

pin_project! {
    /// The future of [`Trace`](super::Trace).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: HeaderValue,
        started: Instant,
        logged: Option<Logged>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, id: HeaderValue, started: Instant, logged: Option<Logged>) -> Self {
        Self {
            inner,
            id,
            started,
            logged,
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.inner.poll(cx))?;
        let elapsed = this.started.elapsed();
        let ms = elapsed.as_secs_f64() * 1000.0;
        let headers = resp.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), this.id.clone());
        if let Ok(v) = HeaderValue::try_from(format!("{ms:.3}ms")) {
            headers.insert(X_RESPONSE_TIME.clone(), v);
        }
        if let Some(req) = this.logged.take() {
            let status = resp.status().as_u16();
            let worker = resp
                .headers()
                .get(&X_WORKER_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("master");
            tracing::info!(
                target: "request",
                request_id = this.id.to_str().unwrap_or(""),
                method = %req.method,
                path = %req.path,
                worker,
                status,
                duration_ms = ms,
                "request"
            );
        }
        Poll::Ready(Ok(resp))
    }
}
