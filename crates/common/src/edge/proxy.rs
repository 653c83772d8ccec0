//! Forwarding one request to a worker.
//!
//! Retry rules: a request that never reached a worker (connect refused, pooled connection already
//! closed) is retried once on another worker whatever its method; one that reached a worker that
//! then died before answering is retried only when it is idempotent and had no body, because
//! only then can sending it twice do no harm. Retries draw on a retry budget (tower's `TpsBudget`), so a cluster in
//! trouble is not hit with twice its load. A response that never starts within
//! `UPSTREAM_TIMEOUT` is a 504 and is not retried: the worker may still be doing the work.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, SET_COOKIE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, request};
use hyper::body::Incoming;

use super::pool::{self, Backend, Dispatched, NotSent, SendError};
use super::request_body::{RequestBody, RequestBodyError, Streamed};
use super::response_body::{EdgeBody, error_response};
use super::state::Edge;
use super::upstreams::NotReady;
use tower::retry::budget::Budget;

use crate::balance::{Placement, RequestInfo};
use crate::http::check::{self, Refusal, valid_request_id};
use crate::http::client::{Added, Lost};
use crate::http::deadline::Stall;
use crate::http::deadline::{Deadlines, Watch};
use crate::http::headers::{
    X_FORWARDED_FOR, X_REQUEST_ID, X_WORKER_ID, is_upgrade, mint_request_id, strip_hop_by_hop,
    write_forwarded_for,
};
use crate::http::recycle::RequestHead;

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

/// The edge's answer to a request that [`check::request`](crate::http::check::request) refuses:
/// its JSON error, closing the connection (the bytes after a bad head cannot be trusted).
pub(crate) fn refused(refusal: Refusal) -> Response<EdgeBody> {
    let mut resp = error_response(refusal.status, refusal.code, refusal.message);
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The worker for `req` among those ready now, in version pool `pool` if one was chosen.
fn choose(
    edge: &Edge,
    req: &request::Parts,
    client: SocketAddr,
    pool: Option<usize>,
) -> Option<Arc<Backend>> {
    let info = request_info(req, client);
    edge.upstreams
        .with_ready(|ready| ready.select_in(pool, &*edge.selector, &info))
}

/// The version pool of `req`, when the cluster splits traffic between pools.
fn place(edge: &Edge, req: &request::Parts, client: SocketAddr) -> Option<Placement> {
    edge.split
        .as_ref()
        .map(|split| split.place(&request_info(req, client)))
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
    let (mut parts, body) = req.into_parts();
    let body = match read_body(edge, &mut parts, body).await {
        Ok(body) => body,
        Err(refusal) => return refused(refusal),
    };
    forward_parts(edge, RequestHead(parts), body, peer).await
}

/// A request body up to `BODY_BUFFER`, read whole before any worker connection is taken for it,
/// as nginx does (`proxy_request_buffering on`): a client that sends its body slowly then holds
/// only its own connection, never a pooled one. A larger body streams after the part read, cut if
/// it stalls. Either way a body that sends nothing for `BODY_TIMEOUT` gets 408.
async fn read_body(
    edge: &Edge,
    parts: &mut request::Parts,
    mut body: Incoming,
) -> Result<RequestBody, Refusal> {
    use http_body::Body as _;
    use http_body_util::BodyExt as _;
    let limits = &edge.limits;
    if body.is_end_stream() {
        return Ok(RequestBody::Empty);
    }
    let streamed = |prefix: Option<Bytes>, body: Incoming, read: u64| {
        let body = Stall::new(body, limits.body_timeout);
        let remaining = limits.max_body_size.saturating_sub(read);
        RequestBody::Streamed(Streamed::new(prefix, body, remaining))
    };
    // Known to be larger than the buffer (Content-Length): stream it from the start.
    if body.size_hint().lower() > limits.body_buffer {
        return Ok(streamed(None, body, 0));
    }
    let mut buf = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(limits.body_timeout, body.frame()).await {
            Err(_) => return Err(check::BODY_STALLED),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(check::BAD_BODY),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        buf.extend_from_slice(&data);
        if buf.len() as u64 > limits.max_body_size {
            return Err(check::BODY_TOO_LARGE);
        }
        if buf.len() as u64 > limits.body_buffer {
            // Chunked, and larger than the buffer after all: what was read goes first.
            let read = buf.len() as u64;
            return Ok(streamed(Some(buf.freeze()), body, read));
        }
    }
    // Whole: sent with its length (RFC 9112 §6.2), whatever framing the client used.
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(buf.len()));
    Ok(RequestBody::Full(Some(buf.freeze())))
}

/// Forwards a request whose body is already capped (see [`forward`]).
/// Its header map goes back to the thread's cache when the request is done with (see
/// `http::recycle`).
///
/// An `async` block rather than an `async fn`, which would hold `parts` and `body` twice (as its
/// arguments and as the locals they move into): this state is copied into the heap on every
/// request (see `http::recycle`).
#[allow(clippy::manual_async_fn)]
pub(crate) fn forward_parts<'a>(
    edge: &'a Edge,
    mut parts: RequestHead,
    mut body: RequestBody,
    peer: &'a Peer,
) -> impl Future<Output = Response<EdgeBody>> + Send + 'a {
    async move { forward_head(edge, &mut parts, &mut body, peer).await }
}

async fn forward_head(
    edge: &Edge,
    parts: &mut request::Parts,
    body: &mut RequestBody,
    peer: &Peer,
) -> Response<EdgeBody> {
    let client = peer.addr;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(authority) = parts.uri.authority() {
        // RFC 9112 §3.2.2: for an absolute-form target the authority is the host, and a
        // received Host is replaced by it. The worker gets origin-form and this Host.
        let host = match authority.port() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_string(),
        };
        if let Ok(host) = HeaderValue::try_from(host) {
            parts.headers.insert(HOST, host);
        }
    } else if parts.version != Version::HTTP_11 && !parts.headers.contains_key(HOST) {
        // An HTTP/1.0 client may leave Host out (RFC 9112 §3.2); the worker gets HTTP/1.1,
        // where it is required, and an empty Host is what a target without authority has.
        parts.headers.insert(HOST, HeaderValue::from_static(""));
    }
    // A client's request id is passed on and reflected only when it is one short token of safe
    // characters: else a 10 KB or header-breaking id would reach every log and response.
    let client_id = {
        let mut ids = parts.headers.get_all(&X_REQUEST_ID).iter();
        match (ids.next(), ids.next()) {
            (Some(id), None) if valid_request_id(id.as_bytes()) => Some(id.clone()),
            (None, _) => None,
            _ => {
                parts.headers.remove(&X_REQUEST_ID);
                None
            }
        }
    };
    let (request_id, generated) = match client_id {
        Some(id) => (id, false),
        None => (mint_request_id(), true),
    };
    let added = Added {
        client_ip: peer.ip.as_bytes(),
        request_id: generated.then_some(request_id.as_bytes()),
    };
    // A bodiless idempotent request can be sent again if its worker dies before answering: an
    // idempotent method means two deliveries have the effect of one (RFC 9110 §9.2.2), and with no
    // body there is nothing half-consumed to send twice. A POST that reached a worker is never
    // resent: the worker may have acted on it before it died.
    let resendable = is_idempotent(&parts.method) && http_body::Body::is_end_stream(body);
    // Every request earns a fraction of a retry (tower's TpsBudget: 20% of the last 10 s of
    // traffic, plus a small floor). When every worker is failing, retries stop at that share
    // instead of doubling the load on a cluster already in trouble.
    edge.retry.deposit();

    // The pool first (by the split, per user), then a worker inside it (by the selector).
    let mut placement = place(edge, parts, client);
    let pool = placement.as_ref().map(|p| p.pool);
    let mut backend = match choose(edge, parts, client, pool) {
        Some(b) => b,
        None => match wait_pick(edge, parts, client, &[], pool, edge.limits.queue_timeout).await {
            Ok(b) => b,
            Err(why) => return with_id(unavailable(why), request_id),
        },
    };
    // The processes that failed this request so far. A request that never reached a worker may go
    // on to another (sending it did no harm); a resendable one is resent once after its worker
    // died under it, and again only if the next one was killed from outside: a "query of death"
    // kills at most two workers and gets a 502, it does not take the whole cluster down.
    let mut failed: Vec<u32> = Vec::new();
    let mut reached = 0;
    let mut lane = None;
    loop {
        let failed_pid = backend.pid();
        match attempt(edge, backend, parts, added, body, &peer.watch).await {
            Attempt::Done(mut resp) => {
                if let Some(cookie) = placement.as_mut().and_then(|p| p.set_cookie.take()) {
                    resp.headers_mut().append(SET_COOKIE, cookie);
                }
                return with_id(resp, request_id);
            }
            Attempt::NotSent(why) => {
                tracing::debug!(worker_pid = failed_pid, %why, "request not sent; retrying elsewhere");
            }
            Attempt::Lost(why) if resendable && reached == 0 => {
                // Named at warn: if this request is what killed the worker, the log says which.
                tracing::warn!(
                    worker_pid = failed_pid,
                    request_id = request_id.to_str().unwrap_or("-"),
                    %why,
                    "worker failed before answering; resending"
                );
                reached += 1;
                *body = RequestBody::Empty;
            }
            // A second worker died under it: if a signal from outside killed that one (both
            // were killed at once, say), the request is not to blame and may go once more.
            Attempt::Lost(why)
                if resendable
                    && edge
                        .upstreams
                        .killed_from_outside(failed_pid, KILLED_LOOKUP)
                        .await =>
            {
                tracing::debug!(worker_pid = failed_pid, %why, "worker was killed under the request; resending");
            }
            Attempt::Lost(why) => {
                tracing::warn!(
                    worker_pid = failed_pid,
                    request_id = request_id.to_str().unwrap_or("-"),
                    %why,
                    "worker failed before answering; not resending"
                );
                let message = if reached > 0 {
                    format!("two workers failed to answer: {why}")
                } else {
                    format!("the worker failed before answering: {why}")
                };
                return with_id(
                    error_response(StatusCode::BAD_GATEWAY, "bad_gateway", &message),
                    request_id,
                );
            }
        }
        failed.push(failed_pid);
        if failed.len() >= MAX_TRIES {
            return with_id(
                error_response(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "every worker tried failed to take the request",
                ),
                request_id,
            );
        }
        if !edge.retry.withdraw() {
            return with_id(
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_worker_available",
                    "the chosen worker failed and the retry budget is spent",
                ),
                request_id,
            );
        }
        if reached > 0 && lane.is_none() {
            // Held until this request is answered or given up (see `Upstreams::suspect_lane`).
            lane = edge.upstreams.suspect_lane(SUSPECT_LANE_WAIT).await;
        }
        backend = match next_worker(edge, parts, client, &failed, pool).await {
            Ok(b) => b,
            Err(why) => return with_id(unavailable(why), request_id),
        };
    }
}

/// The worker a retry goes to: not one that failed this request, and not one that lost another
/// request and has answered none since, while any other worker is Ready or comes within
/// [`LOSING_WAIT`].
///
/// Why the second rule: a worker that crashed hangs up its connections before it has exited and
/// been taken out of the ready set, and under load that can take milliseconds. A query of death
/// resent in that window kills the next worker; the bystanders it had in flight, resent in turn,
/// would otherwise go back to the first, still listed, and fail a second time with it.
async fn next_worker(
    edge: &Edge,
    parts: &request::Parts,
    client: SocketAddr,
    failed: &[u32],
    pool: Option<usize>,
) -> Result<Arc<Backend>, NotReady> {
    let shunned: Vec<u32> = edge.upstreams.with_ready(|ready| {
        let losing = ready.losing().filter(|pid| !failed.contains(pid));
        failed.iter().copied().chain(losing).collect()
    });
    if shunned.len() > failed.len() {
        if let Ok(b) = wait_pick(edge, parts, client, &shunned, pool, LOSING_WAIT).await {
            return Ok(b);
        }
        // None came: the worker that lost a request may just have closed one connection and be
        // well, so it is tried after all.
    }
    let info = request_info(parts, client);
    let next = edge
        .upstreams
        .with_ready(|ready| ready.select_in_excluding(pool, &*edge.selector, &info, failed));
    match next {
        Some(b) => Ok(b),
        // Only failed workers left: wait for another one, or for a replacement, to be Ready.
        None => wait_pick(edge, parts, client, failed, pool, edge.limits.queue_timeout).await,
    }
}

/// How long a retry waits for a worker other than one that lost a request: a crashed worker's
/// replacement is Ready in well under this, and a worker that is well loses this much once.
const LOSING_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The most workers one request is tried on. Only the first worker's death under it is forgiven
/// outright; the others tried either never got it or were killed from outside.
const MAX_TRIES: usize = 4;

/// How long a request whose second worker died waits to learn how that worker ended (the
/// supervisor reaps it within milliseconds).
const KILLED_LOOKUP: std::time::Duration = std::time::Duration::from_millis(500);

/// The longest a resent request waits for the suspects' lane: a query of death kills its worker
/// within milliseconds, so a suspect still unanswered after this is most likely just slow.
const SUSPECT_LANE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

fn request_info(req: &request::Parts, client: SocketAddr) -> RequestInfo<'_> {
    RequestInfo {
        method: &req.method,
        uri: &req.uri,
        headers: &req.headers,
        client,
    }
}

/// No worker could take the request now: waits at the master, up to `timeout` (`QUEUE_TIMEOUT`
/// unless a retry is choosing), for one that is not in `exclude` to be Ready (see
/// [`Upstreams::wait_for`](super::Upstreams::wait_for)).
async fn wait_pick(
    edge: &Edge,
    req: &request::Parts,
    client: SocketAddr,
    exclude: &[u32],
    pool: Option<usize>,
    timeout: std::time::Duration,
) -> Result<Arc<Backend>, NotReady> {
    let info = request_info(req, client);
    edge.upstreams
        .wait_for(timeout, edge.limits.queue_max, |ready| {
            ready.select_in_excluding(pool, &*edge.selector, &info, exclude)
        })
        .await
}

/// The 503 for a request no worker could take.
fn unavailable(why: NotReady) -> Response<EdgeBody> {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_worker_available",
        why.message(),
    )
}

fn with_id(mut resp: Response<EdgeBody>, id: HeaderValue) -> Response<EdgeBody> {
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    resp
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
    NotSent(NotSent),
    Lost(Lost),
}

async fn attempt(
    edge: &Edge,
    backend: Arc<Backend>,
    req: &request::Parts,
    added: Added<'_>,
    body: &mut RequestBody,
    watch: &Watch,
) -> Attempt {
    // The request's one reference to its backend, kept by its in-flight record: each clone of an
    // `Arc` every edge thread shares is a write to a cache line the other cores read.
    let slot = backend.slot();
    let dispatched = Dispatched::new(backend);
    let limits = &edge.limits;
    let sent = pool::send(dispatched, req, added, body, watch, limits.max_header_size).await;
    match sent {
        Ok((mut head, mut lease)) => {
            lease.set_status(head.parts.status.as_u16());
            let worker_id = lease.backend().worker_id_header().clone();
            head.parts.headers.insert(X_WORKER_ID.clone(), worker_id);
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
        Err(SendError::Body(RequestBodyError::Stalled)) => {
            Attempt::Done(refused(check::BODY_STALLED))
        }
        Err(SendError::Body(RequestBodyError::TooLarge)) => Attempt::Done(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than MAX_BODY_SIZE",
        )),
        Err(SendError::Body(e @ RequestBodyError::Client(_))) => Attempt::Done(error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("reading the request body failed: {e}"),
        )),
        Err(SendError::TimedOut) => Attempt::Done(error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            &format!(
                "worker {} did not answer within UPSTREAM_TIMEOUT ({} ms)",
                slot,
                limits.upstream_timeout.as_millis()
            ),
        )),
    }
}

/// An HTTP Upgrade (WebSocket) the master keeps (see `edge::upgrade` for the ones it hands over
/// instead): the handshake goes to one worker over a dedicated connection, and
/// once both sides switched protocols the two raw sockets are spliced ([`super::tunnel`]) until
/// both directions ended or one failed. The socket stays on that worker for its whole life. A
/// worker that answers anything but 101 gives the client that answer, and the client's connection
/// goes on as after any response (RFC 9110 §7.8: the upgrade did not happen).
async fn tunnel(edge: &Edge, mut req: Request<Incoming>, peer: &Peer) -> Response<EdgeBody> {
    let client = peer.addr;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    append_forwarded_for(&mut parts.headers, peer);
    let pool = place(edge, &parts, client).map(|p| p.pool);
    let backend = match choose(edge, &parts, client, pool) {
        Some(b) => b,
        None => match wait_pick(edge, &parts, client, &[], pool, edge.limits.queue_timeout).await {
            Ok(b) => b,
            Err(why) => return unavailable(why),
        },
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
    let mut dispatched = Dispatched::new(backend.clone());
    let mut resp =
        match tokio::time::timeout(edge.limits.upstream_timeout, sender.send_request(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                dispatched.fail();
                return error_response(StatusCode::BAD_GATEWAY, "bad_gateway", &e.to_string());
            }
            Err(_) => {
                dispatched.fail();
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway_timeout",
                    "the worker did not answer the upgrade in time",
                );
            }
        };
    dispatched.set_status(resp.status().as_u16());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _dispatched = dispatched;
            let (Ok(down), Ok(up)) = tokio::join!(client_upgrade, upstream_upgrade) else {
                tracing::debug!("upgrade did not complete on both sides");
                return;
            };
            if let Err(e) = super::tunnel::splice_upgraded(down, up).await {
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
