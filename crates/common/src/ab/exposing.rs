//! [`Exposing`]: counts A/B exposures where the master sees every request, in front of any
//! selector.
//!
//! The master places each request with a [`Selector`]; wrapping the lesson's selector makes
//! that the moment an exposure is counted, for requests under the experiment's path. The wrapped
//! selector still picks the worker; the worker renders the variant itself from the same pure
//! [`AbTest::assign`](super::AbTest::assign), so nothing has to travel with the request.
//!
//! A request the edge retries on another worker is selected twice and counts two requests; the
//! exposure, per user, is counted once either way.

use std::sync::Arc;

use http::HeaderMap;

use super::experiment::AbTest;
use crate::balance::{RequestInfo, Selector, Worker};
use crate::session::{COOKIE_NAME, cookie_value};

/// The header a client names its user in, for A/B tests and flags alike.
pub const USER_HEADER: &str = "x-user-id";

/// Who `headers` say the user is: the session cookie, else `X-User-Id` (the order the canary's
/// split uses). `None` (not in the experiment) when neither is there or the value is empty or
/// longer than 256 bytes. The client's IP is no user: many users share one behind a NAT, so it
/// would put them in one group and count them as one.
pub fn user_of(headers: &HeaderMap) -> Option<&str> {
    let named = cookie_value(headers, COOKIE_NAME)
        .or_else(|| headers.get(USER_HEADER).and_then(|v| v.to_str().ok()))?;
    (!named.is_empty() && named.len() <= crate::flags::flag::MAX_USER_LEN).then_some(named)
}

/// A selector that counts an exposure for each request under `path` from a known user, then lets
/// `inner` choose.
pub struct Exposing<S> {
    test: Arc<AbTest>,
    path: String,
    inner: S,
}

impl<S: Selector> Exposing<S> {
    /// Counts requests whose path starts with `path` (e.g. `/ab/`) in `test`.
    pub fn new(test: Arc<AbTest>, path: impl Into<String>, inner: S) -> Self {
        Self {
            test,
            path: path.into(),
            inner,
        }
    }
}

impl<S: Selector> Selector for Exposing<S> {
    fn select(&self, req: &RequestInfo<'_>, ready: &[Worker]) -> Option<usize> {
        if req.uri.path().starts_with(&self.path)
            && let Some(user) = user_of(req.headers)
        {
            self.test.expose(user);
        }
        self.inner.select(req, ready)
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_names_the_user_before_the_header_and_bad_values_name_nobody() {
        let mut h = HeaderMap::new();
        assert_eq!(user_of(&h), None);
        h.insert(USER_HEADER, "alice".parse().expect("a header value"));
        assert_eq!(user_of(&h), Some("alice"));
        h.insert(
            http::header::COOKIE,
            "sessionId=s1; x=y".parse().expect("a header value"),
        );
        assert_eq!(user_of(&h), Some("s1"));
        let mut h = HeaderMap::new();
        h.insert(USER_HEADER, "".parse().expect("a header value"));
        assert_eq!(user_of(&h), None, "empty");
        h.insert(
            USER_HEADER,
            "u".repeat(257).parse().expect("a header value"),
        );
        assert_eq!(user_of(&h), None, "too long");
    }
}
