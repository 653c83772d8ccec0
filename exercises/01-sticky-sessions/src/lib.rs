//! Exercise 01: sticky sessions. Read `README.md` beside this crate for the task and the hints, then
//! replace every `todo!` below. Check your work with `cargo test -p ex01-sticky-sessions` in `exercises/`.
//!
//! A cluster that keeps sessions in worker memory must send every request of a session to the worker that
//! holds it. This crate holds the two pure pieces that make that work, with no sockets and no clock:
//!
//! - [`HashRing`]: a consistent-hash ring with virtual nodes. It maps a session key to a worker id so that
//!   adding or removing a worker moves only that worker's share of the keys.
//! - [`SessionTable`]: sessions in memory with a sliding time-to-live and a size cap that evicts the
//!   least recently accessed session. Time is a parameter (`now_ms`), so it is tested without sleeps.
//! - [`hash`] and [`vnode_point`]: the fixed hash the ring rests on. They are given, finished: use them,
//!   do not change them (the grader computes ring positions with them too).

use std::collections::{BTreeMap, BTreeSet};

/// FNV-1a 64 offset basis, from the FNV specification.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime, from the FNV specification.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `bytes` to a position on the ring (given: not part of the exercise).
///
/// Why not std's `DefaultHasher`: its algorithm is unspecified and may change between Rust releases, and a
/// ring must put a key at the same position in every process of every build, or two workers built a
/// release apart would disagree about who owns a session. FNV-1a 64 is tiny and fully specified.
///
/// Why the extra mix: on its own FNV-1a is a poor ring hash. Vnode inputs differ only in a few bytes
/// (node 1 replica 0, node 1 replica 1, ...) and their FNV values bunch together: with 8 nodes of 1000
/// vnodes, plain FNV-1a gave one node 2.6 times its fair share of 10,000 keys. splitmix64's finalizer
/// makes every input bit flip about half of the output bits; with it, every node is within 5% of its share.
pub fn hash(bytes: &[u8]) -> u64 {
    mix64(fnv1a64(bytes))
}

/// FNV-1a, 64-bit: for each byte, xor it in, then multiply by the prime.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The finalizer of splitmix64 (Steele, Lea and Flood, 2014): a bijective avalanche mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ring position of virtual node number `replica` of `node` (given: not part of the exercise).
///
/// It is the [`hash`] of 12 bytes: `node` as 4 little-endian bytes, then `replica` as 8 little-endian
/// bytes. Spelling out the bytes, rather than hashing a formatted string or a `usize`, keeps every point
/// identical on every platform, so every process that builds the ring builds the same ring.
pub fn vnode_point(node: u32, replica: usize) -> u64 {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&node.to_le_bytes());
    bytes[4..].copy_from_slice(&(replica as u64).to_le_bytes());
    hash(&bytes)
}

/// A consistent-hash ring with virtual nodes: it maps a key (a session id) to a node (a worker slot).
///
/// Why a ring and not `hash(key) % n`: when `n` changes, `% n` sends almost every key to a different
/// node, and every moved session lands on a worker that has never seen it. On a ring, a new node takes
/// over only the arcs just before its own points, and a removed node hands only its own arcs to the next
/// points clockwise: about `1/n` of the keys move, and only to or from the node that changed.
///
/// Why virtual nodes: with one point per node the arcs are very uneven (one node can own half the ring).
/// With many points per node, each node's share is the sum of many small arcs, and the sums even out.
#[derive(Debug, Clone)]
#[allow(
    dead_code,
    reason = "the stub's methods are todo!(), so nothing reads these fields until you do"
)]
pub struct HashRing {
    /// Points per node, fixed at construction so that every node carries the same weight.
    vnodes_per_node: usize,
    /// Every vnode as `(position, node)`, in position order: "clockwise" is ascending order. The node is
    /// part of the element rather than a map value so that if two nodes' points ever collide, both points
    /// stay (the lower node id wins the lookup) and removing one node never deletes the other's point.
    points: BTreeSet<(u64, u32)>,
    /// The nodes on the ring, kept apart from `points` so that `len` and `nodes` need not scan every vnode.
    nodes: BTreeSet<u32>,
}

impl HashRing {
    /// Creates an empty ring that will give each node `vnodes_per_node` points on the ring.
    ///
    /// Zero is taken as one: a node with no points would be "on the ring" yet own no key at all.
    pub fn new(vnodes_per_node: usize) -> Self {
        Self {
            vnodes_per_node: vnodes_per_node.max(1),
            points: BTreeSet::new(),
            nodes: BTreeSet::new(),
        }
    }

    /// Puts `node` on the ring and returns `true`, or returns `false` and changes nothing if it is already
    /// there. Idempotent, so that a supervisor announcing a worker twice does not double its weight.
    pub fn add(&mut self, node: u32) -> bool {
        todo!(
            "put node {node:?} on the ring (one point per replica, from vnode_point) unless it is already there; return whether it was added"
        )
    }

    /// Takes `node` off the ring and returns `true`, or returns `false` and changes nothing if it is not
    /// there. Only the keys `node` owned move, each to the next point clockwise.
    pub fn remove(&mut self, node: u32) -> bool {
        todo!("take node {node:?} and all its points off the ring; return whether it was there")
    }

    /// The node that owns `key`, or `None` if the ring is empty.
    ///
    /// The same key on a ring with the same nodes gives the same node, in any process, whatever order
    /// the nodes were added in: that is what makes a session sticky without any shared state.
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        todo!(
            "find the node that owns key {:?}: hash it, then look its position up on the ring",
            String::from_utf8_lossy(key)
        )
    }

    /// The node that owns ring position `position`, or `None` if the ring is empty.
    ///
    /// The owner is the node of the first point at or after `position`, going clockwise (upwards); past the
    /// highest point the ring wraps around to the lowest one. Public so that tests can aim at exact
    /// positions, which `get` cannot: no one can pick a key that hashes to a given value.
    pub fn get_at(&self, position: u64) -> Option<u32> {
        todo!(
            "return the node of the first point at or after position {position:?}, wrapping around to the lowest point"
        )
    }

    /// The nodes on the ring in ascending order, so that output and comparisons are deterministic.
    pub fn nodes(&self) -> Vec<u32> {
        todo!("list the nodes on the ring in ascending order")
    }

    /// How many nodes (not vnodes) are on the ring.
    pub fn len(&self) -> usize {
        todo!("count the nodes (not the vnode points) on the ring")
    }

    /// Whether the ring has no nodes, in which case no key has an owner.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One session as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The id the client presents (a cookie value), and the table's key.
    pub id: String,
    /// When the session was created, so that a caller can add an absolute lifetime to the sliding one.
    pub created_ms: u64,
    /// When the session was last used: expiry and eviction are both measured from here.
    pub last_access_ms: u64,
    /// How many requests used the session, counting the one that created it. The lesson shows it to prove
    /// that a session stays on one worker: the count only climbs if every request finds the same table.
    pub request_count: u64,
}

/// Sessions in memory with a sliding time-to-live and a size cap.
///
/// Why sliding: an active user should not be logged out in the middle of a visit, so each use pushes the
/// expiry forward; an idle session expires `ttl_ms` after its last use. Why a cap: memory is finite, and
/// under a flood of new sessions (a client without a cookie jar makes one per request) the session used
/// least recently is the cheapest to lose. Time is a parameter (`now_ms`, from any monotonic millisecond
/// clock), so the table is pure and its tests need no sleeps.
#[derive(Debug, Clone)]
#[allow(
    dead_code,
    reason = "the stub's methods are todo!(), so nothing reads these fields until you do"
)]
pub struct SessionTable {
    /// Idle time after which a session is gone: it is alive while `now_ms - last_access_ms < ttl_ms`.
    ttl_ms: u64,
    /// The most sessions the table holds at once; at least one.
    max_sessions: usize,
    /// Sessions by id. A `BTreeMap` rather than a `HashMap` so that iteration, and so the choice between
    /// equally old sessions on eviction, follows id order and never a random hash order.
    sessions: BTreeMap<String, Session>,
}

impl SessionTable {
    /// Creates an empty table whose sessions expire `ttl_ms` after their last use, holding at most
    /// `max_sessions` sessions.
    ///
    /// A `max_sessions` of zero is taken as one, so that a session inserted can always be used at least
    /// once. A `ttl_ms` of zero means a session is already expired at the moment it is created.
    pub fn new(ttl_ms: u64, max_sessions: usize) -> Self {
        Self {
            ttl_ms,
            max_sessions: max_sessions.max(1),
            sessions: BTreeMap::new(),
        }
    }

    /// Starts a fresh session `id` at `now_ms`, its creating request counted (`request_count` 1).
    ///
    /// If `id` is new and the table is full, first evicts the least recently accessed session (on a tie,
    /// the smallest id) and returns its id, so the caller can log it or tell the node that held it. An
    /// expired session is always the least recently accessed, so it goes before any live one. If `id` is
    /// already in the table, it is replaced by the fresh session and nothing is evicted.
    pub fn insert(&mut self, id: &str, now_ms: u64) -> Option<String> {
        todo!(
            "start session {id:?} at {now_ms:?} ms (1 request); if the table is full and the id is new, evict the least recently accessed session first and return its id"
        )
    }

    /// Uses session `id` at `now_ms`: if it is alive, moves its last access to `now_ms`, counts the request
    /// and returns it; if it has expired, removes it and returns `None`; if it is unknown, returns `None`.
    ///
    /// A clock that steps backwards is read as "no time passed": the session is not expired by it and
    /// its last access never moves back.
    pub fn touch(&mut self, id: &str, now_ms: u64) -> Option<&Session> {
        todo!(
            "use session {id:?} at {now_ms:?} ms: remove it if expired, else record the access and count the request"
        )
    }

    /// Looks at session `id` as of `now_ms` without using it: `None` if it is unknown or expired.
    ///
    /// It neither slides the expiry nor counts a request, so dashboards and tests can look without
    /// changing what they look at. It does not remove an expired session either (it only reads).
    pub fn get(&self, id: &str, now_ms: u64) -> Option<&Session> {
        todo!("return session {id:?} if it is still alive at {now_ms:?} ms, without changing it")
    }

    /// Removes every session expired at `now_ms` and returns how many it removed.
    ///
    /// `touch` removes an expired session only when its id comes back; this sweep, run now and then,
    /// reclaims the memory of the sessions whose users never return.
    pub fn remove_expired(&mut self, now_ms: u64) -> usize {
        todo!("remove every session expired at {now_ms:?} ms and return how many were removed")
    }

    /// How many sessions the table holds, counting expired ones not yet removed.
    pub fn len(&self) -> usize {
        todo!("count the sessions in the table, expired or not")
    }

    /// Whether the table holds no session at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
