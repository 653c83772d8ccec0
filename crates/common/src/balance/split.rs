//! Choosing a request's version pool before its worker: the traffic split of canary and
//! blue-green deployments.
//!
//! A [`Split`] places each request in a version pool (see `supervisor::pool`); the cluster's
//! [`Selector`](super::Selector) then picks a worker inside that pool. So the split is by
//! traffic, whatever the pools' sizes: at 10% the canary gets a tenth of the users whether it runs
//! one worker or three (the Node original turned workers into canaries and so split by worker
//! count).
//!
//! [`TrafficSplit`] is the split of a canary rollout:
//!
//! - **The user.** A request's user is its session cookie (`sessionId`), else its `X-User-Id`
//!   header, else its client IP.
//! - **The bucket.** `bucket = SipHash-2-4(key, user) mod 100`, with the 128-bit key derived from
//!   a salt (`CANARY_SALT`, or one drawn at start). A keyed hash, not a plain one: without the
//!   secret nobody can pick a user name that lands in the canary, and two clusters with two salts
//!   pick different users. The canary serves a user iff `bucket < percentage`, so raising the
//!   percentage only adds users (25% is the 10% plus the next 15 buckets) and 0% sends everyone to
//!   the stable pool.
//! - **The version cookie** `cluster_bucket=<bucket>-<tag>` records the user's bucket, not their
//!   version, with `tag = SipHash-2-4(cookie key, bucket)`: a second instance with the same salt,
//!   or this one after a restart, honours it, and it keeps a user on their bucket when their key
//!   changes (a new IP, a login). Because it records the bucket, the version is worked out again
//!   on every request from the current percentage: a cookie cannot hold a user on the canary after
//!   a rollback, nor make the canary's share grow past its percentage, as cookies that record the
//!   version do (Flagger's session affinity pins every user who ever saw the canary, so a "10%"
//!   canary drifts toward all users). The tag keeps a client from editing its bucket; a cookie it
//!   cannot verify (edited, or minted under another salt) is ignored and replaced.
//!
//! Blue-green uses the same split at 0%, switching which pool is primary in one atomic store.
//!
//! The request path reads one atomic word; only while a percentage between 0 and 100 is set does
//! it hash the user and look at cookies, and only a user without a valid cookie gets a
//! `Set-Cookie`.

use std::hash::Hasher as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use siphasher::sip::SipHasher24;

use super::RequestInfo;
use crate::session::{self, COOKIE_NAME};

/// Where a [`Split`] put a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The version pool to serve it.
    pub pool: usize,
    /// A `Set-Cookie` for the response, recording the placement.
    pub set_cookie: Option<HeaderValue>,
}

/// Places each request in a version pool.
pub trait Split: Send + Sync + 'static {
    /// The pool for `req`. Called on the request path: keep it quick.
    fn place(&self, req: &RequestInfo<'_>) -> Placement;
}

impl<S: Split + ?Sized> Split for Arc<S> {
    fn place(&self, req: &RequestInfo<'_>) -> Placement {
        (**self).place(req)
    }
}

/// The name of the version cookie.
pub const BUCKET_COOKIE: &str = "cluster_bucket";
/// The request header that names a user who has no session cookie.
pub const USER_HEADER: &str = "x-user-id";
/// How long a browser keeps the version cookie: 30 days.
const COOKIE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The secret the buckets and the cookie tags are keyed with.
#[derive(Clone, PartialEq, Eq)]
pub struct Salt {
    bucket: (u64, u64),
    cookie: (u64, u64),
    text: String,
}

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret: never in a log.
        f.write_str("Salt(..)")
    }
}

impl Salt {
    /// The keys derived from `secret` (any text): SipHash-2-4 under the zero key of the secret,
    /// once per key half and purpose, so the bucket key and the cookie key are unrelated.
    pub fn from_secret(secret: &str) -> Self {
        let derive = |label: &[u8]| {
            let mut h = SipHasher24::new_with_keys(0, 0);
            h.write(label);
            h.write(secret.as_bytes());
            h.finish()
        };
        Self {
            bucket: (derive(b"bucket-0:"), derive(b"bucket-1:")),
            cookie: (derive(b"cookie-0:"), derive(b"cookie-1:")),
            text: secret.to_string(),
        }
    }

    /// A fresh random salt (128 bits, as 32 hex digits).
    pub fn random() -> Self {
        let secret = format!("{:032x}", rand::random::<u128>());
        Self::from_secret(&secret)
    }

    /// The secret, to keep where an operator can find it (the run directory).
    pub fn secret(&self) -> &str {
        &self.text
    }

    /// `user`'s bucket, 0..100.
    pub fn bucket(&self, user: &[u8]) -> u8 {
        let mut h = SipHasher24::new_with_keys(self.bucket.0, self.bucket.1);
        h.write(user);
        // The modulo bias of 2^64 mod 100 is below 10^-17: nothing to correct.
        (h.finish() % 100) as u8
    }

    fn tag(&self, bucket: u8) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.cookie.0, self.cookie.1);
        h.write(b"bucket:");
        h.write_u8(bucket);
        h.finish()
    }

    /// The version cookie's value for `bucket`.
    pub fn cookie_value(&self, bucket: u8) -> String {
        format!("{bucket}-{:016x}", self.tag(bucket))
    }

    /// The bucket a version cookie records, if its tag is ours.
    pub fn verify(&self, value: &str) -> Option<u8> {
        let (bucket, tag) = value.split_once('-')?;
        let bucket: u8 = bucket.parse().ok().filter(|b| *b < 100)?;
        let tag = u64::from_str_radix(tag, 16)
            .ok()
            .filter(|_| tag.len() == 16)?;
        (tag == self.tag(bucket)).then_some(bucket)
    }
}

/// Who a request is, for the split: see the module docs for the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User<'a> {
    /// The session cookie's value.
    Session(&'a str),
    /// The `X-User-Id` header.
    Header(&'a [u8]),
    /// The client's IP.
    Ip(IpAddr),
}

impl<'a> User<'a> {
    /// The user of `req`.
    pub fn of(req: &RequestInfo<'a>) -> Self {
        if let Some(id) = session::cookie_value(req.headers, COOKIE_NAME).filter(|v| !v.is_empty())
        {
            return User::Session(id);
        }
        if let Some(id) = req.headers.get(USER_HEADER).filter(|v| !v.is_empty()) {
            return User::Header(id.as_bytes());
        }
        User::Ip(req.client.ip())
    }

    /// The user's bucket under `salt`.
    pub fn bucket(&self, salt: &Salt) -> u8 {
        match self {
            User::Session(id) => salt.bucket(id.as_bytes()),
            User::Header(id) => salt.bucket(id),
            User::Ip(IpAddr::V4(ip)) => salt.bucket(&ip.octets()),
            User::Ip(IpAddr::V6(ip)) => salt.bucket(&ip.octets()),
        }
    }
}

/// The split of a canary rollout (or a blue-green switch) between a primary and a secondary pool;
/// see the module docs.
#[derive(Debug)]
pub struct TrafficSplit {
    salt: Salt,
    /// The percentage, the primary pool and the secondary pool in one word, so a switch of all
    /// three is one store and a request never sees half of one.
    state: AtomicU64,
}

/// The three parts of [`TrafficSplit`]'s state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitState {
    /// The share of users (0..=100) the secondary pool serves.
    pub percent: u8,
    /// The pool that serves everyone else (stable, or the live colour).
    pub primary: usize,
    /// The pool the percentage goes to (canary, or the idle colour).
    pub secondary: usize,
}

impl SplitState {
    fn pack(self) -> u64 {
        u64::from(self.percent.min(100))
            | ((self.primary as u64 & 0xFFFF) << 8)
            | ((self.secondary as u64 & 0xFFFF) << 24)
    }

    fn unpack(word: u64) -> Self {
        Self {
            percent: (word & 0xFF) as u8,
            primary: ((word >> 8) & 0xFFFF) as usize,
            secondary: ((word >> 24) & 0xFFFF) as usize,
        }
    }
}

impl TrafficSplit {
    /// Everyone on `primary`, 0% on `secondary`.
    pub fn new(salt: Salt, primary: usize, secondary: usize) -> Self {
        let state = SplitState {
            percent: 0,
            primary,
            secondary,
        };
        Self {
            salt,
            state: AtomicU64::new(state.pack()),
        }
    }

    /// The salt it buckets users with.
    pub fn salt(&self) -> &Salt {
        &self.salt
    }

    /// The percentage and the pools now.
    pub fn state(&self) -> SplitState {
        SplitState::unpack(self.state.load(Ordering::Acquire))
    }

    /// Sends `percent` (capped at 100) of the users to the secondary pool.
    pub fn set_percent(&self, percent: u8) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let mut s = SplitState::unpack(w);
                s.percent = percent.min(100);
                Some(s.pack())
            });
    }

    /// Replaces the whole state at once (a blue-green switch: new primary, 0%).
    pub fn set(&self, state: SplitState) {
        self.state.store(state.pack(), Ordering::Release);
    }

    /// Whether `user` is in the secondary pool's share at `percent`.
    pub fn in_share(bucket: u8, percent: u8) -> bool {
        bucket < percent
    }
}

impl Split for TrafficSplit {
    fn place(&self, req: &RequestInfo<'_>) -> Placement {
        let state = self.state();
        let pool = |canary: bool| {
            if canary {
                state.secondary
            } else {
                state.primary
            }
        };
        match state.percent {
            0 => Placement {
                pool: state.primary,
                set_cookie: None,
            },
            100.. => Placement {
                pool: state.secondary,
                set_cookie: None,
            },
            percent => {
                let recorded = session::cookie_value(req.headers, BUCKET_COOKIE)
                    .and_then(|v| self.salt.verify(v));
                match recorded {
                    Some(bucket) => Placement {
                        pool: pool(Self::in_share(bucket, percent)),
                        set_cookie: None,
                    },
                    None => {
                        let bucket = User::of(req).bucket(&self.salt);
                        Placement {
                            pool: pool(Self::in_share(bucket, percent)),
                            set_cookie: Some(session::set_cookie(
                                BUCKET_COOKIE,
                                &self.salt.cookie_value(bucket),
                                COOKIE_MAX_AGE,
                            )),
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method, Uri};

    fn place(split: &TrafficSplit, headers: &HeaderMap) -> Placement {
        let uri = Uri::from_static("/");
        split.place(&RequestInfo {
            method: &Method::GET,
            uri: &uri,
            headers,
            client: "127.0.0.1:5000".parse().expect("an address"),
        })
    }

    fn user(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(USER_HEADER, HeaderValue::from_str(id).expect("ascii"));
        h
    }

    #[test]
    fn buckets_are_stable_for_a_salt_and_differ_between_salts() {
        let (a, b) = (Salt::from_secret("one"), Salt::from_secret("two"));
        assert_eq!(
            a.bucket(b"alice"),
            Salt::from_secret("one").bucket(b"alice")
        );
        let differ = (0..200)
            .filter(|i| {
                a.bucket(format!("u{i}").as_bytes()) != b.bucket(format!("u{i}").as_bytes())
            })
            .count();
        assert!(
            differ > 150,
            "only {differ} of 200 users moved between salts"
        );
    }

    #[test]
    fn buckets_are_spread_evenly_over_0_to_99() {
        let salt = Salt::from_secret("spread");
        let mut counts = [0u32; 10];
        for i in 0..10_000 {
            counts[usize::from(salt.bucket(format!("user-{i}").as_bytes()) / 10)] += 1;
        }
        // Each tenth expects 1000; 4 standard deviations is about ±120.
        assert!(
            counts.iter().all(|c| (880..=1120).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn raising_the_percentage_only_moves_users_to_the_secondary_pool() {
        let split = TrafficSplit::new(Salt::from_secret("s"), 0, 1);
        let mut on_canary = vec![false; 500];
        for percent in [10, 25, 50, 75, 99] {
            split.set_percent(percent);
            for (i, was) in on_canary.iter_mut().enumerate() {
                let now = place(&split, &user(&format!("u{i}"))).pool == 1;
                assert!(now || !*was, "user {i} went back to stable at {percent}%");
                *was = now;
            }
        }
        split.set_percent(0);
        assert!((0..500).all(|i| place(&split, &user(&format!("u{i}"))).pool == 0));
    }

    #[test]
    fn a_verified_cookie_decides_and_an_edited_one_is_replaced() {
        let split = TrafficSplit::new(Salt::from_secret("s"), 0, 1);
        split.set_percent(50);
        let first = place(&split, &user("bob"));
        let set = first.set_cookie.expect("a new user gets the cookie");
        let pair = set
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("a pair");
        let mut with_cookie = user("someone-else");
        with_cookie.insert(
            http::header::COOKIE,
            HeaderValue::from_str(pair).expect("ascii"),
        );
        let again = place(&split, &with_cookie);
        assert_eq!(
            again.pool, first.pool,
            "the recorded bucket wins over the user key"
        );
        assert_eq!(again.set_cookie, None);
        // Claiming bucket 0 with a forged tag does not work.
        let mut forged = user("bob");
        forged.insert(
            http::header::COOKIE,
            HeaderValue::from_static("cluster_bucket=0-0000000000000000"),
        );
        let p = place(&split, &forged);
        assert_eq!(p.pool, first.pool);
        assert!(p.set_cookie.is_some(), "the forged cookie is replaced");
    }

    #[test]
    fn zero_and_a_hundred_percent_touch_no_cookie() {
        let split = TrafficSplit::new(Salt::from_secret("s"), 3, 4);
        assert_eq!(
            place(&split, &user("x")),
            Placement {
                pool: 3,
                set_cookie: None
            }
        );
        split.set_percent(100);
        assert_eq!(
            place(&split, &user("x")),
            Placement {
                pool: 4,
                set_cookie: None
            }
        );
        split.set(SplitState {
            percent: 0,
            primary: 4,
            secondary: 3,
        });
        assert_eq!(place(&split, &user("x")).pool, 4);
    }
}
