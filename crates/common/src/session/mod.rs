//! Sessions: ids that carry their worker slot, the cookie that holds them, and where they are kept.
//!
//! Layout:
//! - this file: [`Session`], the [`SessionStore`] trait, session ids ([`mint_id`], [`parse_id`]) and
//!   the cookie helpers ([`cookie_value`], [`set_cookie`]);
//! - [`memory`]: a bounded store in the worker's own memory (TTL, sliding expiry, a cap with
//!   least-recently-used eviction, a sweeper);
//! - `redis` (feature `redis`): a store in Redis, shared by every worker and surviving their deaths;
//! - [`web`]: the store's settings, the axum middleware that gives each request its session, and
//!   the course's session routes (`/session`, `/data`).
//!
//! Why the id carries its slot (`3.9f86d081884c7d659a2feaa0c55ad015`): the master can route a request
//! to the worker holding its session by reading the cookie, with no shared map to keep in step and
//! nothing to lose when the master restarts. The slot is not a secret and not trusted: the random
//! part is what makes a session, and a worker only ever serves ids its store already knows. A made-up
//! id is routed to the slot it names, finds nothing there, and gets a new session.
//!
//! Depends on `error` and `config` only: the worker uses it, and the master reads the cookie with it.

pub mod memory;
#[cfg(test)]
mod props;
#[cfg(feature = "redis")]
pub mod redis;
pub mod web;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use cookie::{Cookie, SameSite};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, header::COOKIE};
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;

/// The cookie name, kept from the Node course so its curl walkthrough reads the same.
pub const COOKIE_NAME: &str = "sessionId";

/// The random part of an id: 128 bits, written as 32 lowercase hex digits.
const SECRET_HEX: usize = 32;

/// One session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// `<slot>.<32 hex>`: the cookie value.
    pub id: String,
    /// When it was created, in Unix milliseconds.
    pub created: u64,
    /// When it was last used, in Unix milliseconds; expiry slides from here.
    pub last_access: u64,
    /// Requests that used it, the one that created it included. It only climbs by one per request
    /// if every request finds the same store: the lesson's proof that affinity holds.
    pub request_count: u64,
    /// What the application put in it.
    pub data: BTreeMap<String, String>,
}

impl Session {
    /// A session created now (`now_ms`), counting the request that created it.
    pub fn new(id: String, now_ms: u64) -> Self {
        Self {
            id,
            created: now_ms,
            last_access: now_ms,
            request_count: 1,
            data: BTreeMap::new(),
        }
    }

    /// The slot named in the id (the one that minted it).
    pub fn slot(&self) -> Option<usize> {
        parse_id(&self.id)
    }
}

/// The first 8 hex digits of an id's secret: enough to tell sessions apart in stats and logs, too
/// little to hijack one. Full ids are never printed.
pub fn short_id(id: &str) -> String {
    match id.split_once('.') {
        Some((slot, secret)) => format!("{slot}.{}…", secret.get(..8).unwrap_or(secret)),
        None => "?".to_string(),
    }
}

/// Why a store could not answer.
#[derive(Debug)]
pub struct StoreError {
    /// What was being done, e.g. "load session".
    pub context: &'static str,
    /// The underlying failure.
    pub source: crate::error::BoxError,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session store: cannot {}: {}", self.context, self.source)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A page of one slot's sessions, for stats.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    /// Live sessions the slot holds (or, for a shared store, minted).
    pub total: u64,
    /// The most recently used ones, at most the limit asked for.
    pub sessions: Vec<Session>,
}

/// Counters a store keeps about itself.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStats {
    /// Sessions held in this process, when the store is local (`None` for a shared store).
    pub local_sessions: Option<u64>,
    /// Sessions dropped to stay under the cap.
    pub evicted: u64,
    /// Sessions removed after their TTL.
    pub expired: u64,
}

/// What a store's methods return: a boxed future (so the trait stays object-safe) that borrows
/// only the store. A store that needs its arguments after the first await copies them; the memory
/// store answers at once and copies nothing.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Where sessions live. Object-safe (boxed futures) so a lesson picks the store from configuration.
///
/// Every method that uses a session takes `now_ms` rather than reading a clock, so stores are tested
/// without sleeping. Sessions expire `ttl` after their last use (sliding expiry).
pub trait SessionStore: Send + Sync + 'static {
    /// `memory` or `redis`, for stats.
    fn name(&self) -> &'static str;

    /// Stores a new session.
    fn insert(&self, session: Session) -> StoreFuture<'_, ()>;

    /// Counts one request on a live session, atomically: `requestCount += 1`, `lastAccess = now_ms`,
    /// expiry pushed back. Returns the updated session, or `None` if there is no such live session.
    fn touch(&self, id: &str, now_ms: u64) -> StoreFuture<'_, Option<Session>>;

    /// Sets `data[key] = value` on a live session; false if there is none.
    fn set_data(&self, id: &str, key: &str, value: &str, now_ms: u64) -> StoreFuture<'_, bool>;

    /// Deletes a session; false if there was none.
    fn remove(&self, id: &str) -> StoreFuture<'_, bool>;

    /// The live sessions minted by `slot`, most recently used first, at most `limit` of them.
    fn list(&self, slot: usize, limit: usize, now_ms: u64) -> StoreFuture<'_, SessionList>;

    /// Counters, read without waiting (the worker answers the master's IPC questions with them).
    fn stats(&self) -> StoreStats;
}

/// A new session id for `slot`: `<slot>.<32 hex digits>`, the digits from `rand`'s thread-local
/// generator, a CSPRNG (ChaCha, seeded and periodically reseeded from the OS).
pub fn mint_id(slot: usize) -> String {
    format!("{slot}.{:032x}", rand::random::<u128>())
}

/// The slot an id names, if the id is well formed (`<1..=65535>.<32 lowercase hex>`); `None` for
/// anything else, which is then treated as no cookie at all.
pub fn parse_id(id: &str) -> Option<usize> {
    let (slot, secret) = id.split_once('.')?;
    let well_formed = secret.len() == SECRET_HEX
        && secret
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && !slot.is_empty()
        && slot.len() <= 5
        && slot.bytes().all(|b| b.is_ascii_digit())
        && !slot.starts_with('0');
    if !well_formed {
        return None;
    }
    slot.parse().ok()
}

/// The value of cookie `name` in the request's `Cookie` headers, if present (parsed with the
/// `cookie` crate; surrounding double quotes, which RFC 6265 §4.1.1 allows, are dropped). Runs on
/// the master for every request under sticky balancing, so it borrows: no cookie is copied.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name_raw() == Some(name))
        .and_then(|c| c.value_raw())
        .map(|v| v.trim_matches('"'))
}

/// A `Set-Cookie` value for session `id`: `HttpOnly` (scripts cannot read it), `SameSite=Lax` (other
/// sites cannot send it with their forms), `Path=/`, and a `Max-Age` the server re-sends on every
/// response so the cookie slides with the session.
pub fn set_cookie(name: &str, id: &str, max_age: Duration) -> HeaderValue {
    let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    let cookie = Cookie::build((name, id))
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age))
        .http_only(true)
        .same_site(SameSite::Lax)
        .build();
    // Ids are ASCII by construction; the fallback only guards a bad `name`.
    HeaderValue::try_from(cookie.to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("invalid=1; Max-Age=0"))
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_carry_their_slot_and_parse_back() {
        let id = mint_id(3);
        assert_eq!(parse_id(&id), Some(3), "{id}");
        assert_eq!(id.len(), 2 + SECRET_HEX);
        assert_ne!(mint_id(3), mint_id(3));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        let hex = "0123456789abcdef0123456789abcdef";
        for bad in [
            "",
            hex,
            &format!(".{hex}"),
            &format!("0.{hex}"),
            &format!("01.{hex}"),
            &format!("-1.{hex}"),
            &format!("999999.{hex}"),
            &format!("1.{}", &hex[1..]),
            &format!("1.{hex}0"),
            &format!("1.{}", hex.to_uppercase()),
            &format!("1.{}g", &hex[1..]),
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
        assert_eq!(parse_id(&format!("12.{hex}")), Some(12));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; sessionId=2.abc ; b=3"),
        );
        assert_eq!(cookie_value(&h, "sessionId"), Some("2.abc"));
        assert_eq!(cookie_value(&h, "session"), None);
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("sessionId=\"5.x\""));
        assert_eq!(cookie_value(&h, "sessionId"), Some("5.x"));
    }

    #[test]
    fn the_set_cookie_has_every_safety_attribute() {
        let v = set_cookie("sessionId", "1.ab", Duration::from_secs(1800));
        // The attributes' order is the cookie crate's; what they say is checked one by one.
        let text = v.to_str().unwrap();
        assert!(text.starts_with("sessionId=1.ab; "), "{text}");
        let c = Cookie::parse(text).unwrap();
        assert_eq!((c.name(), c.value()), ("sessionId", "1.ab"), "{text}");
        assert_eq!(c.path(), Some("/"), "{text}");
        assert_eq!(
            c.max_age(),
            Some(cookie::time::Duration::seconds(1800)),
            "{text}"
        );
        assert_eq!(c.http_only(), Some(true), "{text}");
        assert_eq!(c.same_site(), Some(SameSite::Lax), "{text}");
    }

    #[test]
    fn short_ids_hide_the_secret() {
        assert_eq!(
            short_id("2.0123456789abcdef0123456789abcdef"),
            "2.01234567…"
        );
    }
}
