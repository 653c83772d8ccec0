//! Reference answer to exercise 01: sticky sessions.
//!
//! A cluster that keeps sessions in worker memory must send every request of a session to the worker that
//! holds it. This crate holds the two pure pieces that make that work, with no sockets and no clock:
//!
//! - [`HashRing`]: a consistent-hash ring with virtual nodes. It maps a session key to a worker id so that
//!   adding or removing a worker moves only that worker's share of the keys.
//! - [`SessionTable`]: sessions in memory with a sliding time-to-live and a size cap that evicts the
//!   least recently accessed session. Time is a parameter (`now_ms`), so it is tested without sleeps.
//! - [`hash`] and [`vnode_point`]: the fixed hash the ring rests on. The exercise gives them ready-made;
//!   they are the same in the stub and here, so the grader sees the same ring positions in both.
//!
//! The grader is `exercises/01-sticky-sessions/tests/grader.rs`; this crate runs that very file.

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
        if !self.nodes.insert(node) {
            return false;
        }
        self.points
            .extend((0..self.vnodes_per_node).map(|replica| (vnode_point(node, replica), node)));
        true
    }

    /// Takes `node` off the ring and returns `true`, or returns `false` and changes nothing if it is not
    /// there. Only the keys `node` owned move, each to the next point clockwise.
    pub fn remove(&mut self, node: u32) -> bool {
        if !self.nodes.remove(&node) {
            return false;
        }
        // Recompute the node's points rather than scan the whole ring: vnodes_per_node lookups, not all.
        for replica in 0..self.vnodes_per_node {
            self.points.remove(&(vnode_point(node, replica), node));
        }
        true
    }

    /// The node that owns `key`, or `None` if the ring is empty.
    ///
    /// The same key on a ring with the same nodes gives the same node, in any process, whatever order
    /// the nodes were added in: that is what makes a session sticky without any shared state.
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        self.get_at(hash(key))
    }

    /// The node that owns ring position `position`, or `None` if the ring is empty.
    ///
    /// The owner is the node of the first point at or after `position`, going clockwise (upwards); past the
    /// highest point the ring wraps around to the lowest one. Public so that tests can aim at exact
    /// positions, which `get` cannot: no one can pick a key that hashes to a given value.
    pub fn get_at(&self, position: u64) -> Option<u32> {
        // (position, 0) sorts before every (position, node), so a point exactly at `position` is found.
        self.points
            .range((position, 0)..)
            .next()
            .or_else(|| self.points.first())
            .map(|&(_, node)| node)
    }

    /// The nodes on the ring in ascending order, so that output and comparisons are deterministic.
    pub fn nodes(&self) -> Vec<u32> {
        self.nodes.iter().copied().collect()
    }

    /// How many nodes (not vnodes) are on the ring.
    pub fn len(&self) -> usize {
        self.nodes.len()
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
        let is_new = !self.sessions.contains_key(id);
        let evicted = if is_new && self.sessions.len() >= self.max_sessions {
            self.evict_least_recently_accessed()
        } else {
            None
        };
        let session = Session {
            id: id.to_owned(),
            created_ms: now_ms,
            last_access_ms: now_ms,
            request_count: 1,
        };
        self.sessions.insert(id.to_owned(), session);
        evicted
    }

    /// Uses session `id` at `now_ms`: if it is alive, moves its last access to `now_ms`, counts the request
    /// and returns it; if it has expired, removes it and returns `None`; if it is unknown, returns `None`.
    ///
    /// A clock that steps backwards is read as "no time passed": the session is not expired by it and
    /// its last access never moves back.
    pub fn touch(&mut self, id: &str, now_ms: u64) -> Option<&Session> {
        if self.get(id, now_ms).is_none() {
            // Unknown or expired: either way, make sure it is gone. Removing now, not at the next sweep,
            // frees the memory and makes a later `insert` of the same id start clean.
            self.sessions.remove(id);
            return None;
        }
        let session = self.sessions.get_mut(id)?;
        session.last_access_ms = session.last_access_ms.max(now_ms);
        session.request_count = session.request_count.saturating_add(1);
        Some(session)
    }

    /// Looks at session `id` as of `now_ms` without using it: `None` if it is unknown or expired.
    ///
    /// It neither slides the expiry nor counts a request, so dashboards and tests can look without
    /// changing what they look at. It does not remove an expired session either (it only reads).
    pub fn get(&self, id: &str, now_ms: u64) -> Option<&Session> {
        self.sessions
            .get(id)
            .filter(|session| is_alive(session, self.ttl_ms, now_ms))
    }

    /// Removes every session expired at `now_ms` and returns how many it removed.
    ///
    /// `touch` removes an expired session only when its id comes back; this sweep, run now and then,
    /// reclaims the memory of the sessions whose users never return.
    pub fn remove_expired(&mut self, now_ms: u64) -> usize {
        let before = self.sessions.len();
        let ttl_ms = self.ttl_ms;
        self.sessions
            .retain(|_, session| is_alive(session, ttl_ms, now_ms));
        before - self.sessions.len()
    }

    /// How many sessions the table holds, counting expired ones not yet removed.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the table holds no session at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the session with the oldest last access (the smallest id on a tie) and returns its id.
    fn evict_least_recently_accessed(&mut self) -> Option<String> {
        // A linear scan: eviction happens only when the table is full, and a scan keeps the table one map.
        // A store with a large cap would keep a second index ordered by last access instead.
        // `min_by_key` keeps the first of equal minimums, and map order is id order: ties go to the smallest id.
        let oldest = self
            .sessions
            .values()
            .min_by_key(|session| session.last_access_ms)?
            .id
            .clone();
        self.sessions.remove(&oldest);
        Some(oldest)
    }
}

/// Whether `session` is still alive at `now_ms` under `ttl_ms`.
///
/// `saturating_sub`: if the clock stepped back, the idle time is zero, never an underflow panic.
fn is_alive(session: &Session, ttl_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(session.last_access_ms) < ttl_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the hash to the published FNV-1a 64 test vectors, so that a typo in a constant cannot
    /// silently move every session.
    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// Pins splitmix64's finalizer: its first output from seed 0 is the well-known 0xe220a8397b1dcdaf
    /// (splitmix64 adds the golden gamma 0x9e3779b97f4a7c15 to its state, then mixes).
    #[test]
    fn mix64_matches_splitmix64() {
        assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }
}
