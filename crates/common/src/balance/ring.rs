//! A consistent-hash ring with virtual nodes, generic over the node id.
//!
//! Why a ring and not `hash(key) % n`: when `n` changes, `% n` sends almost every key to another node
//! (the Node course's "consistent hashing" was `md5 % n`, which is exactly that). On a ring a new node
//! takes over only the arcs just before its own points, and a missing node's arcs fall to the next
//! points clockwise: about `1/n` of the keys move, and only to or from the node that changed.
//!
//! Why virtual nodes: with one point per node the arcs are very uneven. With a few hundred points per
//! node each node's share is the sum of many small arcs, and the sums even out (see the tests).
//!
//! The ring here differs from the exercise's in two ways the sticky selector needs: lookups can skip
//! nodes that are on the ring but not usable right now ([`HashRing::find_map`]), so a worker that is
//! restarting in its slot keeps its points and gets its keys back when it returns; and the points are
//! a sorted `Vec` searched by bisection, because the ring is read on every request and changed only
//! when a new slot first appears.

use std::hash::{Hash, Hasher};

/// Points per node by default: with 4 nodes this keeps every node within a few percent of its share
/// (measured in `shares_are_even`), for 64 KiB of points and 12 comparisons a lookup.
pub const DEFAULT_VNODES: usize = 1000;

/// FNV-1a 64 offset basis, from the FNV specification.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime, from the FNV specification.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a with a splitmix64 finish: a fixed, fully specified hash, so a key lands on the same point in
/// every run (std's `DefaultHasher` is randomly keyed per process and may change between releases).
/// FNV alone bunches inputs that differ in a few bytes (vnode numbers); the finisher spreads them.
#[derive(Debug, Clone, Copy)]
pub struct RingHasher(u64);

impl Default for RingHasher {
    fn default() -> Self {
        Self(FNV_OFFSET_BASIS)
    }
}

impl Hasher for RingHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// The finalizer of splitmix64 (Steele, Lea and Flood, 2014): every input bit flips about half of
/// the output bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ring position of `key`'s bytes.
pub fn hash_bytes(key: &[u8]) -> u64 {
    let mut h = RingHasher::default();
    h.write(key);
    h.finish()
}

fn vnode_point<N: Hash>(node: &N, replica: u32) -> u64 {
    let mut h = RingHasher::default();
    node.hash(&mut h);
    h.write(&replica.to_le_bytes());
    h.finish()
}

/// A consistent-hash ring mapping keys to nodes of type `N` (worker slots, server names, …).
#[derive(Debug, Clone)]
pub struct HashRing<N> {
    /// Points per node, fixed at construction so every node carries the same weight.
    vnodes: u32,
    /// Every point as `(position, node)`, sorted: "clockwise" is ascending. The node is part of the
    /// element so two nodes' colliding points both stay, and the order stays total.
    points: Vec<(u64, N)>,
    /// The nodes on the ring, sorted, so `contains` is a bisection rather than a scan of the points.
    nodes: Vec<N>,
}

impl<N: Copy + Ord + Hash> HashRing<N> {
    /// An empty ring giving each node `vnodes` points (zero is taken as one: a node with no point
    /// would be on the ring yet own nothing).
    pub fn new(vnodes: usize) -> Self {
        Self {
            vnodes: u32::try_from(vnodes.max(1)).unwrap_or(u32::MAX),
            points: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Puts `node` on the ring; false (and no change) if it is already there.
    pub fn add(&mut self, node: N) -> bool {
        let Err(at) = self.nodes.binary_search(&node) else {
            return false;
        };
        self.nodes.insert(at, node);
        self.points
            .extend((0..self.vnodes).map(|r| (vnode_point(&node, r), node)));
        self.points.sort_unstable();
        true
    }

    /// Takes `node` off the ring; false (and no change) if it was not there. Only its keys move.
    pub fn remove(&mut self, node: N) -> bool {
        let Ok(at) = self.nodes.binary_search(&node) else {
            return false;
        };
        self.nodes.remove(at);
        self.points.retain(|(_, n)| *n != node);
        true
    }

    /// Whether `node` is on the ring.
    pub fn contains(&self, node: N) -> bool {
        self.nodes.binary_search(&node).is_ok()
    }

    /// The nodes on the ring, ascending.
    pub fn nodes(&self) -> &[N] {
        &self.nodes
    }

    /// How many nodes (not points) are on the ring.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is on the ring (then no key has an owner).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node owning `key`: the first point at or after `hash_bytes(key)`, wrapping around.
    pub fn get(&self, key: &[u8]) -> Option<N> {
        self.get_at(hash_bytes(key))
    }

    /// The node owning ring position `position`.
    pub fn get_at(&self, position: u64) -> Option<N> {
        self.find_map(position, Some)
    }

    /// Walks the points clockwise from `position` and returns the first `Some` that `f` gives for a
    /// point's node, or `None` after one full turn. This is "the owner, or if it cannot take the key,
    /// its successor": a node that is temporarily unusable keeps its points, so its keys come back
    /// to it when it does, and meanwhile they spread over the other nodes' next points.
    pub fn find_map<T>(&self, position: u64, mut f: impl FnMut(N) -> Option<T>) -> Option<T> {
        let start = self.points.partition_point(|(p, _)| *p < position);
        let (before, after) = self.points.split_at(start);
        after.iter().chain(before).find_map(|&(_, node)| f(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("session-{i}")).collect()
    }

    fn ring(nodes: &[usize]) -> HashRing<usize> {
        let mut r = HashRing::new(DEFAULT_VNODES);
        for &n in nodes {
            r.add(n);
        }
        r
    }

    #[test]
    fn an_empty_ring_has_no_owner() {
        assert_eq!(HashRing::<usize>::new(10).get(b"k"), None);
    }

    #[test]
    fn the_same_key_maps_to_the_same_node_whatever_the_insertion_order() {
        let a = ring(&[1, 2, 3, 4]);
        let b = ring(&[4, 2, 1, 3]);
        for k in keys(1000) {
            assert_eq!(a.get(k.as_bytes()), b.get(k.as_bytes()), "key {k}");
            assert_eq!(a.get(k.as_bytes()), a.get(k.as_bytes()), "key {k}");
        }
    }

    #[test]
    fn adding_twice_changes_nothing() {
        let mut r = ring(&[1, 2]);
        assert!(!r.add(1));
        assert_eq!(r.len(), 2);
        assert!(r.remove(2));
        assert!(!r.remove(2));
        assert_eq!(r.nodes(), &[1]);
    }

    #[test]
    fn shares_are_even() {
        for n in [2usize, 3, 4, 8] {
            let nodes: Vec<usize> = (1..=n).collect();
            let r = ring(&nodes);
            let mut counts = vec![0usize; n + 1];
            let ks = keys(10_000);
            for k in &ks {
                counts[r.get(k.as_bytes()).unwrap()] += 1;
            }
            let fair = ks.len() as f64 / n as f64;
            for &node in &nodes {
                let dev = (counts[node] as f64 - fair).abs() / fair;
                assert!(
                    dev <= 0.15,
                    "{n} nodes: node {node} got {} keys, fair share {fair}",
                    counts[node]
                );
            }
        }
    }

    #[test]
    fn adding_or_removing_a_node_moves_at_most_1_25_over_n_of_the_keys() {
        let ks = keys(10_000);
        for n in [2usize, 4, 8] {
            let before = ring(&(1..=n).collect::<Vec<_>>());
            let mut grown = before.clone();
            grown.add(n + 1);
            let mut shrunk = before.clone();
            shrunk.remove(1);
            let moved_up = ks
                .iter()
                .filter(|k| before.get(k.as_bytes()) != grown.get(k.as_bytes()))
                .count();
            let moved_down = ks
                .iter()
                .filter(|k| before.get(k.as_bytes()) != shrunk.get(k.as_bytes()))
                .count();
            let limit_up = (1.25 / (n + 1) as f64 * ks.len() as f64) as usize;
            let limit_down = (1.25 / n as f64 * ks.len() as f64) as usize;
            assert!(
                moved_up <= limit_up,
                "{n}->{}: {moved_up} moved, limit {limit_up}",
                n + 1
            );
            assert!(
                moved_down <= limit_down,
                "{n}->{}: {moved_down} moved, limit {limit_down}",
                n - 1
            );
            // Only the changed node's keys move.
            for k in &ks {
                let (b, g) = (before.get(k.as_bytes()), grown.get(k.as_bytes()));
                assert!(
                    b == g || g == Some(n + 1),
                    "key {k} moved from {b:?} to {g:?}"
                );
                let s = shrunk.get(k.as_bytes());
                assert!(b == s || b == Some(1), "key {k} moved from {b:?} to {s:?}");
            }
        }
    }

    #[test]
    fn skipping_a_node_gives_the_same_answer_as_removing_it() {
        let full = ring(&[1, 2, 3, 4]);
        let mut without = full.clone();
        without.remove(3);
        for k in keys(2000) {
            let skipped = full.find_map(hash_bytes(k.as_bytes()), |n| (n != 3).then_some(n));
            assert_eq!(skipped, without.get(k.as_bytes()), "key {k}");
        }
    }
}
