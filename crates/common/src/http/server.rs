//! A lean HTTP/1.1 loop for *plain* requests, with hyper taking a connection over at its first
//! request that is not plain. The master's edge (proxy mode) and the workers serve with it.
//!
//! Why not hyper for every request: measured with callgrind over 20,000 proxied `GET /ping`, the
//! master ran 21,700 instructions per request, of which hyper's server side (its dispatcher,
//! buffered I/O, keep-alive bookkeeping and response encoder, beyond parsing the head) was about
//! 4,300, and that left the master's CPU per request level with nginx's instead of below it.
//! Most requests need none of that machinery: a plain request (HTTP/1.1, an origin-form target,
//! no body or one of at most [`Plain::max_body`] bytes announced by a single `Content-Length`,
//! no `Upgrade` or `Expect`, no `Connection` option but `close` or `keep-alive`) is read whole with
//! its head, so this loop parses the head with httparse (hyper's own parser), reads the body into
//! the connection's buffer, hands both to a [`Plain`] handler and writes the answer back itself.
//!
//! Why small bodies too: a 4 KiB JSON `POST` is what an API mostly gets, and handing its
//! connection to hyper cost the master and the worker hyper's whole server each, for the rest of
//! the connection's life (measured on the 4 KiB `POST` through the proxy: see BENCHMARKS.md). A
//! body that small arrives with its head, nearly always in the same read.
//!
//! The first request that is anything else (a larger body, `Transfer-Encoding`, an upgrade,
//! `Expect: 100-continue`, HTTP/1.0, a head httparse rejects or one that outgrows the head limit)
//! hands the connection, with the bytes already read, to hyper for the rest of its life. So
//! streamed bodies, `100 Continue`, upgrades and most error answers (400, 431) stay hyper's, and
//! what is written here is small: reading heads and short bodies, watching for a client that
//! hangs up, and framing responses (RFC 9112 §6: `Content-Length` when the size is known, else
//! chunked; none for HEAD, 204 and 304).
//!
//! A body read here follows RFC 9112's rules for its length (§6.1–§6.3): `Content-Length` with
//! `Transfer-Encoding` is a 400 (a smuggling attempt, §6.3 rule 3 and §11.2), as are differing
//! lengths and a value that is not a decimal number (§6.3 rule 5); identical repeated lengths
//! (RFC 9110 §8.6 allows them) are hyper's to judge. The body is handed on only once all of it is
//! in, so a worker never sees a request that its client did not finish, and a connection whose
//! body was cut short is closed, never read on (§9.3, §9.6). The head's deadline keeps running
//! while the body comes, and a body that sends nothing for [`Plain::body_timeout`] gets 408.

use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{
    CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HOST, HeaderName, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, request};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::buffers;
use super::check;
use super::deadline::{Graceful, Watch};
use super::head::{MAX_HEADERS, Spans, date, offset, write_chunk_size};
use super::recycle::{self, Recycled};
use crate::error::BoxError;

/// Bodies up to this size are copied behind the head and go out in one write.
const INLINE_BODY: usize = 16 * 1024;

/// The largest request body the plain loop reads itself (a `Content-Length` up to this); larger
/// ones go to hyper, streamed. 64 KiB is the edge's `BODY_BUFFER` default: the size below which
/// the edge reads a body whole before it picks a worker anyway, so reading it here holds no more
/// memory per connection than hyper's path did, and the worker, whose plain loop has the same
/// bound, takes every body the edge sends it whole without handing its pooled connection to hyper.
pub(crate) const PLAIN_BODY: usize = 64 * 1024;

/// Any byte stream a connection arrives on: a client's TCP socket, or a worker's Unix socket.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// hyper serving the rest of a connection.
pub(crate) trait HyperConn: Future<Output = hyper::Result<()>> + Graceful + Send {}

impl<T: Future<Output = hyper::Result<()>> + Graceful + Send> HyperConn for T {}

pub(crate) type Hyper = Pin<Box<dyn HyperConn>>;

/// What answers the plain requests of one connection, and hands it to hyper when one is not.
pub(crate) trait Plain: Send + 'static {
    type Body: Body<Data = Bytes, Error: Into<BoxError> + Send> + Send + Unpin;

    /// The connection's deadlines: busy while a request is answered, waiting for a head after.
    fn watch(&self) -> &Watch;

    /// Heads longer than this go to hyper, which refuses them (431).
    fn max_head(&self) -> usize;

    /// False when the connection serves one request only, then closes.
    fn keep_alive(&self) -> bool {
        true
    }

    /// Request bodies (`Content-Length`) up to this are read here; larger ones go to hyper.
    fn max_body(&self) -> usize {
        PLAIN_BODY
    }

    /// A request body that sends nothing for this long is refused with 408; `None` for none
    /// (the master's own connections to a worker, whose bodies are always whole).
    fn body_timeout(&self) -> Option<Duration> {
        None
    }

    /// Answers one plain request, with its whole body (empty if it had none).
    fn answer(
        &self,
        req: request::Parts,
        body: Bytes,
    ) -> impl Future<Output = Response<Self::Body>> + Send;

    /// hyper serving the rest of the connection, starting with the bytes in `io`.
    fn hand_over<I: Io>(self, io: Rewind<I>) -> Hyper;
}

/// One client connection: served here while its requests are plain, then by hyper.
pub(crate) struct PlainConn {
    state: State,
    /// Set by [`Graceful::graceful_shutdown`]; read between requests.
    closing: Arc<AtomicBool>,
}

enum State {
    /// Resolves when the connection is done with, or to hyper's connection when it takes over.
    Plain(Pin<Box<dyn Future<Output = Option<Hyper>> + Send>>),
    Hyper(Hyper),
}

impl PlainConn {
    /// Serves `io` with `plain` until it ends.
    pub(crate) fn new<P: Plain, I: Io>(plain: P, io: I) -> Self {
        let closing = Arc::new(AtomicBool::new(false));
        let plain = serve_plain(plain, io, closing.clone());
        Self {
            state: State::Plain(Box::pin(plain)),
            closing,
        }
    }
}

impl Future for PlainConn {
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Plain(plain) => match ready!(plain.as_mut().poll(cx)) {
                    None => return Poll::Ready(Ok(())),
                    Some(mut hyper) => {
                        if this.closing.load(Ordering::Relaxed) {
                            hyper.as_mut().graceful_shutdown();
                        }
                        this.state = State::Hyper(hyper);
                    }
                },
                State::Hyper(hyper) => return hyper.as_mut().poll(cx),
            }
        }
    }
}

impl Graceful for PlainConn {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.get_mut();
        // The plain loop sees the flag the next time it is polled, which the caller does next.
        this.closing.store(true, Ordering::Relaxed);
        if let State::Hyper(hyper) = &mut this.state {
            hyper.as_mut().graceful_shutdown();
        }
    }
}

/// Serves plain requests until the connection ends (`None`) or a request that is not plain
/// arrives (hyper's connection, holding every byte read so far).
async fn serve_plain<P: Plain, I: Io>(
    plain: P,
    mut io: I,
    closing: Arc<AtomicBool>,
) -> Option<Hyper> {
    let max_head = plain.max_head();
    let max_body = plain.max_body();
    let keep_alive = plain.keep_alive();
    // Both empty until there is something to hold (see `buffers`): a connection costs no buffer
    // while it waits for its first request or between requests.
    let mut read = BytesMut::new();
    let mut write = Vec::new();
    loop {
        let (req, client_close, body_len) = loop {
            if !read.is_empty() {
                match parse(&mut read, max_head, max_body) {
                    Parsed::Plain(req, close, body) => break (req, close, body),
                    Parsed::Partial => {}
                    Parsed::Refused(refusal) => {
                        // The bytes after a refused head cannot be trusted to start a request:
                        // answer and close (RFC 9112 §9.6).
                        refusal.encode(buffers::write_buffer(&mut write));
                        let _ = io.write_all(&write).await;
                        let _ = io.shutdown().await;
                        return None;
                    }
                    Parsed::Other(head) => {
                        // From here on the connection is hyper's for good: it gets every byte
                        // read so far, the head first, exactly as the client sent them, so a
                        // request hyper refuses (400, 431) is refused on what the client sent,
                        // and no byte is read twice or lost between the two servers. Back to the
                        // plain loop is never: hyper may be mid-body or mid-upgrade.
                        let io = Rewind {
                            unread: [head, read.freeze()],
                            io,
                        };
                        return Some(plain.hand_over(io));
                    }
                }
            }
            let n = std::future::poll_fn(|cx| {
                // Between requests, a shutdown closes the connection; in the middle of a head, the
                // request is read and answered first.
                if read.is_empty() && closing.load(Ordering::Relaxed) {
                    return Poll::Ready(Ok(0));
                }
                buffers::poll_read(&mut io, cx, &mut read)
            })
            .await;
            match n {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "reading a client's request failed");
                    return None;
                }
            }
        };
        let body = if body_len == 0 {
            Bytes::new()
        } else {
            match read_body(
                &mut io,
                &mut read,
                body_len,
                plain.body_timeout(),
                plain.watch(),
            )
            .await
            {
                Ok(body) => body,
                Err(BodyCut::Closed) => return None,
                Err(BodyCut::Stalled) => {
                    // RFC 9112 §9.6: the rest of this body may still come, and would be read as
                    // the next request: answer, and close.
                    check::BODY_STALLED.encode(buffers::write_buffer(&mut write));
                    let _ = io.write_all(&write).await;
                    let _ = io.shutdown().await;
                    return None;
                }
            }
        };
        plain.watch().busy();
        let is_head = req.method == Method::HEAD;
        // On the heap for the request's life only: held inline, the answer (the master's is a
        // proxied request's whole future, 1.6 KB) would make every connection's future that
        // large for good, idle or not (see `buffers`). In a block of the thread's cache, not a
        // fresh `Box` (see `recycle`).
        let mut answer = pin!(Recycled::new(plain.answer(req, body)));
        let Some(resp) = until_answered(&mut io, &mut read, answer.as_mut(), max_head).await else {
            // The client hung up: dropping the request abandons it (and its worker connection).
            return None;
        };
        // A shutdown under way or the client's own `Connection: close`: either way this answer
        // is the connection's last, and says so.
        let last = closing.load(Ordering::Relaxed) || client_close || !keep_alive;
        let close = match write_response(&mut io, &mut write, resp, is_head, last).await {
            Ok(close) => close,
            Err(e) => {
                tracing::debug!(error = %e, "writing a response to the client failed");
                return None;
            }
        };
        if close {
            let _ = io.shutdown().await;
            return None;
        }
        buffers::release(&mut read, &mut write);
        plain.watch().await_head();
    }
}

/// The size of a connection's plain loop serving `P` on `I`: what each connection holds for its
/// whole life, idle or not (see `buffers`), so its tests can keep it small.
#[cfg(test)]
pub(crate) fn connection_future_size<P: Plain, I: Io>() -> usize {
    fn size_of_output<A, B, C, F: Future>(_make: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size_of_output(serve_plain::<P, I>)
}

/// How a request's body failed to arrive whole.
#[derive(Debug, PartialEq)]
enum BodyCut {
    /// The client closed (or broke) the connection first.
    Closed,
    /// It sent nothing for the body timeout.
    Stalled,
}

/// The `len` bytes of body that follow a head, read into `read` behind whatever of them is there
/// already, then split off it: bytes after the body (a pipelined request) stay in `read`.
async fn read_body<I: Io>(
    io: &mut I,
    read: &mut BytesMut,
    len: usize,
    timeout: Option<Duration>,
    watch: &Watch,
) -> Result<Bytes, BodyCut> {
    if read.len() < len {
        // The client is still sending: the head's deadline (restarted now, as the wait for the
        // next head would be) bounds how long the whole body may take, the body timeout how long
        // it may send nothing. The timer exists only on this path; a body that came with its
        // head, as small ones nearly always do, costs none.
        watch.await_head();
        // Room for the whole body at once: one allocation, and no copy as it grows. At most
        // `max_body`, what hyper's path buffered as well.
        read.reserve(len - read.len());
        let mut stall = timeout.map(|t| (t, Box::pin(tokio::time::sleep(t))));
        std::future::poll_fn(|cx| {
            while read.len() < len {
                match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, read) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Err(BodyCut::Closed)),
                    Poll::Ready(Ok(_)) => {
                        if let Some((t, sleep)) = &mut stall {
                            sleep.as_mut().reset(tokio::time::Instant::now() + *t);
                        }
                    }
                    Poll::Pending => {
                        if let Some((_, sleep)) = &mut stall
                            && sleep.as_mut().poll(cx).is_ready()
                        {
                            return Poll::Ready(Err(BodyCut::Stalled));
                        }
                        return Poll::Pending;
                    }
                }
            }
            Poll::Ready(Ok(()))
        })
        .await?;
    }
    Ok(read.split_to(len).freeze())
}

/// What the bytes at the start of the read buffer are.
pub(crate) enum Parsed {
    /// A plain request, its head taken off the buffer; whether the client asked to close the
    /// connection after it (`Connection: close`); and how many bytes of body follow the head.
    Plain(request::Parts, bool, usize),
    /// The start of a head: read more.
    Partial,
    /// Not a plain request, or not a valid one: hyper's to serve or to refuse. Holds the head
    /// when it was already taken off the buffer.
    Other(Bytes),
    /// A head refused here, because hyper would give it the wrong answer or none.
    Refused(check::Refusal),
}

pub(crate) fn parse(read: &mut BytesMut, max_head: usize, max_body: usize) -> Parsed {
    let mut spans = Spans::new();
    let (len, method, target) = {
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            read,
            &mut headers,
        );
        let len = match parsed {
            // The limit holds for every head, however it arrived: one pipelined behind another
            // request can be read whole, past the limit, in the same read.
            Ok(httparse::Status::Complete(len)) if len > max_head => {
                return Parsed::Refused(
                    check::request_line(read, max_head).unwrap_or(check::HEAD_TOO_LARGE),
                );
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if read.len() < max_head => return Parsed::Partial,
            // What hyper would answer wrongly is answered here (414 for a request line that is
            // too long, 505 for an HTTP version other than 1.x); the rest is hyper's 400 or 431.
            _ => {
                return match check::request_line(read, max_head) {
                    Some(refusal) => Parsed::Refused(refusal),
                    None => Parsed::Other(Bytes::new()),
                };
            }
        };
        if req.version != Some(1) {
            return Parsed::Other(Bytes::new());
        }
        let (Some(method), Some(path)) = (req.method, req.path) else {
            return Parsed::Other(Bytes::new());
        };
        spans.record(read, req.headers);
        // CONNECT and methods nobody here implements go to hyper's path, which refuses them
        // (RFC 9110 §9.1, §9.3.6: 501), as it does every request it did not pass as plain.
        let method = match Method::from_bytes(method.as_bytes()) {
            Ok(m) if check::is_known_method(&m) => m,
            _ => return Parsed::Other(Bytes::new()),
        };
        // Only origin-form targets (RFC 9112 §3.2.1) are plain; absolute-form and the rest are
        // hyper's to judge.
        if !path.starts_with('/') {
            return Parsed::Other(Bytes::new());
        }
        // RFC 9112 §3.2: a target has no fragment. httparse lets `#` through and `Uri` drops
        // what follows it, so the worker would see another target than the client sent.
        if path.as_bytes().contains(&b'#') {
            return Parsed::Refused(check::BAD_TARGET);
        }
        (len, method, offset(read, path.as_bytes()))
    };
    let head = read.split_to(len).freeze();
    let spans = spans.as_slice();
    let mut headers = recycle::header_map(spans.len());
    let mut close = false;
    let mut hosts = 0u32;
    // Set by what makes the request hyper's (a `Connection` option, an upgrade, an expectation,
    // a transfer coding, a bad Host): the rest of the head is still read for its framing, so that
    // a length and a coding together are refused whatever their order and whatever came first.
    let mut other = false;
    let mut length: Option<u64> = None;
    let mut length_lines = 0u32;
    let mut listed = false;
    let mut coded = false;
    for h in spans {
        let Ok(name) = HeaderName::from_bytes(h.name(&head)) else {
            return Parsed::Other(head);
        };
        if name == CONNECTION {
            // `close` and `keep-alive` are this connection's business alone: answered here, not
            // passed on. Any other option names hop-by-hop headers; hyper deals with those.
            let value = h.value(&head).trim_ascii();
            if value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !value.eq_ignore_ascii_case(b"keep-alive") {
                other = true;
            }
            continue;
        }
        if name == CONTENT_LENGTH {
            // RFC 9112 §6.3 rule 5: a length that is not one valid number, or lines that
            // disagree, leave the body undelimitable: 400, and close (done by `Refused`).
            match check::content_length(h.value(&head)) {
                Some((n, list)) if length.is_none_or(|l| l == n) => {
                    length = Some(n);
                    length_lines += 1;
                    listed |= list;
                }
                _ => return Parsed::Refused(check::BAD_LENGTH),
            }
        } else if name == TRANSFER_ENCODING {
            coded = true;
            other = true;
            continue;
        } else if name == UPGRADE || name == EXPECT {
            // An upgrade or an expectation (`100-continue`): hyper's.
            other = true;
            continue;
        } else if name == HOST {
            // RFC 9112 §3.2: exactly one Host line, with a valid value; anything else is hyper's
            // path to refuse (400).
            hosts += 1;
            if !check::valid_host(h.value(&head)) {
                other = true;
            }
        }
        if other {
            continue;
        }
        let value = h.value_shared(&head);
        // SAFETY: httparse accepted this value, and the bytes it accepts in a header value (tab,
        // visible ASCII, space, obs-text) are exactly those `HeaderValue` allows. hyper builds
        // its header values the same way. A slice of the shared head: no copy.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(value) };
        headers.append(name, value);
    }
    // RFC 9112 §6.3 rule 3: with both, Transfer-Encoding would win, but a server in front or
    // behind that reads the length instead sees another request in the body (request smuggling,
    // §11.2). The message "ought to be handled as an error": 400, and close.
    if coded && length.is_some() {
        return Parsed::Refused(check::LENGTH_AND_CODING);
    }
    // A length repeated with one value (RFC 9110 §8.6 lets a recipient take it as one), or one
    // larger than is read here, is hyper's, as is every request without exactly one Host.
    let body = match length {
        Some(n) if n <= max_body as u64 => n as usize,
        None => 0,
        Some(_) => return Parsed::Other(head),
    };
    if other || hosts != 1 || length_lines > 1 || listed {
        return Parsed::Other(head);
    }
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize)) else {
        return Parsed::Other(head);
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Parsed::Plain(req.into_parts().0, close, body)
}

/// Runs `answer` to its end, reading on from the client meanwhile: `None` if the client hung up
/// first. Bytes it sent meanwhile (pipelined requests) stay in `read` for after the answer.
async fn until_answered<I: Io, F, B>(
    io: &mut I,
    read: &mut BytesMut,
    mut answer: Pin<&mut F>,
    max_head: usize,
) -> Option<Response<B>>
where
    F: Future<Output = Response<B>>,
{
    std::future::poll_fn(|cx| {
        if let Poll::Ready(resp) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        // A client that pipelines more than a head's worth can wait for this answer.
        while read.len() < max_head {
            match buffers::poll_read(&mut *io, cx, read) {
                Poll::Pending => break,
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// How a response body is delimited on the client's connection.
#[derive(Clone, Copy, PartialEq)]
enum ResponseFraming {
    /// No body may follow (HEAD, 204, 304): the head is sent as the worker wrote it.
    None,
    Length(u64),
    Chunked,
}

/// Writes `resp` to the client; true if the connection must close after it, because `closing`
/// says so (then the response says it too) or the response itself said `Connection: close`.
///
/// Not an `async fn`, which would hold `resp` twice (as its argument and as the parts it is split
/// into), in the connection's own future: the response is split here, before the future is made.
fn write_response<'a, I: Io, B>(
    io: &'a mut I,
    out: &'a mut Vec<u8>,
    resp: Response<B>,
    is_head: bool,
    closing: bool,
) -> impl Future<Output = io::Result<bool>> + 'a
where
    B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin + 'a,
{
    let (parts, mut body) = resp.into_parts();
    async move {
        let status = parts.status;
        let bodiless =
            is_head || status == StatusCode::NOT_MODIFIED || status == StatusCode::NO_CONTENT;
        let framing = if bodiless {
            ResponseFraming::None
        } else {
            match body.size_hint().exact() {
                Some(n) => ResponseFraming::Length(n),
                None => ResponseFraming::Chunked,
            }
        };
        let out = buffers::write_buffer(out);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut dated = false;
        let mut close = closing;
        for (name, value) in &parts.headers {
            // The body's framing is this connection's: written below, whatever the worker used.
            let framing_header = *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING;
            if framing_header
                && (framing != ResponseFraming::None || status == StatusCode::NO_CONTENT)
            {
                continue;
            }
            if *name == CONNECTION {
                if closing {
                    continue;
                }
                close |= value.as_bytes().eq_ignore_ascii_case(b"close");
            }
            dated |= *name == DATE;
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match framing {
            ResponseFraming::None => {}
            ResponseFraming::Length(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        if !dated {
            date(out);
        }
        if closing {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        recycle::give_header_map(parts.headers);

        if framing == ResponseFraming::None {
            io.write_all(out).await?;
            return Ok(close);
        }
        let mut body = Pin::new(&mut body);
        if let ResponseFraming::Length(n) = framing
            && n <= INLINE_BODY as u64
        {
            // Small and of known size (a complete body nearly always): behind the head, one write.
            let mut sent = 0u64;
            while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                if let Ok(data) = frame.map_err(|e| io::Error::other(e.into()))?.into_data() {
                    sent += data.len() as u64;
                    if sent > n {
                        break;
                    }
                    out.extend_from_slice(&data);
                }
            }
            if sent != n {
                return Err(short_body(sent, n));
            }
            io.write_all(out).await?;
            return Ok(close);
        }
        io.write_all(out).await?;
        let mut sent = 0u64;
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let frame = frame.map_err(|e| io::Error::other(e.into()))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not forwarded
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if framing == ResponseFraming::Chunked {
                out.clear();
                write_chunk_size(data.len(), out);
                out.extend_from_slice(b"\r\n");
                io.write_all(out).await?;
                io.write_all(&data).await?;
                io.write_all(b"\r\n").await?;
            } else if let ResponseFraming::Length(n) = framing
                && sent > n
            {
                // A body longer than it announced: the bytes past the length would be read as the
                // next response on this connection (RFC 9112 §6.3: the length is what frames the
                // message; RFC 9110 §8.6: a sender must not send a Content-Length known to be
                // wrong). Send what fits and cut the connection.
                let fits = data.len() - (sent - n) as usize;
                io.write_all(&data[..fits]).await?;
                return Err(short_body(sent, n));
            } else {
                io.write_all(&data).await?;
            }
        }
        match framing {
            ResponseFraming::Chunked => io.write_all(b"0\r\n\r\n").await?,
            ResponseFraming::Length(n) if sent != n => return Err(short_body(sent, n)),
            _ => {}
        }
        Ok(close)
    }
}

fn short_body(sent: u64, n: u64) -> io::Error {
    io::Error::other(format!(
        "the body gave {sent} bytes, not the {n} it announced"
    ))
}

/// A connection handed to hyper: the bytes already read come first.
pub(crate) struct Rewind<I> {
    /// A head already taken off the read buffer (or nothing), then the rest of that buffer.
    unread: [Bytes; 2],
    io: I,
}

impl<I> Rewind<I> {
    /// `io` with `read`, bytes read from it elsewhere, in front: a connection the master read
    /// an upgrade's head of and handed to a worker (see `edge::upgrade`).
    pub(crate) fn new(read: Bytes, io: I) -> Self {
        Self {
            unread: [read, Bytes::new()],
            io,
        }
    }

    /// The bytes not yet read, in order, and the stream behind them: for an upgraded connection,
    /// which the edge splices without this wrapper.
    pub(crate) fn into_parts(self) -> ([Bytes; 2], I) {
        (self.unread, self.io)
    }

    /// The bytes not yet read, in order, and the stream, left in place.
    pub(crate) fn parts(&self) -> (&[Bytes; 2], &I) {
        (&self.unread, &self.io)
    }
}

impl<I: Io> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Self { unread, io } = self.get_mut();
        if let Some(unread) = unread.iter_mut().find(|b| !b.is_empty()) {
            let n = unread.len().min(buf.remaining());
            buf.put_slice(&unread[..n]);
            unread.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(io).poll_read(cx, buf)
    }
}

impl<I: Io> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body announcing `announced` bytes and giving `pieces`.
    struct Lying(u64, std::collections::VecDeque<Bytes>);

    impl Body for Lying {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.1.pop_front().map(|p| Ok(http_body::Frame::data(p))))
        }

        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.0)
        }
    }

    #[tokio::test]
    async fn a_body_longer_than_it_announced_never_writes_past_its_length() {
        // Large enough for the streaming path: the extra bytes would be the next "response".
        let n = INLINE_BODY as u64 + 10;
        let pieces = [vec![b'a'; n as usize], b"HTTP/1.1 200 OK\r\n\r\n".to_vec()];
        let body = Lying(n, pieces.into_iter().map(Bytes::from).collect());
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut out = Vec::new();
        let written = write_response(&mut ours, &mut out, Response::new(body), false, false).await;
        assert!(written.is_err(), "the connection must be cut");
        drop(ours);
        let mut wire = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut wire)
            .await
            .expect("read");
        let text = String::from_utf8_lossy(&wire);
        let (_, sent) = text.split_once("\r\n\r\n").expect("a head");
        assert_eq!(sent.len() as u64, n, "exactly the announced length");
        assert!(!sent.contains("HTTP/1.1"), "nothing past the length");
    }

    fn parse_all(raw: &[u8]) -> (Parsed, BytesMut) {
        let mut read = BytesMut::from(raw);
        (parse(&mut read, 1024, 64), read)
    }

    #[test]
    fn a_plain_request_is_parsed_and_taken_off_the_buffer() {
        let (parsed, rest) =
            parse_all(b"GET /a?b=1 HTTP/1.1\r\nHost: t\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next");
        let Parsed::Plain(req, close, 0) = parsed else {
            panic!("plain")
        };
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.uri, "/a?b=1");
        assert_eq!(req.headers["host"], "t");
        let two: Vec<_> = req.headers.get_all("x-two").iter().collect();
        assert_eq!(two, ["1", "2"]);
        assert!(!close, "no Connection header: keep-alive");
        assert_eq!(&rest[..], b"GET /next", "the next request stays");
    }

    #[test]
    fn connection_close_and_keep_alive_are_plain_and_not_passed_on() {
        for (raw, wants_close) in [
            (
                &b"GET / HTTP/1.1\r\nConnection: close\r\nHost: t\r\n\r\n"[..],
                true,
            ),
            (
                b"GET / HTTP/1.1\r\nconnection:  CLOSE \r\nHost: t\r\n\r\n",
                true,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
                false,
            ),
        ] {
            let text = String::from_utf8_lossy(raw);
            let Parsed::Plain(req, close, 0) = parse_all(raw).0 else {
                panic!("{text}: plain")
            };
            assert_eq!(close, wants_close, "{text}");
            assert!(
                req.headers.get(CONNECTION).is_none(),
                "{text}: kept the hop-by-hop header"
            );
        }
    }

    #[test]
    fn a_head_cut_short_asks_for_more_until_it_outgrows_the_limit() {
        assert!(matches!(
            parse_all(b"GET / HTTP/1.1\r\nHost").0,
            Parsed::Partial
        ));
        let mut long = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        long.resize(1024, b'a');
        assert!(matches!(parse_all(&long).0, Parsed::Other(_)));
    }

    #[test]
    fn requests_that_are_not_plain_go_to_hyper_with_every_byte() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: close, x-secret\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ] {
            let (parsed, rest) = parse_all(raw);
            let Parsed::Other(head) = parsed else {
                panic!("{}: not plain", String::from_utf8_lossy(raw))
            };
            let mut all = head.to_vec();
            all.extend_from_slice(&rest);
            assert_eq!(all, raw, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn a_content_length_body_within_the_bound_is_plain_and_left_to_read() {
        let (parsed, rest) = parse_all(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}GET /next",
        );
        let Parsed::Plain(req, false, 7) = parsed else {
            panic!("plain, with 7 bytes of body")
        };
        assert_eq!(req.method, Method::POST);
        assert_eq!(
            req.headers[CONTENT_LENGTH], "7",
            "the length goes on as sent"
        );
        assert_eq!(req.headers["content-type"], "application/json");
        assert_eq!(
            &rest[..],
            b"{\"a\":1}GET /next",
            "the body is read by the loop"
        );
        let (parsed, _) = parse_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(parsed, Parsed::Plain(_, _, 0)), "an empty body");
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused_in_either_order() {
        // RFC 9112 §6.3 rule 3, §11.2: the classic CL.TE and TE.CL smuggling heads.
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
            // Something else making the request hyper's comes first: still refused here.
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nConnection: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let text = String::from_utf8_lossy(raw);
            let Parsed::Refused(r) = parse_all(raw).0 else {
                panic!("{text}: refused")
            };
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{text}");
            assert_eq!(r.message, check::LENGTH_AND_CODING.message, "{text}");
        }
    }

    #[test]
    fn differing_or_malformed_lengths_are_refused() {
        // RFC 9112 §6.3 rule 5: the body cannot be delimited.
        for value in [
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: 5, 6",
            "Content-Length: abc",
            "Content-Length: -1",
            "Content-Length: +5",
            "Content-Length: 0x10",
            "Content-Length: 5 5",
            "Content-Length:",
            "Content-Length: 99999999999999999999999",
            "Content-Length: 18446744073709551616",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nHost: t\r\n{value}\r\n\r\nhello");
            let Parsed::Refused(r) = parse_all(raw.as_bytes()).0 else {
                panic!("{value}: refused")
            };
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{value}");
        }
    }

    #[test]
    fn repeated_equal_lengths_large_bodies_and_expectations_stay_hyper_s() {
        for raw in [
            // RFC 9110 §8.6: a recipient may take equal values as one; hyper judges, as before.
            &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
            // Past the bound (64 here): streamed by hyper.
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 65\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551615\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        ] {
            let (parsed, rest) = parse_all(raw);
            let Parsed::Other(head) = parsed else {
                panic!("{}: hyper's", String::from_utf8_lossy(raw))
            };
            let mut all = head.to_vec();
            all.extend_from_slice(&rest);
            assert_eq!(all, raw, "hyper gets every byte");
        }
    }

    /// What the loop handed its handler: each request's head and body.
    type Seen = Arc<std::sync::Mutex<Vec<(request::Parts, Bytes)>>>;

    /// A handler that notes each request and answers with its body's length; bodies up to 64
    /// bytes are plain.
    struct Recorder {
        seen: Seen,
        watch: Watch,
        body_timeout: Option<Duration>,
        handed_over: Arc<AtomicBool>,
    }

    impl Recorder {
        fn new(body_timeout: Option<Duration>) -> Self {
            Self {
                seen: Seen::default(),
                watch: Watch::new(&super::super::deadline::Deadlines::default()),
                body_timeout,
                handed_over: Arc::default(),
            }
        }
    }

    impl Plain for Recorder {
        type Body = http_body_util::Full<Bytes>;

        fn watch(&self) -> &Watch {
            &self.watch
        }

        fn max_head(&self) -> usize {
            1024
        }

        fn max_body(&self) -> usize {
            64
        }

        fn body_timeout(&self) -> Option<Duration> {
            self.body_timeout
        }

        fn answer(
            &self,
            req: request::Parts,
            body: Bytes,
        ) -> impl Future<Output = Response<Self::Body>> + Send {
            let seen = self.seen.clone();
            async move {
                let len = body.len();
                seen.lock().expect("not poisoned").push((req, body));
                Response::new(http_body_util::Full::new(Bytes::from(len.to_string())))
            }
        }

        fn hand_over<I: Io>(self, _: Rewind<I>) -> Hyper {
            self.handed_over.store(true, Ordering::Relaxed);
            Box::pin(crate::http::deadline::HandedOver)
        }
    }

    /// A client that delivers its bytes in the given pieces, one a read, then ends; what the
    /// server writes is kept.
    struct Pieces {
        reads: std::collections::VecDeque<Vec<u8>>,
        written: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            // An empty read is the end of the stream: empty pieces are no piece at all.
            this.reads.retain(|p| !p.is_empty());
            if let Some(mut piece) = this.reads.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    this.reads.push_front(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Pieces {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written
                .lock()
                .expect("not poisoned")
                .extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Serves `pieces` to the end: what the handler saw (method, target, body), what was
    /// written back, and whether hyper took the connection over.
    pub(super) async fn serve_pieces(
        pieces: Vec<Vec<u8>>,
    ) -> (Vec<(String, String, Vec<u8>)>, Vec<u8>, bool) {
        let recorder = Recorder::new(None);
        let (seen, handed_over) = (recorder.seen.clone(), recorder.handed_over.clone());
        let written = Arc::default();
        let io = Pieces {
            reads: pieces.into(),
            written: Arc::clone(&written),
        };
        let _ = serve_plain(recorder, io, Arc::default()).await;
        let seen = seen
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(p, b)| (p.method.to_string(), p.uri.to_string(), b.to_vec()))
            .collect();
        let written = written.lock().expect("not poisoned").clone();
        (seen, written, handed_over.load(Ordering::Relaxed))
    }

    /// A POST with `body`, then a GET, pipelined.
    pub(super) fn post_then_get(body: &[u8]) -> Vec<u8> {
        let mut raw = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        raw.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
        raw
    }

    #[tokio::test]
    async fn a_body_split_at_every_byte_reaches_the_handler_whole_and_the_next_request_after_it() {
        // Bytes that look like a request inside the body: never read as one.
        let body = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
        let raw = post_then_get(body);
        let (whole, out, hyper) = serve_pieces(vec![raw.clone()]).await;
        assert!(!hyper);
        assert_eq!(
            whole,
            [
                ("POST".into(), "/echo".into(), body.to_vec()),
                ("GET".into(), "/after".into(), Vec::new()),
            ]
        );
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
        for cut in 0..=raw.len() {
            let pieces = vec![raw[..cut].to_vec(), raw[cut..].to_vec()];
            let (seen, _, hyper) = serve_pieces(pieces).await;
            assert_eq!(seen, whole, "cut at {cut}");
            assert!(!hyper, "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn a_body_shorter_than_its_length_then_a_close_reaches_no_handler() {
        let (seen, out, _) = serve_pieces(vec![
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\nonly ten b".to_vec(),
        ])
        .await;
        assert!(seen.is_empty(), "a half body was handed on: {seen:?}");
        assert!(
            out.is_empty(),
            "nothing to answer: {}",
            String::from_utf8_lossy(&out)
        );
    }

    #[tokio::test]
    async fn a_refused_length_is_answered_400_and_nothing_after_it_is_read() {
        let raw = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabcGET /next HTTP/1.1\r\nHost: t\r\n\r\n";
        let (seen, out, hyper) = serve_pieces(vec![raw.to_vec()]).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert_eq!(
            text.matches("HTTP/1.1").count(),
            1,
            "one answer, then close: {text}"
        );
        assert!(text.contains("connection: close"), "{text}");
        assert!(seen.is_empty() && !hyper);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_gets_408_and_the_connection_closes() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let recorder = Recorder::new(Some(Duration::from_secs(2)));
        let seen = recorder.seen.clone();
        let serving = tokio::spawn(serve_plain(recorder, server, Arc::default()));
        client
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut out)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(
            seen.lock().unwrap().is_empty(),
            "a stalled body was handed on"
        );
        assert!(serving.await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_trickles_within_the_timeout_is_read_whole() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let recorder = Recorder::new(Some(Duration::from_secs(2)));
        let seen = recorder.seen.clone();
        let serving = tokio::spawn(serve_plain(recorder, server, Arc::default()));
        client
            .write_all(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        for byte in b"abcd" {
            // Each gap under the timeout, all of them together over it.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            client.write_all(&[*byte]).await.unwrap();
        }
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut out)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("\r\n\r\n4"), "{text}");
        assert_eq!(&seen.lock().unwrap()[0].1[..], b"abcd");
        assert!(serving.await.unwrap().is_none());
    }

    #[test]
    fn chunk_sizes_are_written_in_full_hex() {
        let mut out = Vec::new();
        for n in [0, 9, 10, 255, 4096, usize::MAX] {
            out.clear();
            write_chunk_size(n, &mut out);
            assert_eq!(out, format!("{n:x}").as_bytes());
        }
    }

    #[test]
    fn the_date_header_is_an_http_date() {
        let mut out = Vec::new();
        date(&mut out);
        let text = String::from_utf8(out).unwrap();
        let value = text
            .strip_prefix("date: ")
            .unwrap()
            .strip_suffix("\r\n")
            .unwrap();
        let parsed = httpdate::parse_http_date(value).unwrap();
        let age = std::time::SystemTime::now().duration_since(parsed).unwrap();
        assert!(age.as_secs() < 5, "{value}");
    }
}

/// Property tests: the request-head parser on arbitrary bytes, and against httparse and hyper.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// Pieces of request heads, right and wrong, to build HTTP-ish inputs from.
    const FRAGMENTS: &[&str] = &[
        "GET ",
        "POST ",
        "get ",
        "CONNECT ",
        "/",
        "/a?b=1",
        "*",
        "http://h/",
        " ",
        "\t",
        " HTTP/1.1",
        " HTTP/1.0",
        " HTTP/1.2",
        " HTTP/2.0",
        "\r\n",
        "\n",
        "\r",
        "\0",
        "Host: a",
        "Host: a b",
        "Host:",
        "Content-Length: 3",
        "Transfer-Encoding: chunked",
        "Connection: close",
        "Connection: x",
        "Upgrade: h2c",
        "Expect: 100-continue",
        "X-A: \u{80}",
        ": v",
        "N\u{7f}: v",
        "abc",
        "\r\n\r\n",
    ];

    fn http_ish() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            vec(any::<u8>(), 0..600),
            vec(select(FRAGMENTS), 0..40).prop_map(|parts| parts.concat().into_bytes()),
        ]
    }

    /// Feeds `raw` to the parser as the loop does, taking every plain head until one is not.
    fn drain(raw: &[u8], max_head: usize) {
        let mut read = BytesMut::from(raw);
        while !read.is_empty() {
            let before = read.len();
            match parse(&mut read, max_head, 64) {
                Parsed::Plain(_, _, body) => {
                    assert!(read.len() < before, "a plain head takes bytes");
                    assert!(body <= 64, "a body past the bound is plain: {body}");
                    if read.len() < body {
                        return;
                    }
                    read.advance(body);
                }
                Parsed::Partial => {
                    assert!(before < max_head, "partial past the limit");
                    return;
                }
                Parsed::Other(head) => {
                    assert_eq!(head.len() + read.len(), before, "hyper gets every byte");
                    return;
                }
                Parsed::Refused(r) => {
                    assert!(r.status.is_client_error() || r.status.is_server_error());
                    return;
                }
            }
        }
    }

    /// One request head from parts that are each sometimes wrong.
    fn head() -> impl Strategy<Value = Vec<u8>> {
        let method = select(&["GET", "HEAD", "POST", "DELETE", "get", "CONNECT", "BREW"][..]);
        let target = prop_oneof![
            Just("/".to_string()),
            Just("*".to_string()),
            Just("http://x.example/y".to_string()),
            vec(select(&b"abc/?=%&.-_~:@!$'()*+,;#[]\"<>"[..]), 0..24)
                .prop_map(|t| format!("/{}", String::from_utf8_lossy(&t))),
        ];
        let version = select(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"][..]);
        let name = select(
            &[
                "Host",
                "host",
                "HOST",
                "X-A",
                "x-b",
                "Connection",
                "Content-Length",
                "Transfer-Encoding",
                "Upgrade",
                "Expect",
                "Cookie",
                "X-Request-Id",
            ][..],
        );
        let value = vec(
            prop_oneof![
                select(&b"abcXYZ019 \t,;=:/.-_[]@%\"\x80\xff"[..]),
                Just(b'a'),
            ],
            0..16,
        );
        let headers = vec((name, value), 0..8);
        // Half the heads start with a good Host, so that many are plain.
        (method, target, version, any::<bool>(), headers).prop_map(|(m, t, v, host, headers)| {
            let mut out = format!("{m} {t} {v}\r\n").into_bytes();
            if host {
                out.extend_from_slice(b"Host: h.example:80\r\n");
            }
            for (n, v) in headers {
                out.extend_from_slice(n.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(&v);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out
        })
    }

    /// What hyper's server makes of `raw`: the request its service sees, if any.
    fn hyper_parse(rt: &tokio::runtime::Runtime, raw: &[u8]) -> Option<request::Parts> {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let tx = std::sync::Mutex::new(Some(tx));
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send(req.into_parts().0);
                }
                async {
                    Ok::<_, std::convert::Infallible>(Response::new(
                        http_body_util::Empty::<Bytes>::new(),
                    ))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service);
            let task = tokio::spawn(conn);
            client.write_all(raw).await.ok()?;
            client.shutdown().await.ok()?;
            let parts = rx.await.ok();
            task.abort();
            parts
        })
    }

    proptest! {
        #![proptest_config(crate::prop::config())]

        /// Arbitrary bytes never panic the parser, never loop, and hyper always gets every byte.
        #[test]
        fn prop_request_parser_survives_arbitrary_bytes(raw in http_ish(), max in 16usize..700) {
            drain(&raw, max);
        }

        /// A request body, cut into pieces anywhere (the same pieces a slow network makes),
        /// reaches the handler exactly as it does sent in one piece, and so does the request
        /// behind it: no byte of a body is ever read as a head, and none is lost.
        #[test]
        fn prop_a_body_split_across_reads_parses_the_same(
            body in vec(prop_oneof![any::<u8>(), select(&b"\r\nGET /HTTP1.:"[..])], 0..64),
            cuts in vec(any::<prop::sample::Index>(), 0..6),
        ) {
            thread_local! {
                static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
            }
            let raw = super::tests::post_then_get(&body);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(raw.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for to in at.into_iter().chain([raw.len()]) {
                pieces.push(raw[from..to].to_vec());
                from = to;
            }
            let (whole, whole_out, _) = RT.with(|rt| rt.block_on(super::tests::serve_pieces(vec![raw.clone()])));
            let (cut, cut_out, hyper) = RT.with(|rt| rt.block_on(super::tests::serve_pieces(pieces)));
            prop_assert_eq!(whole.len(), 2);
            prop_assert_eq!(&whole[0].2, &body);
            prop_assert_eq!(&cut, &whole);
            prop_assert!(!hyper);
            // The answers are the same too, but for their Date.
            let strip = |out: &[u8]| String::from_utf8_lossy(out).lines().filter(|l| !l.starts_with("date:")).collect::<Vec<_>>().join("\n");
            prop_assert_eq!(strip(&cut_out), strip(&whole_out));
        }

        /// Whatever the plain parser passes, httparse (hyper's parser) reads the same way and the
        /// edge's checks accept: no request skips them by being plain.
        #[test]
        fn prop_plain_requests_mean_what_httparse_says(raw in head()) {
            let mut read = BytesMut::from(&raw[..]);
            let Parsed::Plain(req, close, _) = parse(&mut read, 64 * 1024, PLAIN_BODY) else {
                return Ok(());
            };
            prop_assert!(read.is_empty());
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut theirs = httparse::Request::new(&mut slots);
            let status = theirs.parse(&raw);
            prop_assert!(matches!(status, Ok(httparse::Status::Complete(n)) if n == raw.len()));
            prop_assert_eq!(theirs.version, Some(1));
            prop_assert_eq!(theirs.method, Some(req.method.as_str()));
            let target = req.uri.to_string();
            prop_assert_eq!(theirs.path, Some(target.as_str()));
            // Compared name by name: a header map groups the lines of one name, in their order.
            let mut kept: Vec<_> = theirs
                .headers
                .iter()
                .filter(|h| !h.name.eq_ignore_ascii_case("connection"))
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect();
            let mut ours: Vec<_> = req
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect();
            kept.sort_by(|a, b| a.0.cmp(&b.0));
            ours.sort_by(|a, b| a.0.cmp(&b.0));
            prop_assert_eq!(&ours, &kept);
            let closes = theirs.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection")
                    && h.value.trim_ascii().eq_ignore_ascii_case(b"close")
            });
            prop_assert_eq!(close, closes);
            prop_assert_eq!(
                check::request(&req.method, &req.uri, http::Version::HTTP_11, &req.headers, 64 * 1024),
                Ok(())
            );
        }

        /// And hyper's server, given the same bytes, sees the same request.
        #[test]
        fn prop_plain_requests_mean_what_hyper_says(raw in head()) {
            thread_local! {
                static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
            }
            let mut read = BytesMut::from(&raw[..]);
            let Parsed::Plain(ours, _, _) = parse(&mut read, 64 * 1024, PLAIN_BODY) else {
                return Ok(());
            };
            let theirs = RT.with(|rt| hyper_parse(rt, &raw));
            let Some(theirs) = theirs else {
                return Err(TestCaseError::fail(format!(
                    "hyper refused a head the plain parser passed: {:?}",
                    String::from_utf8_lossy(&raw)
                )));
            };
            prop_assert_eq!(&ours.method, &theirs.method);
            prop_assert_eq!(&ours.uri, &theirs.uri);
            let mut theirs_headers = theirs.headers.clone();
            theirs_headers.remove(CONNECTION);
            prop_assert_eq!(&ours.headers, &theirs_headers);
        }
    }
}
