//! [`Trace`]: gives each request its id and starts its clock.

use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::Service;

use super::future::{Logged, ResponseFuture};
use crate::http::check::valid_request_id;
use crate::http::headers::{X_REQUEST_ID, mint_request_id};

/// Sets the request id, times the answer and logs it. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    log: bool,
}

impl<S> Trace<S> {
    /// `inner`, traced; one log line per request if `log`.
    pub fn new(inner: S, log: bool) -> Self {
        Self { inner, log }
    }
}

impl<S, B, R> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Instant::now();
        // The same rule as the edge's: one short token of safe characters, else a fresh id, so a
        // 10 KB or header-breaking id never reaches a log or a response.
        let headers = req.headers_mut();
        let kept = {
            let mut ids = headers.get_all(&X_REQUEST_ID).iter();
            match (ids.next(), ids.next()) {
                (Some(id), None) if valid_request_id(id.as_bytes()) => Some(id.clone()),
                _ => None,
            }
        };
        let id = match kept {
            Some(id) => id,
            None => {
                let id = mint_request_id();
                headers.insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        let logged = self.log.then(|| Logged {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
        });
        ResponseFuture::new(self.inner.call(req), id, started, logged)
    }
}
