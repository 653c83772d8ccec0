//! Forwarding one request to a worker.
//!
//! Retry rules: a request that never reached a worker (connect refused, pooled connection already
//! closed) is retried once on another worker whatever its method; one that reached a worker that
//! then died before answering is retried only when it is idempotent and had no body, because
//! only then can sending it twice do no harm. Retries draw on a [`RetryBudget`], so a cluster in
//! trouble is not hit with twice its load. A response that never starts within
//! `UPSTREAM_TIMEOUT` is a 504 and is not retried: the worker may still be doing the work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, RETRY_AFTER, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, request};
use hyper::body::Incoming;

use super::Edge;
use super::body::{BodyTooLarge, EdgeBody, RequestBody};
use super::pool::{self, Backend, InFlight, SendError};
use super::upstream::Added;
use crate::balance::RequestInfo;
use crate::watchdog::{Deadlines, Watch};

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Set on every proxied response: which slot answered.
pub static X_WORKER_ID: HeaderName = HeaderName::from_static("x-worker-id");

/// Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and must not be forwarded.
pub(crate) static HOP_BY_HOP: [HeaderName; 6] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("te"),
    HeaderName::from_static("trailer"),
    HeaderName::from_static("upgrade"),
    CONNECTION,
];

/// Limits retries to a share of traffic: every request deposits a fifth of a retry, a retry
/// withdraws one; the balance is capped so a quiet hour cannot fund a retry storm.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    /// In tenths of a retry.
    balance: AtomicI64,
}

const RETRY_COST: i64 = 10;
const DEPOSIT: i64 = 2;
const MAX_BALANCE: i64 = 100 * RETRY_COST;

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            balance: AtomicI64::new(MAX_BALANCE),
        }
    }
}

impl RetryBudget {
    fn deposit(&self) {
        // A racy cap is fine: it only bounds how much is saved up.
        if self.balance.load(Ordering::Relaxed) < MAX_BALANCE {
            self.balance.fetch_add(DEPOSIT, Ordering::Relaxed);
        }
    }

    fn withdraw(&self) -> bool {
        if self.balance.fetch_sub(RETRY_COST, Ordering::Relaxed) >= RETRY_COST {
            true
        } else {
            self.balance.fetch_add(RETRY_COST, Ordering::Relaxed);
            false
        }
    }
}

fn request_id() -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // Unique per master run without a syscall per request: a random prefix and a counter.
    let prefix = *PREFIX.get_or_init(rand::random::<u32>);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // `prefix-counter` in fixed-width hex, written by hand: `format!` with padding costs a dozen
    // formatter calls, on every request.
    let mut buf = [b'-'; 25];
    hex(u64::from(prefix), &mut buf[..8]);
    hex(n, &mut buf[9..]);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Writes the low `out.len()` hex digits of `n` into `out`, most significant first.
fn hex(mut n: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// The TCP peer of a client connection, with its address already rendered for `X-Forwarded-For`
/// (once per connection rather than once per request).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    ip: HeaderValue,
    /// What the connection is waiting for, for its deadlines.
    pub watch: Arc<Watch>,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr, deadlines: &Deadlines) -> Self {
        let ip = HeaderValue::try_from(addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            addr,
            ip,
            watch: Arc::new(Watch::new(deadlines)),
        }
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether `name` is one of [`HOP_BY_HOP`]: a match on the name's text, cheaper than comparing
/// `HeaderName`s one by one when some are custom names.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "keep-alive" | "proxy-connection" | "te" | "trailer" | "upgrade" | "connection"
    )
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass comparing the few names present (a cheap equality
    // for standard headers) beats a hashed removal for each of the six.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(conn) = headers.get(CONNECTION).cloned() {
        // Headers named in Connection are hop-by-hop too.
        if let Ok(list) = conn.to_str() {
            for name in list.split(',') {
                headers.remove(name.trim());
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A JSON error response made by the edge.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<EdgeBody> {
    let body = serde_json::json!({ "error": code, "message": message, "status": status.as_u16() });
    let mut resp = Response::new(EdgeBody::Full(Some(Bytes::from(body.to_string()))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn pick(
    edge: &Edge,
    req: &request::Parts,
    client: SocketAddr,
    exclude: Option<u32>,
) -> Option<Arc<Backend>> {
    let ready = edge.upstreams.snapshot();
    let info = RequestInfo {
        method: &req.method,
        uri: &req.uri,
        headers: &req.headers,
        client,
    };
    match exclude {
        None if !ready.is_empty() => {
            let i = edge.selector.select(&info, &ready)?;
            ready.get(i).cloned()
        }
        None => None,
        Some(pid) => {
            let rest: Vec<_> = ready.iter().filter(|b| b.pid() != pid).cloned().collect();
            if rest.is_empty() {
                return None;
            }
            let i = edge.selector.select(&info, &rest)?;
            rest.get(i).cloned()
        }
    }
}

/// Forwards `req` to a worker and returns its response, or the edge's error response.
pub(crate) async fn forward(
    edge: &Edge,
    req: Request<Incoming>,
    peer: &Peer,
) -> Response<EdgeBody> {
    if let Some(len) = req.headers().get(CONTENT_LENGTH)
        && len
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n > edge.limits.max_body_size)
    {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than MAX_BODY_SIZE",
        );
    }
    if is_upgrade(req.headers()) {
        return tunnel(edge, req, peer).await;
    }
    let (parts, body) = req.into_parts();
    let body = RequestBody::Client {
        body,
        remaining: edge.limits.max_body_size,
    };
    forward_parts(edge, parts, body, peer).await
}

/// Forwards a request whose body is already capped (see [`forward`]).
pub(crate) async fn forward_parts(
    edge: &Edge,
    mut parts: request::Parts,
    mut body: RequestBody,
    peer: &Peer,
) -> Response<EdgeBody> {
    let client = peer.addr;
    strip_hop_by_hop(&mut parts.headers);
    let (request_id, generated) = match parts.headers.get(&X_REQUEST_ID) {
        Some(id) => (id.clone(), false),
        None => (request_id(), true),
    };
    let added = Added {
        client_ip: peer.ip.as_bytes(),
        request_id: generated.then_some(request_id.as_bytes()),
    };
    // A bodiless idempotent request can be sent again if its worker dies before answering.
    let resendable = is_idempotent(&parts.method) && http_body::Body::is_end_stream(&body);
    edge.retry.deposit();

    let Some(first) = pick(edge, &parts, client, None) else {
        return with_id(
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_worker_available",
                "no worker is ready to take this request",
            ),
            request_id,
        );
    };
    let failed_pid = first.pid();
    match attempt(edge, first, &parts, added, &mut body, &peer.watch).await {
        Attempt::Done(resp) => return with_id(resp, request_id),
        Attempt::NotSent(why) => {
            tracing::debug!(worker_pid = failed_pid, %why, "request not sent; retrying elsewhere");
        }
        Attempt::Lost(why) if resendable => {
            tracing::debug!(worker_pid = failed_pid, %why, "worker failed before answering; resending");
            body = RequestBody::Empty;
        }
        Attempt::Lost(why) => {
            return with_id(
                error_response(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    &format!("the worker failed before answering: {why}"),
                ),
                request_id,
            );
        }
    }
    let retry_to = if edge.retry.withdraw() {
        pick(edge, &parts, client, Some(failed_pid))
    } else {
        None
    };
    let Some(second) = retry_to else {
        return with_id(
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_worker_available",
                "the chosen worker failed and no other worker could take the request",
            ),
            request_id,
        );
    };
    let resp = match attempt(edge, second, &parts, added, &mut body, &peer.watch).await {
        Attempt::Done(resp) => resp,
        Attempt::NotSent(why) | Attempt::Lost(why) => error_response(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            &format!("two workers failed to answer: {why}"),
        ),
    };
    with_id(resp, request_id)
}

fn with_id(mut resp: Response<EdgeBody>, id: HeaderValue) -> Response<EdgeBody> {
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    resp
}

/// Writes the `X-Forwarded-For` value a worker should see into `out`: every hop the request already
/// listed, then the client that connected to us.
pub(crate) fn write_forwarded_for(out: &mut Vec<u8>, headers: &HeaderMap, client_ip: &[u8]) {
    for prior in headers.get_all(&X_FORWARDED_FOR) {
        out.extend_from_slice(prior.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip);
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: &Peer) {
    let mut value = Vec::new();
    write_forwarded_for(&mut value, headers, peer.ip.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

// Only ever a return value, moved once: boxing the response would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Done(Response<EdgeBody>),
    NotSent(String),
    Lost(String),
}

async fn attempt(
    edge: &Edge,
    backend: Arc<Backend>,
    req: &request::Parts,
    added: Added<'_>,
    body: &mut RequestBody,
    watch: &Watch,
) -> Attempt {
    let in_flight = InFlight::new(backend.clone());
    let limits = &edge.limits;
    let sent = pool::send(in_flight, req, added, body, watch, limits.max_header_size).await;
    match sent {
        Ok((mut head, mut lease)) => {
            lease.set_status(head.parts.status.as_u16());
            head.parts
                .headers
                .insert(X_WORKER_ID.clone(), backend.worker_id_header().clone());
            if head.request_cut_short {
                // The rest of the client's body will not be read: say so, so the client opens a
                // new connection for its next request instead of finding this one closed.
                head.parts
                    .headers
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Attempt::Done(Response::from_parts(
                head.parts,
                EdgeBody::upstream(head.body, head.writer, lease),
            ))
        }
        Err(SendError::NotSent(why)) => Attempt::NotSent(why),
        Err(SendError::Sent(why)) => Attempt::Lost(why),
        Err(SendError::Body(e)) if e.is::<BodyTooLarge>() => Attempt::Done(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than MAX_BODY_SIZE",
        )),
        Err(SendError::Body(e)) => Attempt::Done(error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("reading the request body failed: {e}"),
        )),
        Err(SendError::TimedOut) => Attempt::Done(error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            &format!(
                "worker {} did not answer within UPSTREAM_TIMEOUT ({} ms)",
                backend.slot(),
                limits.upstream_timeout.as_millis()
            ),
        )),
    }
}

/// An HTTP Upgrade (WebSocket): the handshake goes to one worker over a dedicated connection, and
/// once both sides switched protocols the two sockets are spliced until either closes. The socket
/// stays on that worker for its whole life.
async fn tunnel(edge: &Edge, mut req: Request<Incoming>, peer: &Peer) -> Response<EdgeBody> {
    let client = peer.addr;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    append_forwarded_for(&mut parts.headers, peer);
    let Some(backend) = pick(edge, &parts, client, None) else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_worker_available",
            "no worker is ready to take this connection",
        );
    };
    let mut sender = match backend.connect_for_upgrade().await {
        Ok(s) => s,
        Err(e) => {
            return error_response(StatusCode::BAD_GATEWAY, "bad_gateway", &e.to_string());
        }
    };
    let req = Request::from_parts(
        parts,
        RequestBody::Client {
            body,
            remaining: edge.limits.max_body_size,
        },
    );
    let mut in_flight = InFlight::new(backend.clone());
    let mut resp =
        match tokio::time::timeout(edge.limits.upstream_timeout, sender.send_request(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                in_flight.fail();
                return error_response(StatusCode::BAD_GATEWAY, "bad_gateway", &e.to_string());
            }
            Err(_) => {
                in_flight.fail();
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway_timeout",
                    "the worker did not answer the upgrade in time",
                );
            }
        };
    in_flight.set_status(resp.status().as_u16());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let (Ok(down), Ok(up)) = tokio::join!(client_upgrade, upstream_upgrade) else {
                tracing::debug!("upgrade did not complete on both sides");
                return;
            };
            let mut down = hyper_util::rt::TokioIo::new(down);
            let mut up = hyper_util::rt::TokioIo::new(up);
            if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        });
    }
    let (mut parts, body) = resp.into_parts();
    parts
        .headers
        .insert(X_WORKER_ID.clone(), backend.worker_id_header().clone());
    Response::from_parts(parts, EdgeBody::Tunnel(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_a_fixed_width_prefix_and_counter() {
        let a = request_id();
        let b = request_id();
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_eq!(a.len(), 25, "{a}");
        assert_eq!(a.as_bytes()[8], b'-', "{a}");
        assert_eq!(a[..8], b[..8], "one prefix per master run");
        let n = |id: &str| u64::from_str_radix(&id[9..], 16).unwrap();
        assert_eq!(n(b), n(a) + 1, "{a} then {b}");
    }

    #[test]
    fn hex_writes_the_low_digits_most_significant_first() {
        let mut out = [0u8; 4];
        hex(0xabc, &mut out);
        assert_eq!(&out, b"0abc");
    }

    #[test]
    fn is_hop_by_hop_names_exactly_the_hop_by_hop_headers() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            "host",
            "content-length",
            "transfer-encoding",
            "x-upgrade",
            "tea",
        ] {
            let name = HeaderName::from_static(name);
            assert!(!is_hop_by_hop(&name), "{name}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("x-trace, keep-alive"));
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }
}
