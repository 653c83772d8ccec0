//! The master's HTTP/1.1 client for its workers: one keep-alive connection to a worker's Unix
//! socket, driven by the task of the request that holds it.
//!
//! Why not hyper's client: its connection runs as a task of its own, reached through a channel
//! and answering through another, so each proxied request woke three tasks. Measured with
//! callgrind over 20,000 proxied `GET /ping`, that client side was a third of the master's
//! instructions (12,200 of 36,500 per request). Here the request's own task writes the head, reads
//! the answer and, when the whole body came with the head (small responses), hands it on without
//! another poll. Responses are parsed by httparse, the parser inside hyper. hyper still serves the
//! clients and still carries upgraded (WebSocket) connections, which never enter the pool.
//!
//! The rules are RFC 9112's: a response's body is delimited by `Transfer-Encoding: chunked`, else
//! `Content-Length`, else the end of the connection; HEAD, 1xx, 204 and 304 answers have none. A
//! connection is pooled again only when its response was read to the end, nothing else arrived
//! after it, the whole request body was sent, and neither side said `Connection: close`.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HeaderName, TRANSFER_ENCODING};
use http::{HeaderValue, Method, StatusCode, Version, request, response};
use http_body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::head::{MAX_HEADERS, READ_CHUNK, Spans, reserve, write_chunk_size};
use super::headers::{X_FORWARDED_FOR, is_hop_by_hop, write_forwarded_for};
use super::recycle;
use crate::error::BoxError;
use crate::wire::socket::WorkerSocket;
/// Longest chunk-size line or trailer section accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// One connection to a worker.
#[derive(Debug)]
pub(crate) struct WorkerConn {
    io: WorkerSocket,
    read: BytesMut,
    /// The request head is built here; kept to reuse its allocation.
    write: Vec<u8>,
    /// Whether the exchange in progress leaves the connection fit for another request.
    reusable: bool,
}

/// How an exchange with a worker failed. The three cases are what the caller decides on: only
/// a request that never reached the worker may go elsewhere as it is, and a failure of the
/// client's own body (`E`, the body's error type) is no fault of the worker's.
#[derive(Debug)]
pub(crate) enum Error<E> {
    /// Not one byte reached the worker: the request, body untouched, may go elsewhere as it is.
    NotSent(io::Error),
    /// The worker got some or all of the request, then failed or answered something unusable.
    Lost(Lost),
    /// The client's request body failed (too large, or the client went away).
    Body(E),
}

impl<E: std::fmt::Display> std::fmt::Display for Error<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotSent(e) => write!(f, "nothing reached the worker: {e}"),
            Error::Lost(lost) => lost.fmt(f),
            Error::Body(e) => write!(f, "the client's request body failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::NotSent(e) => Some(e),
            Error::Lost(lost) => lost.source(),
            Error::Body(e) => Some(e),
        }
    }
}

/// The worker got (some of) the request and the exchange then failed: what went wrong, and the
/// I/O or parse error beneath when there is one. A plain message costs no allocation.
#[derive(Debug)]
pub(crate) struct Lost {
    what: &'static str,
    source: Option<BoxError>,
}

impl Lost {
    fn new(what: &'static str) -> Self {
        Self { what, source: None }
    }

    fn because(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            what,
            source: Some(source.into()),
        }
    }
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.what),
            None => f.write_str(self.what),
        }
    }
}

impl std::error::Error for Lost {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A response head, hop-by-hop headers removed, and how its body follows.
#[derive(Debug)]
pub(crate) struct Head<B> {
    pub parts: response::Parts,
    pub body: Start,
    /// The rest of the request body, when the worker answered before it was all sent.
    pub writer: Option<BodyWriter<B>>,
    /// The worker answered, whole, without taking the whole request body: the client's unread
    /// rest leaves its connection unusable for another request.
    pub request_cut_short: bool,
}

/// The start of a response body.
#[derive(Debug)]
pub(crate) enum Start {
    /// All of it (possibly nothing) arrived with the head; the connection is already free.
    Complete(Bytes),
    /// More is to be read from the connection with this decoder.
    Stream(Decoder),
}

/// What a request body must be for the client to send it: a stream of `Bytes` whose default is
/// the empty body (what is left behind once the body has moved into a [`BodyWriter`]).
pub(crate) trait RequestBody: Body<Data = Bytes> + Default + Unpin {
    /// The whole body, when it is in memory already (read whole at the edge): then it goes out
    /// in the same write as the head, one system call for the request instead of two.
    fn whole(&self) -> Option<&Bytes> {
        None
    }
}

/// Headers the edge adds to every request it forwards. Written straight into the request head
/// rather than inserted into the client's header map, which would hash and often regrow it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Added<'a> {
    /// The client's address, appended to `X-Forwarded-For`.
    pub client_ip: &'a [u8],
    /// An `X-Request-Id` to add, when the client did not send one.
    pub request_id: Option<&'a [u8]>,
}

/// How the request body is framed on the way to the worker.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BodyFraming {
    None,
    Length,
    Chunked,
}

impl WorkerConn {
    /// Connects to the worker listening on `path`.
    pub(crate) async fn connect(path: &Path) -> io::Result<Box<Self>> {
        // Boxed: a connection moves between the pool and the requests using it.
        Ok(Box::new(Self {
            io: WorkerSocket::connect(path).await?,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::with_capacity(512),
            reusable: true,
        }))
    }

    /// Moves an idle connection to the calling thread's runtime (see [`WorkerSocket::rehome`]).
    pub(crate) fn rehome(self) -> io::Result<Self> {
        Ok(Self {
            io: self.io.rehome()?,
            ..self
        })
    }

    /// Whether the connection can carry the next request: the last response was read to its end
    /// with nothing after it.
    pub(crate) fn is_reusable(&self) -> bool {
        // `reusable` is cleared by everything that leaves the connection out of step: a body
        // delimited by the close (RFC 9112 §6.3 rule 8), both framings at once (§6.3 rule 3), a
        // request body not sent in full, any read or parse error. Bytes still buffered would be
        // taken for the start of the next response.
        self.reusable && self.read.is_empty()
    }

    /// Sends one request and reads the response head (and the body too, when it came along).
    /// `body` is left untouched unless the head reached the worker.
    pub(crate) async fn send<B: RequestBody>(
        &mut self,
        req: &request::Parts,
        added: Added<'_>,
        body: &mut B,
        max_head: usize,
    ) -> Result<Head<B>, Error<B::Error>> {
        let framing = if body.is_end_stream() {
            BodyFraming::None
        } else if req.headers.contains_key(CONTENT_LENGTH) {
            BodyFraming::Length
        } else {
            BodyFraming::Chunked
        };
        self.reusable = true;
        self.write.clear();
        encode_head(&mut self.write, req, added, framing == BodyFraming::Chunked);
        let is_head = req.method == Method::HEAD;
        let whole = match (framing, body.whole()) {
            (BodyFraming::Length, Some(whole)) => whole.clone(),
            _ => Bytes::new(),
        };
        write_head(&mut self.io, &self.write, &whole).await?;
        if !whole.is_empty() {
            // All of it went with the head: nothing is left to stream.
            drop(std::mem::take(body));
        }
        if framing == BodyFraming::None || !whole.is_empty() {
            return std::future::poll_fn(|cx| self.poll_head(cx, is_head, max_head))
                .await
                .map_err(Error::Lost);
        }
        // The head is out, so the request can no longer go elsewhere: the body moves into a
        // writer that keeps sending it while the answer is read, and after the head if need be. A
        // worker may answer early (413) or stream its answer while it reads (an echo); waiting
        // for the whole body to be written first could wait forever.
        let mut writer = BodyWriter {
            body: std::mem::take(body),
            chunked: framing == BodyFraming::Chunked,
            pending: None,
            ended: false,
        };
        // A worker that answers without reading the body may close the connection, and the write
        // then fails while its answer waits in our receive buffer: read on before giving up.
        let mut write_failed = None;
        let mut head = std::future::poll_fn(|cx| {
            if write_failed.is_none() && !writer.is_finished() {
                match self.poll_send_body(&mut writer, cx) {
                    Poll::Ready(Err(e @ Error::Body(_))) => return Poll::Ready(Err(e)),
                    Poll::Ready(Err(e)) => write_failed = Some(e),
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                }
            }
            match ready!(self.poll_head(cx, is_head, max_head)) {
                Err(read) => Poll::Ready(Err(write_failed.take().unwrap_or(Error::Lost(read)))),
                Ok(head) => Poll::Ready(Ok(head)),
            }
        })
        .await?;
        if write_failed.is_some() {
            head.request_cut_short = true;
        } else if !writer.is_finished() {
            match head.body {
                Start::Stream(_) => head.writer = Some(writer),
                // The whole answer came before the whole request: the connection is out of step.
                Start::Complete(_) => {
                    self.reusable = false;
                    head.request_cut_short = true;
                }
            }
        }
        Ok(head)
    }

    /// Writes as much of the request body as the socket takes; ready once all of it is written.
    pub(crate) fn poll_send_body<B: RequestBody>(
        &mut self,
        writer: &mut BodyWriter<B>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error<B::Error>>> {
        let result = ready!(writer.poll_write(&mut self.io, cx));
        if result.is_err() {
            self.reusable = false;
        }
        Poll::Ready(result)
    }

    /// Reads until a final (non-1xx) response head is complete, and parses it.
    fn poll_head<B>(
        &mut self,
        cx: &mut Context<'_>,
        is_head: bool,
        max_head: usize,
    ) -> Poll<Result<Head<B>, Lost>> {
        loop {
            while !self.read.is_empty() {
                let before = self.read.len();
                match parse_head(&mut self.read, &mut self.reusable, is_head, max_head) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    // An informational response was skipped: parse what follows it.
                    Ok(None) if self.read.len() < before => continue,
                    Ok(None) => break,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            reserve(&mut self.read);
            match ready!(poll_read_buf(&mut self.io, cx, &mut self.read)) {
                Ok(0) => {
                    self.reusable = false;
                    return Poll::Ready(Err(Lost::new(
                        "the worker closed the connection before answering",
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    self.reusable = false;
                    return Poll::Ready(Err(Lost::because("reading the response", e)));
                }
            }
        }
    }

    /// Reads the next piece of a streamed body.
    pub(crate) fn poll_body(
        &mut self,
        decoder: &mut Decoder,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Lost>>> {
        loop {
            match decoder.decode(&mut self.read) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::Done) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    self.reusable = false;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            reserve(&mut self.read);
            let n = match ready!(poll_read_buf(&mut self.io, cx, &mut self.read)) {
                Ok(n) => n,
                Err(e) => {
                    self.reusable = false;
                    return Poll::Ready(Some(Err(Lost::because("reading the response body", e))));
                }
            };
            if n == 0 {
                self.reusable = false;
                if let Err(e) = decoder.on_eof() {
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

fn poll_read_buf(
    io: &mut WorkerSocket,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// The request line and headers, as the worker should see them.
pub(crate) fn encode_head(
    out: &mut Vec<u8>,
    req: &request::Parts,
    added: Added<'_>,
    chunked: bool,
) {
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &req.headers {
        // The body's framing is this connection's own; `Expect: 100-continue` was already
        // answered to the client by hyper when the body was first read.
        if name == TRANSFER_ENCODING || name == EXPECT || name == X_FORWARDED_FOR {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    write_forwarded_for(out, &req.headers, added.client_ip);
    out.extend_from_slice(b"\r\n");
    if let Some(id) = added.request_id {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(id);
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the head, and `body` behind it in the same write (`writev`) when the body is whole; a
/// failure before the first byte is `NotSent`.
async fn write_head<E>(io: &mut WorkerSocket, head: &[u8], body: &[u8]) -> Result<(), Error<E>> {
    let total = head.len() + body.len();
    let mut written = 0;
    while written < total {
        let (from_head, from_body) = if written < head.len() {
            (&head[written..], body)
        } else {
            (&[][..], &body[written - head.len()..])
        };
        // A plain `write` when there is no body: the bodiless request's path is unchanged.
        let wrote = if from_body.is_empty() {
            io.write(from_head).await
        } else {
            let slices = [IoSlice::new(from_head), IoSlice::new(from_body)];
            io.write_vectored(&slices).await
        };
        match wrote {
            Ok(0) => return Err(lost_or_not(written, io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) => return Err(lost_or_not(written, e)),
        }
    }
    Ok(())
}

fn lost_or_not<E>(written: usize, e: io::Error) -> Error<E> {
    if written == 0 {
        Error::NotSent(e)
    } else {
        Error::Lost(Lost::because("writing the request", e))
    }
}

/// The client's request body on its way to the worker: as is (`Content-Length`) or chunk by chunk.
#[derive(Debug)]
pub(crate) struct BodyWriter<B> {
    body: B,
    chunked: bool,
    /// Taken from the body and not yet written: a chunk-size line, the data, the closing bytes.
    pending: Option<(Bytes, Bytes, &'static [u8])>,
    /// The body has no more frames.
    ended: bool,
}

impl<B: RequestBody> BodyWriter<B> {
    fn is_finished(&self) -> bool {
        self.ended && self.pending.is_none()
    }

    fn poll_write(
        &mut self,
        io: &mut WorkerSocket,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error<B::Error>>> {
        loop {
            while let Some((prefix, data, suffix)) = &mut self.pending {
                let slices = [
                    IoSlice::new(prefix),
                    IoSlice::new(data),
                    IoSlice::new(suffix),
                ];
                let mut n = match ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices)) {
                    Ok(0) => {
                        return Poll::Ready(Err(lost_writing(io::ErrorKind::WriteZero.into())));
                    }
                    Ok(n) => n,
                    Err(e) => return Poll::Ready(Err(lost_writing(e))),
                };
                let from_prefix = n.min(prefix.len());
                prefix.advance(from_prefix);
                n -= from_prefix;
                let from_data = n.min(data.len());
                data.advance(from_data);
                n -= from_data;
                *suffix = &suffix[n.min(suffix.len())..];
                if prefix.is_empty() && data.is_empty() && suffix.is_empty() {
                    self.pending = None;
                }
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    self.ended = true;
                    if self.chunked {
                        self.pending = Some((Bytes::new(), Bytes::new(), b"0\r\n\r\n"));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(Error::Body(e))),
                Some(Ok(frame)) => {
                    // Trailers are not forwarded.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.pending = Some(if self.chunked {
                            let mut line = Vec::with_capacity(18);
                            write_chunk_size(data.len(), &mut line);
                            line.extend_from_slice(b"\r\n");
                            let size = Bytes::from(line);
                            (size, data, b"\r\n")
                        } else {
                            (Bytes::new(), data, b"")
                        });
                    }
                }
            }
        }
    }
}

fn lost_writing<E>(e: io::Error) -> Error<E> {
    Error::Lost(Lost::because("writing the request body", e))
}

/// Parses a response head at the start of `buf`: `None` when more bytes are needed. Informational
/// (1xx) responses are skipped.
pub(crate) fn parse_head<B>(
    buf: &mut BytesMut,
    reusable: &mut bool,
    is_head: bool,
    max_head: usize,
) -> Result<Option<Head<B>>, Lost> {
    let mut spans = Spans::new();
    let (len, code, version) = {
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < max_head => return Ok(None),
            Ok(httparse::Status::Partial) => {
                *reusable = false;
                return Err(Lost::new(
                    "the worker's response head is larger than MAX_HEADER_SIZE",
                ));
            }
            Err(e) => {
                *reusable = false;
                return Err(Lost::because("the worker's response head is malformed", e));
            }
        };
        spans.record(buf, resp.headers);
        (len, resp.code.unwrap_or(0), resp.version)
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| {
        *reusable = false;
        Lost::because("the worker answered an invalid status", format!("{code}"))
    })?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        *reusable = false;
        return Err(Lost::new(
            "the worker switched protocols on a request that asked for no upgrade",
        ));
    }
    if status.is_informational() {
        return Ok(None);
    }

    let version = if version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut keep_alive = version == Version::HTTP_11;
    // Room for the two headers the edge adds (X-Worker-Id, X-Request-Id), so adding them does not
    // grow the map.
    let spans = spans.as_slice();
    let mut headers = recycle::header_map(spans.len() + 2);
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut connection: Option<Bytes> = None;
    for at in spans {
        let name = HeaderName::from_bytes(at.name(&head));
        let Ok(name) = name else {
            *reusable = false;
            return Err(Lost::new("the worker sent an invalid header name"));
        };
        let raw = at.value_shared(&head);
        if name == CONNECTION {
            for token in raw.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    keep_alive = true;
                }
            }
            connection = Some(raw);
            continue;
        }
        if name == TRANSFER_ENCODING {
            // Only the last coding says how the message ends.
            let last = raw.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            continue;
        }
        if is_hop_by_hop(&name) {
            continue;
        }
        if name == CONTENT_LENGTH {
            let n = std::str::from_utf8(&raw)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok());
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(prior)) if n == prior => continue,
                _ => {
                    *reusable = false;
                    return Err(Lost::new("the worker sent an invalid Content-Length"));
                }
            }
        }
        let Ok(value) = HeaderValue::from_maybe_shared(raw) else {
            *reusable = false;
            return Err(Lost::new("the worker sent an invalid header value"));
        };
        headers.append(name, value);
    }
    if let Some(listed) = connection {
        // Headers the worker named in `Connection` are about this connection alone.
        for token in listed.split(|&b| b == b',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim_ascii()) {
                headers.remove(name);
            }
        }
    }
    *reusable &= keep_alive;

    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    let bodiless =
        is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let decoder = if bodiless {
        Decoder::Length(0)
    } else if let Some(chunked) = chunked {
        // Transfer-Encoding overrides Content-Length, and a message with both is suspect: close
        // the connection after it (RFC 9112 §6.3).
        if length.is_some() {
            headers.remove(CONTENT_LENGTH);
            *reusable = false;
        }
        if chunked {
            Decoder::Chunked(Chunk::Size)
        } else {
            *reusable = false;
            Decoder::UntilClose
        }
    } else if let Some(n) = length {
        Decoder::Length(n)
    } else {
        *reusable = false;
        Decoder::UntilClose
    };
    parts.headers = headers;
    let body = match decoder {
        Decoder::Length(n) if (buf.len() as u64) >= n => {
            Start::Complete(buf.split_to(n as usize).freeze())
        }
        decoder => Start::Stream(decoder),
    };
    Ok(Some(Head {
        parts,
        body,
        writer: None,
        request_cut_short: false,
    }))
}

/// Where a streamed response body stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decoder {
    /// This many bytes are still to come.
    Length(u64),
    /// Chunked.
    Chunked(Chunk),
    /// Whatever arrives until the worker closes the connection.
    UntilClose,
    /// Read to the end.
    Done,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// What one step of decoding gave.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    Data(Bytes),
    NeedMore,
    Done,
}

impl Decoder {
    /// Exactly how much body is left, when that is known.
    pub(crate) fn exact_remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of body out of `buf`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Lost> {
        loop {
            match self {
                Decoder::Done => return Ok(Decoded::Done),
                Decoder::Length(0) => {
                    *self = Decoder::Done;
                    return Ok(Decoded::Done);
                }
                Decoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = (*left).min(buf.len() as u64);
                    *left -= take;
                    let data = buf.split_to(take as usize).freeze();
                    if *left == 0 {
                        *self = Decoder::Done;
                    }
                    return Ok(Decoded::Data(data));
                }
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Decoder::Chunked(chunk) => match chunk {
                    Chunk::Size => match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, 0))) => {
                            buf.advance(used);
                            *chunk = Chunk::Trailers;
                        }
                        Ok(httparse::Status::Complete((used, size))) => {
                            buf.advance(used);
                            *chunk = Chunk::Data(size);
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_CHUNK_LINE => {
                            return Ok(Decoded::NeedMore);
                        }
                        _ => return Err(Lost::new("the worker sent an invalid chunk size")),
                    },
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(Decoded::NeedMore);
                        }
                        let take = (*left).min(buf.len() as u64);
                        *left -= take;
                        if *left == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Ok(Decoded::Data(buf.split_to(take as usize).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(Decoded::NeedMore);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(Lost::new(
                                "a chunk of the worker's body did not end in CRLF",
                            ));
                        }
                        buf.advance(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => match buf.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            buf.advance(2);
                            *self = Decoder::Done;
                        }
                        // Trailers are not forwarded.
                        Some(end) => buf.advance(end + 2),
                        None if buf.len() < MAX_CHUNK_LINE => return Ok(Decoded::NeedMore),
                        None => return Err(Lost::new("the worker's trailers are too large")),
                    },
                },
            }
        }
    }

    /// The worker closed the connection: the end of the body, or a body cut short.
    pub(crate) fn on_eof(&mut self) -> Result<(), Lost> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(Lost::new(
                "the worker closed the connection in the middle of the body",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body type is immaterial to parsing a response head.
    type Head = super::Head<http_body_util::Empty<Bytes>>;

    fn head(raw: &[u8], is_head: bool) -> (Result<Option<Head>, Lost>, bool, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let mut reusable = true;
        let parsed = parse_head(&mut buf, &mut reusable, is_head, 64 * 1024);
        (parsed, reusable, buf)
    }

    fn complete(raw: &[u8]) -> (Head, bool, BytesMut) {
        let (parsed, reusable, buf) = head(raw, false);
        (parsed.unwrap().unwrap(), reusable, buf)
    }

    #[test]
    fn a_small_response_comes_whole_and_leaves_the_connection_reusable() {
        let (h, reusable, rest) = complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-type: text/plain\r\n\r\npong",
        );
        assert_eq!(h.parts.status, 200);
        assert_eq!(h.parts.headers["content-type"], "text/plain");
        assert_eq!(h.parts.headers["content-length"], "4");
        assert!(matches!(h.body, Start::Complete(ref b) if b == "pong"));
        assert!(reusable);
        assert!(rest.is_empty());
    }

    #[test]
    fn a_partial_head_asks_for_more_and_an_oversized_one_is_refused() {
        let (parsed, _, _) = head(b"HTTP/1.1 200 OK\r\ncontent-le", false);
        assert!(matches!(parsed, Ok(None)));
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx: "[..]);
        buf.extend_from_slice(&[b'a'; 100]);
        let mut reusable = true;
        let parsed = parse_head::<()>(&mut buf, &mut reusable, false, 64);
        assert!(parsed.is_err());
        assert!(!reusable);
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
        let (h, reusable, _) = complete(
            b"HTTP/1.1 200 OK\r\nconnection: close, x-secret\r\nkeep-alive: timeout=5\r\n\
              x-secret: 1\r\nx-kept: 2\r\ncontent-length: 0\r\n\r\n",
        );
        let mut names: Vec<_> = h.parts.headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "x-kept"]);
        assert!(!reusable, "Connection: close");
    }

    #[test]
    fn informational_responses_are_skipped() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"[..],
        );
        let mut reusable = true;
        assert!(matches!(
            parse_head::<()>(&mut buf, &mut reusable, false, 1024),
            Ok(None)
        ));
        let h = parse_head::<()>(&mut buf, &mut reusable, false, 1024)
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.status, 201);
        assert!(reusable);
    }

    #[test]
    fn a_switch_of_protocols_or_a_bad_length_is_the_workers_fault() {
        for raw in [
            &b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +4\r\n\r\n",
            b"HTTP/9.9 200 OK\r\n\r\n",
        ] {
            let (parsed, reusable, _) = head(raw, false);
            assert!(parsed.is_err(), "{raw:?}");
            assert!(!reusable, "{raw:?}");
        }
    }

    #[test]
    fn head_responses_and_204_have_no_body_whatever_their_length_says() {
        let (parsed, reusable, rest) = head(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", true);
        let h = parsed.unwrap().unwrap();
        assert!(matches!(h.body, Start::Complete(ref b) if b.is_empty()));
        assert_eq!(h.parts.headers["content-length"], "99");
        assert!(reusable && rest.is_empty());
        let (h, _, _) = complete(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert!(matches!(h.body, Start::Complete(ref b) if b.is_empty()));
    }

    #[test]
    fn without_a_length_the_body_runs_to_the_close() {
        let (h, reusable, _) = complete(b"HTTP/1.1 200 OK\r\n\r\nsome");
        assert_eq!(
            match h.body {
                Start::Stream(d) => d,
                Start::Complete(_) => panic!("complete"),
            },
            Decoder::UntilClose
        );
        assert!(!reusable);
        let (h, reusable, _) = complete(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(matches!(h.body, Start::Complete(_)));
        assert!(!reusable, "HTTP/1.0 without keep-alive closes");
    }

    #[test]
    fn transfer_encoding_wins_over_content_length_and_is_not_forwarded() {
        let (h, reusable, _) =
            complete(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n");
        assert!(matches!(
            h.body,
            Start::Stream(Decoder::Chunked(Chunk::Size))
        ));
        assert!(h.parts.headers.is_empty(), "{:?}", h.parts.headers);
        assert!(!reusable, "both framings: close after it");
    }

    fn decode_all(decoder: &mut Decoder, pieces: &[&[u8]]) -> Result<Vec<u8>, Lost> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::Done => return Ok(out),
                }
            }
        }
        Err(Lost::because(
            "not done",
            format!("{decoder:?}, got {out:?}"),
        ))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire: &[u8] =
            b"4\r\nWiki\r\n7;ext=1\r\npedia i\r\nB\r\nn \r\nchunks.\r\n0\r\nx-t: 1\r\n\r\n";
        for cut in 0..wire.len() {
            let mut d = Decoder::Chunked(Chunk::Size);
            let body = decode_all(&mut d, &[&wire[..cut], &wire[cut..]]).unwrap();
            assert_eq!(body, b"Wikipedia in \r\nchunks.", "cut at {cut}");
            assert_eq!(d, Decoder::Done);
        }
    }

    #[test]
    fn bad_chunks_are_errors() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcXX", &[b'1'; 5000]] {
            let mut d = Decoder::Chunked(Chunk::Size);
            assert!(decode_all(&mut d, &[wire]).is_err(), "{wire:?}");
        }
    }

    #[test]
    fn a_length_body_stops_at_its_length_and_a_short_one_is_an_error_at_eof() {
        let mut d = Decoder::Length(5);
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from("hel"))
        );
        assert_eq!(d.decode(&mut buf).unwrap(), Decoded::NeedMore);
        assert!(d.on_eof().is_err());
        buf.extend_from_slice(b"loEXTRA");
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from("lo"))
        );
        assert_eq!(d.decode(&mut buf).unwrap(), Decoded::Done);
        assert_eq!(&buf[..], b"EXTRA");
        let mut d = Decoder::UntilClose;
        assert!(d.on_eof().is_ok());
        assert_eq!(d, Decoder::Done);
    }

    #[test]
    fn the_request_head_drops_its_framing_and_expect_and_adds_the_forwarding_headers() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = Method::POST;
        parts.uri = "/echo?x=1".parse().unwrap();
        parts.headers.insert("host", HeaderValue::from_static("a"));
        parts
            .headers
            .insert(EXPECT, HeaderValue::from_static("100-continue"));
        parts
            .headers
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        parts
            .headers
            .append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        parts
            .headers
            .append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        let added = Added {
            client_ip: b"127.0.0.1",
            request_id: Some(b"id-1"),
        };
        let mut out = Vec::new();
        encode_head(&mut out, &parts, added, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /echo?x=1 HTTP/1.1\r\nhost: a\r\n\
             x-forwarded-for: 1.1.1.1, 2.2.2.2, 127.0.0.1\r\nx-request-id: id-1\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
    }

    /// A request body for these tests: whole in memory (`Some`), or a stream that never ends.
    #[derive(Default)]
    struct TestBody(Option<Bytes>, bool);

    impl Body for TestBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            let this = self.get_mut();
            match this.0.take() {
                Some(data) => Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
                None if this.1 => Poll::Pending,
                None => Poll::Ready(None),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none() && !self.1
        }
    }

    impl RequestBody for TestBody {
        fn whole(&self) -> Option<&Bytes> {
            self.0.as_ref().filter(|_| !self.1)
        }
    }

    fn post(len: usize) -> request::Parts {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = Method::POST;
        parts.uri = "/echo".parse().unwrap();
        parts.headers.insert("host", HeaderValue::from_static("w"));
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        parts
    }

    const ADDED: Added<'static> = Added {
        client_ip: b"127.0.0.1",
        request_id: None,
    };

    fn connected() -> (WorkerConn, tokio::net::UnixStream) {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let conn = WorkerConn {
            io: WorkerSocket::from_tokio(ours).unwrap(),
            read: BytesMut::new(),
            write: Vec::new(),
            reusable: true,
        };
        (conn, theirs)
    }

    #[test]
    fn a_connection_moved_to_another_runtime_works_there_after_the_first_is_gone() {
        use std::io::{Read, Write};
        // The worker's side, blocking, on a thread of its own: two exchanges.
        let (ours, mut worker) = std::os::unix::net::UnixStream::pair().unwrap();
        let answering = std::thread::spawn(move || {
            for _ in 0..2 {
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.ends_with(b"\r\n\r\n") {
                    let n = worker.read(&mut buf).unwrap();
                    assert!(n > 0, "the request ended early");
                    got.extend_from_slice(&buf[..n]);
                }
                worker
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
            }
        });
        let (mut req, ()) = http::Request::new(()).into_parts();
        req.uri = "/ping".parse().unwrap();
        req.headers.insert("host", HeaderValue::from_static("w"));
        async fn exchange(conn: &mut WorkerConn, req: &request::Parts) {
            let head = conn
                .send(req, ADDED, &mut TestBody(None, false), 1024)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(head.body, Start::Complete(ref b) if &b[..] == b"ok"));
        }
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let first = runtime();
        let conn = first.block_on(async {
            ours.set_nonblocking(true).unwrap();
            let stream = tokio::net::UnixStream::from_std(ours).unwrap();
            let mut conn = Box::new(WorkerConn {
                io: WorkerSocket::from_tokio(stream).unwrap(),
                read: BytesMut::new(),
                write: Vec::new(),
                reusable: true,
            });
            exchange(&mut conn, &req).await;
            conn
        });
        // The first runtime's driver, which the socket was registered with, is gone: only a
        // socket registered anew can be driven.
        drop(first);
        runtime().block_on(async {
            let mut conn = conn.rehome().unwrap();
            exchange(&mut conn, &req).await;
            assert!(conn.is_reusable());
        });
        answering.join().unwrap();
    }

    #[tokio::test]
    async fn a_whole_body_goes_out_behind_its_head_and_leaves_nothing_to_stream() {
        use tokio::io::AsyncReadExt;
        let (mut conn, mut worker) = connected();
        let body = Bytes::from(vec![b'x'; 4096]);
        let mut sent = TestBody(Some(body.clone()), false);
        let answer = async {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while !got.ends_with(&body[..]) {
                let n = worker.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                got.extend_from_slice(&buf[..n]);
            }
            worker
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            got
        };
        let req = post(4096);
        let (head, got) = tokio::join!(conn.send(&req, ADDED, &mut sent, 1024), answer);
        let head = head.unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&got);
        let (request_head, sent_body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            request_head.contains("content-length: 4096"),
            "{request_head}"
        );
        assert!(
            !request_head.contains("transfer-encoding"),
            "{request_head}"
        );
        assert_eq!(sent_body.as_bytes(), &body[..], "exactly the body, once");
        assert!(head.writer.is_none(), "nothing left to write");
        assert!(!head.request_cut_short);
        assert!(sent.0.is_none(), "the body went with the head");
        assert!(matches!(head.body, Start::Complete(ref b) if &b[..] == b"ok"));
        assert!(conn.is_reusable(), "request and answer both whole");
    }

    #[tokio::test]
    async fn a_connection_whose_request_body_was_not_all_sent_is_never_reused() {
        use tokio::io::AsyncReadExt;
        // RFC 9112 §9.3: the worker answers (whole) before the body is all sent; what is left of
        // the body would be read as the next request on this connection.
        let (mut conn, mut worker) = connected();
        let mut streaming = TestBody(Some(Bytes::from_static(b"part")), true);
        let answer = async {
            let mut buf = vec![0u8; 4096];
            let n = worker.read(&mut buf).await.unwrap();
            assert!(n > 0);
            worker
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
        };
        let req = post(100);
        let (head, ()) = tokio::join!(conn.send(&req, ADDED, &mut streaming, 1024), answer);
        let head = head.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.parts.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            head.request_cut_short,
            "the client's connection must close too"
        );
        assert!(
            !conn.is_reusable(),
            "a connection mid-body went back to the pool"
        );
    }
}

/// Property tests: the response-head parser and the body decoders on arbitrary bytes, and the
/// chunked round trip.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;

    const FRAGMENTS: &[&str] = &[
        "HTTP/1.1 ",
        "HTTP/1.0 ",
        "HTTP/9.9 ",
        "200 OK",
        "100 Continue",
        "101 x",
        "204 ",
        "999 ",
        "\r\n",
        "\n",
        "Content-Length: 3",
        "Content-Length: 4",
        "content-length: -1",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip",
        "Connection: close",
        ": x",
        "\0",
        "abc",
        "\r\n\r\n",
        "3\r\nabc\r\n0\r\n\r\n",
    ];

    fn http_ish() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            vec(any::<u8>(), 0..600),
            vec(select(FRAGMENTS), 0..30).prop_map(|parts| parts.concat().into_bytes()),
        ]
    }

    /// Decodes what `decoder` can of `pieces`, fed one after the other; every step either gives
    /// data (at least a byte) or asks for more, so the loop ends.
    fn decode_pieces(decoder: &mut Decoder, pieces: &[&[u8]]) -> Result<(Vec<u8>, BytesMut), Lost> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => {
                        assert!(!d.is_empty(), "an empty piece of body would loop");
                        out.extend_from_slice(&d);
                    }
                    Decoded::NeedMore => break,
                    Decoded::Done => {
                        // What follows the body stays for the next response.
                        for rest in &pieces[i + 1..] {
                            buf.extend_from_slice(rest);
                        }
                        return Ok((out, buf));
                    }
                }
            }
        }
        Ok((out, buf))
    }

    /// A chunked encoding of `chunks`, with optional chunk extensions and trailers.
    fn chunked(chunks: &[Vec<u8>], ext: bool, trailers: bool) -> Vec<u8> {
        let mut wire = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            crate::http::head::write_chunk_size(c.len(), &mut wire);
            if ext {
                wire.extend_from_slice(b";name=value");
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        if trailers {
            wire.extend_from_slice(b"x-trailer: 1\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    proptest! {
        #![proptest_config(crate::prop::config())]

        /// Arbitrary bytes never panic the response parser, and it always ends: a head, an error,
        /// or a request for more bytes.
        #[test]
        fn prop_response_parser_survives_arbitrary_bytes(raw in http_ish(), max in 16usize..700, is_head in any::<bool>()) {
            let mut buf = BytesMut::from(&raw[..]);
            let mut reusable = true;
            loop {
                let before = buf.len();
                match parse_head::<()>(&mut buf, &mut reusable, is_head, max) {
                    // An informational response was skipped: the loop goes on only if it took bytes.
                    Ok(None) if buf.len() < before => continue,
                    Ok(None) => {
                        prop_assert!(before < max);
                        break;
                    }
                    Ok(Some(_)) => break,
                    Err(_) => {
                        prop_assert!(!reusable, "a bad answer never leaves its connection pooled");
                        break;
                    }
                }
            }
        }

        /// Arbitrary bytes never panic the chunked decoder and never loop, however they are split.
        #[test]
        fn prop_chunked_decoder_survives_arbitrary_bytes(raw in http_ish(), cut in any::<prop::sample::Index>()) {
            let cut = cut.index(raw.len() + 1);
            let mut d = Decoder::Chunked(Chunk::Size);
            let _ = decode_pieces(&mut d, &[&raw[..cut], &raw[cut..]]);
        }

        /// Encode then decode gives the body back, across any split, and leaves what follows.
        #[test]
        fn prop_chunked_bodies_round_trip(
            chunks in vec(vec(any::<u8>(), 0..300), 0..8),
            ext in any::<bool>(),
            trailers in any::<bool>(),
            cuts in vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut wire = chunked(&chunks, ext, trailers);
            wire.extend_from_slice(b"NEXT");
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for to in at {
                pieces.push(&wire[from..to]);
                from = to;
            }
            pieces.push(&wire[from..]);
            let mut d = Decoder::Chunked(Chunk::Size);
            let (body, rest) = decode_pieces(&mut d, &pieces).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(body, chunks.concat());
            prop_assert_eq!(d, Decoder::Done);
            prop_assert_eq!(&rest[..], b"NEXT");
        }

        /// A length-delimited body stops at its length, however it arrives.
        #[test]
        fn prop_length_bodies_round_trip(body in vec(any::<u8>(), 0..2000), cut in any::<prop::sample::Index>()) {
            let mut wire = body.clone();
            wire.extend_from_slice(b"NEXT");
            let cut = cut.index(wire.len() + 1);
            let mut d = Decoder::Length(body.len() as u64);
            let (got, rest) = decode_pieces(&mut d, &[&wire[..cut], &wire[cut..]])
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, body);
            prop_assert_eq!(&rest[..], b"NEXT");
        }

        /// A response head written out is read back as the same status, headers and body.
        #[test]
        fn prop_response_heads_round_trip(
            code in 200u16..600,
            headers in vec((select(&["x-a", "x-b", "content-type", "set-cookie"][..]), "[a-z0-9 ]{0,12}"), 0..6),
            body in vec(any::<u8>(), 0..200),
        ) {
            let mut wire = format!("HTTP/1.1 {code} Whatever\r\n").into_bytes();
            for (n, v) in &headers {
                wire.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            wire.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            wire.extend_from_slice(&body);
            let mut buf = BytesMut::from(&wire[..]);
            let mut reusable = true;
            let head = parse_head::<()>(&mut buf, &mut reusable, false, 64 * 1024);
            let Ok(Some(head)) = head else {
                return Err(TestCaseError::fail("not parsed"));
            };
            prop_assert_eq!(head.parts.status.as_u16(), code);
            prop_assert!(reusable);
            for (n, v) in &headers {
                let values: Vec<_> = head.parts.headers.get_all(*n).iter().map(|v| v.as_bytes().to_vec()).collect();
                prop_assert!(values.contains(&v.trim().as_bytes().to_vec()), "{} lost", n);
            }
            let bodiless = code == 204 || code == 304;
            match head.body {
                Start::Complete(b) if bodiless => prop_assert!(b.is_empty()),
                Start::Complete(b) => prop_assert_eq!(&b[..], &body[..]),
                Start::Stream(_) => return Err(TestCaseError::fail("the whole body came with the head")),
            }
        }
    }
}
