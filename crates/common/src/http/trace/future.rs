//! [`ResponseFuture`]: the inner answer with `X-Request-Id` and `X-Response-Time` set, logged.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Method, Response};
use pin_project_lite::pin_project;

use crate::http::headers::{X_REQUEST_ID, X_WORKER_ID};

use super::access::Access;

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
        let headers = resp.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), this.id.clone());
        headers.insert(X_RESPONSE_TIME.clone(), response_time(elapsed));
        if let Some(req) = this.logged.take() {
            let worker = resp
                .headers()
                .get(&X_WORKER_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("master");
            Access {
                request_id: this.id.to_str().unwrap_or(""),
                method: &req.method,
                path: &req.path,
                worker,
                status: resp.status().as_u16(),
                micros: micros(elapsed),
            }
            .log();
        }
        Poll::Ready(Ok(resp))
    }
}

/// `X-Response-Time` as milliseconds with three decimals (`1.362ms`), the nearest microsecond.
/// Written by hand: `format!("{ms:.3}ms")` of a float costs an exact float-to-decimal
/// conversion on every request.
fn response_time(elapsed: Duration) -> HeaderValue {
    let total = micros(elapsed);
    // Up to 20 digits of whole milliseconds, the point, three decimals, "ms".
    let mut buf = [0u8; 26];
    let mut at = buf.len();
    let mut put = |b: u8| {
        at -= 1;
        buf[at] = b;
    };
    put(b's');
    put(b'm');
    let (mut whole, mut frac) = (total / 1000, total % 1000);
    for _ in 0..3 {
        put(b'0' + (frac % 10) as u8);
        frac /= 10;
    }
    put(b'.');
    loop {
        put(b'0' + (whole % 10) as u8);
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[at..]).unwrap_or_else(|_| HeaderValue::from_static("0.000ms"))
}

/// `elapsed` to the nearest microsecond.
fn micros(elapsed: Duration) -> u64 {
    (elapsed.as_nanos().saturating_add(500) / 1000).min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_time_is_milliseconds_to_the_nearest_microsecond() {
        let cases = [
            (Duration::ZERO, "0.000ms"),
            (Duration::from_nanos(499), "0.000ms"),
            (Duration::from_nanos(500), "0.001ms"),
            (Duration::from_micros(1362), "1.362ms"),
            (Duration::from_micros(1_000_050), "1000.050ms"),
            (Duration::from_nanos(9_999_999), "10.000ms"),
        ];
        for (elapsed, want) in cases {
            assert_eq!(response_time(elapsed), want, "{elapsed:?}");
        }
        let longest = response_time(Duration::MAX);
        assert!(longest.to_str().unwrap().ends_with("ms"), "{longest:?}");
    }
}
