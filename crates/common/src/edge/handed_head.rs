//! The head of a request whose connection the master hands to a worker (handoff dispatch's first
//! request, proxy dispatch's WebSocket upgrade), as far as the master needs it to route, and the
//! checks that keep a bad head from ever reaching a worker's own HTTP code.
//!
//! Its own module because both dispatch paths use it and neither should import the other.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

use crate::http::check;

/// The first request head of a connection, as far as the master needs it.
pub(super) struct PeekedHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// The head, if it is one to hand to a worker: `None` for one the master must answer itself
/// because it is invalid (the same checks as proxy mode's, [`check::request`]), so a bad head
/// never reaches a worker's own HTTP code.
pub(super) fn to_head(req: &httparse::Request<'_, '_>, max_head: usize) -> Option<PeekedHead> {
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    // A fragment (RFC 9112 §3.2) is refused by the master's own parser, not dropped by a worker's.
    let uri: Uri = req.path.filter(|p| !p.contains('#'))?.parse().ok()?;
    let version = match req.version? {
        1 => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        headers.append(name, value);
    }
    check::request(&method, &uri, version, &headers, max_head).ok()?;
    Some(PeekedHead {
        method,
        uri,
        headers,
    })
}
