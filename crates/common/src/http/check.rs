//! What a request must be before anything serves it: the checks of RFC 9112 (and RFC 9110 where
//! it names the status) that hyper leaves to the server, shared by every place a request head is
//! first seen — the plain-request parser, the edge's hyper path, the handoff peek and a worker
//! serving a client directly.
//!
//! Each check is a byte scan or a match on a few names: nothing here allocates, and a plain GET
//! meets only [`valid_host`] and [`is_known_method`].
//!
//! A refused request closes its connection: once a head is wrong, what follows it on the same
//! connection cannot be trusted to be framed as the client meant (RFC 9112 §9.6, §11.2).
//!
//! Depends on nothing else in the crate but the server's `Date` writer.

use http::header::{HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

/// Why a request is refused, and the answer it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    /// A short machine-readable word, the `error` of the JSON body.
    pub code: &'static str,
    /// One sentence for a person.
    pub message: &'static str,
}

impl Refusal {
    const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
        }
    }

    /// The whole response, head and JSON body, closing the connection.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let body = self.body();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\nconnection: close\r\n");
        super::head::date(out);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
    }

    /// The JSON body every edge error has: `{"error", "message", "status"}`.
    pub(crate) fn body(&self) -> String {
        serde_json::json!({
            "error": self.code,
            "message": self.message,
            "status": self.status.as_u16(),
        })
        .to_string()
    }
}

pub(crate) const NO_HOST: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "bad_request",
    "an HTTP/1.1 request must carry exactly one valid Host header",
);
pub(crate) const BAD_HOST: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "bad_request",
    "the request carries more than one Host header, or an invalid one",
);
pub(crate) const CONNECT: Refusal = Refusal::new(
    StatusCode::NOT_IMPLEMENTED,
    "not_implemented",
    "CONNECT is not supported: this server is not a forward proxy",
);
pub(crate) const UNKNOWN_METHOD: Refusal = Refusal::new(
    StatusCode::NOT_IMPLEMENTED,
    "not_implemented",
    "the request method is not one this server implements",
);
pub(crate) const BAD_FRAMING: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "bad_request",
    "Transfer-Encoding must end in chunked, applied once, and only in HTTP/1.1",
);
pub(crate) const UNKNOWN_CODING: Refusal = Refusal::new(
    StatusCode::NOT_IMPLEMENTED,
    "not_implemented",
    "the request uses a transfer coding this server does not implement",
);
pub(crate) const HEAD_TOO_LARGE: Refusal = Refusal::new(
    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    "header_too_large",
    "the request head is larger than MAX_HEADER_SIZE",
);
pub(crate) const URI_TOO_LONG: Refusal = Refusal::new(
    StatusCode::URI_TOO_LONG,
    "uri_too_long",
    "the request line is longer than MAX_HEADER_SIZE",
);
pub(crate) const BAD_TARGET: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "bad_request",
    "a request target has no fragment (#)",
);
pub(crate) const BODY_TOO_LARGE: Refusal = Refusal::new(
    StatusCode::PAYLOAD_TOO_LARGE,
    "payload_too_large",
    "request body is larger than MAX_BODY_SIZE",
);
pub(crate) const BODY_STALLED: Refusal = Refusal::new(
    StatusCode::REQUEST_TIMEOUT,
    "request_timeout",
    "the request body sent nothing for BODY_TIMEOUT",
);
pub(crate) const BAD_BODY: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "bad_request",
    "the request body could not be read (bad framing, or the client went away)",
);
pub(crate) const BAD_LENGTH: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "bad_request",
    "Content-Length must be one decimal number of bytes, the same on every line",
);
pub(crate) const LENGTH_AND_CODING: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "bad_request",
    "a request may not carry both Content-Length and Transfer-Encoding",
);
pub(crate) const BAD_VERSION: Refusal = Refusal::new(
    StatusCode::HTTP_VERSION_NOT_SUPPORTED,
    "http_version_not_supported",
    "this server speaks HTTP/1.0 and HTTP/1.1 only",
);

/// The methods served (RFC 9110 §9, less CONNECT, and PATCH of RFC 5789). Methods are
/// case-sensitive (RFC 9110 §9.1), so `get` is not GET: it is a method nobody here implements,
/// and RFC 9110 §9.1 says that is 501.
pub(crate) fn is_known_method(m: &Method) -> bool {
    *m == Method::GET
        || *m == Method::POST
        || *m == Method::HEAD
        || *m == Method::PUT
        || *m == Method::DELETE
        || *m == Method::OPTIONS
        || *m == Method::PATCH
        || *m == Method::TRACE
}

/// Whether `v` is a valid `Host` value: `uri-host [ ":" port ]` (RFC 9110 §7.2, with `uri-host`
/// and `port` from RFC 3986 §3.2.2 and §3.2.3). An empty value is valid: it is what a client sends
/// for a target URI without an authority (RFC 9112 §3.2).
pub(crate) fn valid_host(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    let (host, port) = if let Some(inside) = v.strip_prefix(b"[") {
        // IP-literal: "[" ( IPv6address / IPvFuture ) "]".
        let Some(end) = inside.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &inside[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b == b':' || is_unreserved(b) || is_sub_delim(b))
        {
            return false;
        }
        (&[][..], &inside[end + 1..])
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &[][..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    port_ok && valid_reg_name(host)
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (RFC 3986 §3.2.2); IPv4 addresses
/// are reg-names as far as the bytes go.
fn valid_reg_name(mut s: &[u8]) -> bool {
    while let Some((&b, rest)) = s.split_first() {
        if b == b'%' {
            match rest {
                [h, l, tail @ ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => s = tail,
                _ => return false,
            }
        } else if is_unreserved(b) || is_sub_delim(b) {
            s = rest;
        } else {
            return false;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Longest client-sent `X-Request-Id` passed on; a longer one is replaced by a minted id.
pub(crate) const MAX_REQUEST_ID: usize = 64;

/// Whether a client's `X-Request-Id` may be passed on and reflected: short, and of characters
/// that are safe in any log line, header or URL (`[A-Za-z0-9._-]`).
pub(crate) fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a parsed request head before it is served (or routed: the handoff peek).
///
/// `max_head` is `MAX_HEADER_SIZE`; the head's size is measured from its parts, as written with
/// single spaces, because hyper (which parsed it) can accept a head larger than its buffer limit
/// when the head arrived in one read behind another request.
pub(crate) fn request(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    max_head: usize,
) -> Result<(), Refusal> {
    // RFC 9110 §9.3.6: CONNECT asks for a tunnel to another host; this is an origin's gateway,
    // not a forward proxy. Refused here, before hyper's upgrade machinery would take it.
    if *method == Method::CONNECT {
        return Err(CONNECT);
    }
    // RFC 9110 §9.1: an unrecognized method is 501.
    if !is_known_method(method) {
        return Err(UNKNOWN_METHOD);
    }
    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, with more than one Host line, or
    // with an invalid Host value. (HTTP/1.0 clients may leave it out.)
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => return Err(NO_HOST),
        (None, _) => {}
        (Some(host), None) if valid_host(host.as_bytes()) => {}
        _ => return Err(BAD_HOST),
    }
    transfer_encoding(version, headers)?;
    if head_size(method, uri, headers) > max_head {
        return Err(HEAD_TOO_LARGE);
    }
    Ok(())
}

/// The transfer codings of a request (RFC 9112 §6.1, §6.3, §7).
fn transfer_encoding(version: Version, headers: &HeaderMap) -> Result<(), Refusal> {
    let mut values = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    if values.peek().is_none() {
        return Ok(());
    }
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    if version != Version::HTTP_11 {
        return Err(BAD_FRAMING);
    }
    let mut chunked = 0usize;
    let mut last_chunked = false;
    let mut others = false;
    for value in values {
        // A list (RFC 9110 §5.6.1), possibly over several field lines, with empty elements
        // allowed; coding names are case-insensitive (RFC 9112 §7).
        for coding in value.as_bytes().split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if coding.is_empty() {
                continue;
            }
            last_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if last_chunked {
                chunked += 1;
            } else {
                others = true;
            }
        }
    }
    // RFC 9112 §6.1: chunked must not be applied more than once; §6.3: when chunked is not the
    // final coding the length cannot be known, a MUST-400 (which wins over the 501 below).
    if chunked != 1 || !last_chunked {
        return Err(BAD_FRAMING);
    }
    // RFC 9112 §6.1: a transfer coding the server does not understand is 501. Decoding the
    // chunking and forwarding the rest would silently drop the coding (gzip, say).
    if others {
        return Err(UNKNOWN_CODING);
    }
    Ok(())
}

/// What one `Content-Length` field line of a request says (RFC 9112 §6.3, RFC 9110 §8.6): the
/// length, and whether the line listed it more than once (`5, 5`, which a recipient may take as
/// one value). `None` for anything else: a value that is empty, not all digits (a sign, a space, a
/// hex prefix), a list whose values differ, or a number past `u64` — each a request whose body
/// cannot be delimited, which RFC 9112 §6.3 rule 5 says is a 400 and the end of the connection.
pub(crate) fn content_length(value: &[u8]) -> Option<(u64, bool)> {
    fn number(digits: &[u8]) -> Option<u64> {
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits.iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
    }
    if let Some(n) = number(value) {
        return Some((n, false));
    }
    let mut values = value.split(|&b| b == b',').map(|v| number(v.trim_ascii()));
    let first = values.next()??;
    for v in values {
        if v? != first {
            return None;
        }
    }
    Some((first, true))
}

/// How long the head would be written as `METHOD target HTTP/1.1\r\n` and `name: value\r\n` lines.
pub(crate) fn head_size(method: &Method, uri: &Uri, headers: &HeaderMap) -> usize {
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + 8);
    let lines: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    method.as_str().len() + 1 + target + 11 + lines + 2
}

/// A head httparse could not take, looked at closer: the request line's own faults, which hyper
/// would answer with the wrong status (400 or 431). `None` leaves the refusal to hyper.
///
/// `buf` starts with the head (as much of it as was read).
pub(crate) fn request_line(buf: &[u8], max_head: usize) -> Option<Refusal> {
    // RFC 9112 §2.2: empty lines before the request line may be ignored.
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let Some(end) = line.iter().position(|&b| b == b'\n') else {
        // RFC 9112 §3: a request line (so a target) longer than any the server will parse is
        // 414. Only when the line alone outgrew the whole head limit.
        return (buf.len() >= max_head).then_some(URI_TOO_LONG);
    };
    if start + end >= max_head {
        return Some(URI_TOO_LONG);
    }
    let line = line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]);
    // RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT. A well-formed version other than
    // 1.0 and 1.1 is 505 (RFC 9110 §15.6.6); anything else in that place is a bad request.
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit()
                && minor.is_ascii_digit()
                && !(*major == b'1' && (*minor == b'0' || *minor == b'1')) =>
        {
            Some(BAD_VERSION)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn check(method: &str, version: Version, pairs: &[(&str, &str)]) -> Result<(), Refusal> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        request(
            &method,
            &"/".parse().unwrap(),
            version,
            &headers(pairs),
            1 << 16,
        )
    }

    #[test]
    fn host_values_follow_the_uri_grammar() {
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:80",
            "[::1]:8000",
            "[v1.x]",
            "a%41b",
            "",
            "x:",
        ] {
            assert!(valid_host(good.as_bytes()), "{good:?} is valid");
        }
        for bad in [
            "a b",
            "evil.com/path",
            "user@host",
            "host:80x",
            "[::1",
            "[]",
            "%4",
            "h\"",
            "a:1:2",
            "[::1]x",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?} is invalid");
        }
    }

    #[test]
    fn a_request_needs_exactly_one_valid_host_in_http_1_1() {
        let v11 = Version::HTTP_11;
        assert_eq!(check("GET", v11, &[("host", "a")]), Ok(()));
        assert_eq!(check("GET", v11, &[]), Err(NO_HOST));
        assert_eq!(
            check("GET", v11, &[("host", "a"), ("host", "b")]),
            Err(BAD_HOST)
        );
        assert_eq!(check("GET", v11, &[("host", "a/b")]), Err(BAD_HOST));
        assert_eq!(
            check("GET", Version::HTTP_10, &[]),
            Ok(()),
            "1.0 may omit it"
        );
    }

    #[test]
    fn connect_and_unknown_methods_are_501() {
        let host = [("host", "a")];
        assert_eq!(check("CONNECT", Version::HTTP_11, &host), Err(CONNECT));
        assert_eq!(check("get", Version::HTTP_11, &host), Err(UNKNOWN_METHOD));
        assert_eq!(
            check("PROPFIND", Version::HTTP_11, &host),
            Err(UNKNOWN_METHOD)
        );
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
        ] {
            assert_eq!(check(m, Version::HTTP_11, &host), Ok(()), "{m}");
        }
    }

    #[test]
    fn transfer_codings_must_end_in_one_chunked_and_be_known() {
        let te = |values: &[&str]| {
            let mut pairs = vec![("host", "a")];
            pairs.extend(values.iter().map(|v| ("transfer-encoding", *v)));
            check("POST", Version::HTTP_11, &pairs)
        };
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["Chunked"]), Ok(()), "case-insensitive");
        assert_eq!(te(&[" , chunked"]), Ok(()), "empty list elements");
        assert_eq!(te(&["gzip, chunked"]), Err(UNKNOWN_CODING));
        assert_eq!(te(&["gzip", "chunked"]), Err(UNKNOWN_CODING));
        assert_eq!(te(&["chunked, chunked"]), Err(BAD_FRAMING));
        assert_eq!(te(&["chunked", "chunked"]), Err(BAD_FRAMING));
        assert_eq!(te(&["chunked, gzip"]), Err(BAD_FRAMING));
        assert_eq!(te(&["gzip"]), Err(BAD_FRAMING));
        assert_eq!(te(&[""]), Err(BAD_FRAMING));
        assert_eq!(
            check(
                "POST",
                Version::HTTP_10,
                &[("transfer-encoding", "chunked")]
            ),
            Err(BAD_FRAMING)
        );
    }

    #[test]
    fn content_length_is_one_decimal_number_or_a_list_of_one() {
        for (raw, want) in [
            (&b"0"[..], Some((0, false))),
            (b"4096", Some((4096, false))),
            (b"007", Some((7, false))),
            (b"18446744073709551615", Some((u64::MAX, false))),
            (b"5, 5", Some((5, true))),
            (b"5,5,5", Some((5, true))),
            // Not a number of bytes: RFC 9112 §6.3 rule 5.
            (b"", None),
            (b"-1", None),
            (b"+5", None),
            (b"5 5", None),
            (b"0x10", None),
            (b"abc", None),
            (b"18446744073709551616", None),
            (b"99999999999999999999999", None),
            (b"5, 6", None),
            (b"5,", None),
            (b",5", None),
        ] {
            assert_eq!(
                content_length(raw),
                want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn the_head_size_counts_every_line() {
        let h = headers(&[("host", "a"), ("x-big", &"b".repeat(100))]);
        let uri: Uri = "/path".parse().unwrap();
        // "GET /path HTTP/1.1\r\n" + "host: a\r\n" + "x-big: b…\r\n" + "\r\n"
        assert_eq!(head_size(&Method::GET, &uri, &h), 20 + 9 + 109 + 2);
        let refused = request(&Method::GET, &uri, Version::HTTP_11, &h, 100);
        assert_eq!(refused, Err(HEAD_TOO_LARGE));
    }

    #[test]
    fn request_lines_get_414_and_505_where_those_are_the_codes() {
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(200));
        assert_eq!(request_line(long.as_bytes(), 100), Some(URI_TOO_LONG));
        assert_eq!(request_line(&[b'a'; 100], 100), Some(URI_TOO_LONG));
        assert_eq!(request_line(&[b'a'; 99], 100), None, "not yet too long");
        for v in ["HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "HTTP/3.0"] {
            let line = format!("GET / {v}\r\nHost: a\r\n\r\n");
            assert_eq!(
                request_line(line.as_bytes(), 1024),
                Some(BAD_VERSION),
                "{v}"
            );
        }
        for other in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"THIS IS NOT HTTP\r\n\r\n",
            b"GET / HTTP/12.0\r\n\r\n",
            b"GET / http/1.2\r\n\r\n",
        ] {
            assert_eq!(request_line(other, 1024), None, "{other:?}");
        }
    }

    #[test]
    fn request_ids_are_short_and_safe() {
        assert!(valid_request_id(b"trace-42"));
        assert!(valid_request_id(b"a.b_c-D9"));
        assert!(valid_request_id("x".repeat(64).as_bytes()));
        assert!(!valid_request_id("x".repeat(65).as_bytes()));
        assert!(!valid_request_id(b""));
        for bad in ["a b", "a/b", "<script>", "a\"b", "é"] {
            assert!(!valid_request_id(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn a_refusal_is_a_whole_closing_response() {
        let mut out = Vec::new();
        URI_TOO_LONG.encode(&mut out);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["status"], 414);
        assert_eq!(json["error"], "uri_too_long");
    }
}

/// Property tests: the checks on arbitrary input, and hosts built from the grammar.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;

    proptest! {
        #![proptest_config(crate::prop::config())]

        #[test]
        fn prop_checks_never_panic(raw in vec(any::<u8>(), 0..200), max in 1usize..300) {
            let _ = valid_host(&raw);
            let _ = valid_request_id(&raw);
            let _ = request_line(&raw, max);
        }

        /// Every host the grammar makes is valid; adding a byte the grammar has no place for
        /// makes it invalid.
        #[test]
        fn prop_hosts_from_the_grammar_are_valid(
            name in "[a-zA-Z0-9._~!$&'()*+,;=-]{0,20}",
            port in proptest::option::of(0u32..100_000),
            bad in select(&[" ", "/", "@", "?", "#", "\"", "<", "\\"][..]),
            at in any::<prop::sample::Index>(),
        ) {
            let host = match port {
                Some(p) => format!("{name}:{p}"),
                None => name.clone(),
            };
            prop_assert!(valid_host(host.as_bytes()), "{}", host);
            let mut broken = name.clone();
            broken.insert_str(at.index(name.len() + 1), bad);
            prop_assert!(!valid_host(broken.as_bytes()) || broken.trim() != broken, "{}", broken);
        }

        /// A request id passes only when it is short and safe, whatever its bytes.
        #[test]
        fn prop_request_ids_pass_only_when_short_and_safe(raw in vec(any::<u8>(), 0..100)) {
            let safe = !raw.is_empty()
                && raw.len() <= MAX_REQUEST_ID
                && raw.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b));
            prop_assert_eq!(valid_request_id(&raw), safe);
        }
    }
}
