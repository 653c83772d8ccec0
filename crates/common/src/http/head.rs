//! What the request parser (the plain-request [`server`](super::server)) and the response parser
//! (the worker [`client`](super::client)) share: where each header of a parsed head lies, and how
//! the read buffer grows.
//!
//! Both parse with httparse (hyper's own parser), which hands back headers that borrow the read
//! buffer. To build an `http` message without copying, each parser first notes where every name and
//! value lies ([`Spans`]), then freezes the head into one `Bytes` and slices the values out of it.
//!
//! Also the small writers both sides' framing needs: chunk-size lines and the `Date` header.
//!
//! Depends on nothing else in the crate.

use std::cell::RefCell;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

/// Most headers a head may carry (hyper's default too); a request with more gets 431, a worker's
/// response with more is refused.
pub(crate) const MAX_HEADERS: usize = 100;

/// How much a read buffer grows by when it runs out of room.
pub(crate) const READ_CHUNK: usize = 8 * 1024;

/// Headers whose positions are kept on the stack; a head with more spills to the heap. (Zeroing room
/// for all of [`MAX_HEADERS`] on every response was 10% of the master's instructions, measured with
/// callgrind.)
const INLINE_HEADERS: usize = 16;

/// Where one header's name and value lie in its head, as byte offsets. A head is at most
/// `MAX_HEADER_SIZE` long, so `u32` is plenty and keeps the span table small.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeaderAt {
    name: (u32, u32),
    value: (u32, u32),
}

impl HeaderAt {
    /// The name's bytes in `head`.
    pub(crate) fn name<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.name.0 as usize..self.name.1 as usize]
    }

    /// The value's bytes in `head`.
    pub(crate) fn value<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.value.0 as usize..self.value.1 as usize]
    }

    /// The value as a slice of the shared head: no copy.
    pub(crate) fn value_shared(&self, head: &Bytes) -> Bytes {
        head.slice(self.value.0 as usize..self.value.1 as usize)
    }
}

/// The spans of every header of one head.
pub(crate) struct Spans {
    inline: [HeaderAt; INLINE_HEADERS],
    spilled: Vec<HeaderAt>,
    len: usize,
}

impl Spans {
    pub(crate) fn new() -> Self {
        Self {
            inline: [HeaderAt::default(); INLINE_HEADERS],
            spilled: Vec::new(),
            len: 0,
        }
    }

    /// Notes where each of `headers` lies in `buf`, the buffer httparse parsed them from.
    pub(crate) fn record(&mut self, buf: &[u8], headers: &[httparse::Header<'_>]) {
        self.len = headers.len();
        let at = if self.len <= INLINE_HEADERS {
            &mut self.inline[..self.len]
        } else {
            self.spilled.resize(self.len, HeaderAt::default());
            &mut self.spilled[..]
        };
        for (slot, header) in at.iter_mut().zip(headers) {
            *slot = HeaderAt {
                name: offset(buf, header.name.as_bytes()),
                value: offset(buf, header.value),
            };
        }
    }

    pub(crate) fn as_slice(&self) -> &[HeaderAt] {
        if self.len <= INLINE_HEADERS {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }
}

/// Where `part`, a sub-slice of `buf`, starts and ends in it.
pub(crate) fn offset(buf: &[u8], part: &[u8]) -> (u32, u32) {
    let start = (part.as_ptr() as usize - buf.as_ptr() as usize) as u32;
    (start, start + part.len() as u32)
}

/// Makes room for the next read: grows by [`READ_CHUNK`] once less than an eighth of it is free,
/// so a buffer is not regrown for every small read.
pub(crate) fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 8 {
        buf.reserve(READ_CHUNK);
    }
}

/// Writes `n` in hex, as a chunk-size line wants it (RFC 9112 §7.1): no leading zeros, no prefix.
pub(crate) fn write_chunk_size(mut n: usize, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes a `Date` header, formatted at most once a second per thread.
pub(crate) fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}
