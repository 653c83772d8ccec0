//! [`ResponseFuture`]: the inner service's answer with the `RateLimit-*` headers added, or the
//! 429 made without it.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use pin_project_lite::pin_project;

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The `RateLimit-*` values of one answer. Seconds are rounded up: a client told 0 would retry
/// at once and be refused again.
#[derive(Debug, Clone)]
pub(super) struct Headers {
    limit: HeaderValue,
    remaining: u32,
    reset: u64,
}

impl Headers {
    pub(super) fn new(limit: HeaderValue, remaining: u32, reset: Duration) -> Self {
        Self {
            limit,
            remaining,
            reset: ceil_secs(reset),
        }
    }

    fn write<R>(self, resp: &mut Response<R>) {
        let h = resp.headers_mut();
        h.insert(LIMIT.clone(), self.limit);
        h.insert(REMAINING.clone(), decimal(self.remaining.into()));
        h.insert(RESET.clone(), decimal(self.reset));
    }
}

/// `n` as a header value. Below 1,000 (a budget's remaining calls and its seconds to reset are
/// mostly that small) it is a slice of one static string, so no answer allocates for it; above,
/// one allocation, where `HeaderValue::from` an integer makes two (a buffer, then the shared
/// handle its freezing needs).
fn decimal(n: u64) -> HeaderValue {
    static SMALL: OnceLock<String> = OnceLock::new();
    let large = || {
        HeaderValue::from_bytes(itoa::Buffer::new().format(n).as_bytes())
            .unwrap_or_else(|_| HeaderValue::from(n))
    };
    let Ok(i) = usize::try_from(n) else {
        return large();
    };
    // "0" to "9", then "10" to "99", then "100" to "999", one after the other.
    let (at, len) = match i {
        0..=9 => (i, 1),
        10..=99 => (10 + (i - 10) * 2, 2),
        100..=999 => (190 + (i - 100) * 3, 3),
        _ => return large(),
    };
    let all = SMALL.get_or_init(|| (0..1000).map(|k: u32| k.to_string()).collect());
    HeaderValue::from_static(&all[at..at + len])
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pin_project! {
    /// The future of [`RateLimit`](super::RateLimit).
    #[project = Proj]
    pub enum ResponseFuture<F, R> {
        /// Let through: the inner future, and the headers to add to its answer.
        Passed { #[pin] inner: F, headers: Option<Headers> },
        /// Refused: the 429, taken once.
        Limited { response: Option<Response<R>> },
    }
}

impl<F, R> ResponseFuture<F, R> {
    pub(super) fn passed(inner: F, headers: Option<Headers>) -> Self {
        Self::Passed { inner, headers }
    }

    pub(super) fn limited(limit: HeaderValue, retry_after: Duration) -> Self
    where
        R: From<Bytes>,
    {
        let wait = ceil_secs(retry_after).max(1);
        let body = format!(
            "{{\"error\":\"rate_limited\",\"message\":\"too many requests; retry in {wait} s\",\"status\":429}}"
        );
        let mut resp = Response::new(R::from(Bytes::from(body)));
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // RFC 9110 §10.2.3: delay-seconds.
        resp.headers_mut().insert(RETRY_AFTER, decimal(wait));
        Headers::new(limit, 0, Duration::from_secs(wait)).write(&mut resp);
        Self::Limited {
            response: Some(resp),
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Passed { inner, headers } => {
                let mut resp = ready!(inner.poll(cx))?;
                if let Some(h) = headers.take() {
                    h.write(&mut resp);
                }
                Poll::Ready(Ok(resp))
            }
            Proj::Limited { response } => match response.take() {
                Some(resp) => Poll::Ready(Ok(resp)),
                None => panic!("ResponseFuture polled after completion"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decimal_header_is_the_numbers_digits() {
        for n in (0..=1100).chain([9_999, 65_535, 1_000_000, u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(decimal(n), n.to_string().as_str(), "{n}");
        }
    }
}
