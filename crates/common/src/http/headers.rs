//! The header policy of a proxy hop, shared by the plain-request server, the worker client and the
//! edge: which headers describe one connection and stop here (RFC 9110 §7.6.1), how
//! `X-Forwarded-For` grows by one hop, and the request id the edge mints.
//!
//! Depends on nothing else in the crate.

use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-For`: every hop the request passed, the client first.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Set on every proxied response: which slot answered.
pub static X_WORKER_ID: HeaderName = HeaderName::from_static("x-worker-id");
/// The version that answered, set by workers of a version pool.
pub static X_APP_VERSION: HeaderName = HeaderName::from_static("x-app-version");

/// Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and must not be forwarded.
pub(crate) static HOP_BY_HOP: [HeaderName; 6] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("te"),
    HeaderName::from_static("trailer"),
    HeaderName::from_static("upgrade"),
    CONNECTION,
];

/// A fresh request id, for a request that came without one.
pub(crate) fn mint_request_id() -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // Unique per master run without a syscall per request: a random prefix and a counter.
    let prefix = *PREFIX.get_or_init(rand::random::<u32>);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // `prefix-counter` in fixed-width hex, written by hand: `format!` with padding costs a dozen
    // formatter calls, on every request.
    let mut buf = [b'-'; 25];
    write_hex_fixed(u64::from(prefix), &mut buf[..8]);
    write_hex_fixed(n, &mut buf[9..]);
    // Owned by its `Bytes`, whose clones share it: the id goes to the worker and back to the
    // client, and a clone of a value copied from a slice allocates its shared handle then.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Writes the low `out.len()` hex digits of `n` into `out`, most significant first.
fn write_hex_fixed(mut n: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// Whether the request asks to switch protocols (RFC 9110 §7.8): `Upgrade`, named in `Connection`.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
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

/// Removes the hop-by-hop headers, and those `Connection` names, from a message to be forwarded.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// Writes the `X-Forwarded-For` value a worker should see into `out`: every hop the request already
/// listed, then the client that connected to us.
pub(crate) fn write_forwarded_for(out: &mut Vec<u8>, headers: &HeaderMap, client_ip: &[u8]) {
    for prior in headers.get_all(&X_FORWARDED_FOR) {
        out.extend_from_slice(prior.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_a_fixed_width_prefix_and_counter() {
        let a = mint_request_id();
        let b = mint_request_id();
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_eq!(a.len(), 25, "{a}");
        assert_eq!(a.as_bytes()[8], b'-', "{a}");
        assert_eq!(a[..8], b[..8], "one prefix per master run");
        let n = |id: &str| u64::from_str_radix(&id[9..], 16).unwrap();
        assert_eq!(n(b), n(a) + 1, "{a} then {b}");
    }

    #[test]
    fn fixed_hex_writes_the_low_digits_most_significant_first() {
        let mut out = [0u8; 4];
        write_hex_fixed(0xabc, &mut out);
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
