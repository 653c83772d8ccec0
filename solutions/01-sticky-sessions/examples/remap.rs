//! Run with `cargo run -p sol01-sticky-sessions --example remap` from the repository root.
//!
//! Prints the numbers quoted in `exercises/01-sticky-sessions/README.md`: how many of 10,000 session keys
//! change owner when a node joins or leaves, under `hash % n` and under the ring, and how evenly the ring
//! spreads keys for a few vnode counts.

use ex01_sticky_sessions::{HashRing, hash};

/// Vnodes per node for the remapping comparison, the same count the grader uses.
const VNODES: usize = 1000;

fn main() {
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();

    println!("keys that change owner, of {}:", keys.len());
    for (from, to) in [(4_u32, 5_u32), (5, 4), (8, 9)] {
        let modulo = keys
            .iter()
            .filter(|key| {
                let h = hash(key.as_bytes());
                h % u64::from(from) != h % u64::from(to)
            })
            .count();

        let mut ring = HashRing::new(VNODES);
        for node in 1..=from {
            ring.add(node);
        }
        let before: Vec<Option<u32>> = keys.iter().map(|key| ring.get(key.as_bytes())).collect();
        if to > from {
            ring.add(to);
        } else {
            ring.remove(from);
        }
        let ring_moved = keys
            .iter()
            .zip(&before)
            .filter(|&(key, owner)| ring.get(key.as_bytes()) != *owner)
            .count();

        println!("  {from} -> {to} nodes: hash % n moved {modulo:>5}, ring moved {ring_moved:>5}");
    }

    println!("keys per node, 8 nodes (fair share {}):", keys.len() / 8);
    for vnodes in [1, 10, 150, 1000] {
        let mut ring = HashRing::new(vnodes);
        for node in 1..=8 {
            ring.add(node);
        }
        let mut counts = [0_usize; 8];
        for key in &keys {
            if let Some(node) = ring.get(key.as_bytes()) {
                counts[node as usize - 1] += 1;
            }
        }
        let busiest = counts.iter().max().copied().unwrap_or(0);
        let idlest = counts.iter().min().copied().unwrap_or(0);
        println!("  {vnodes:>4} vnodes: busiest {busiest:>4}, idlest {idlest:>4}");
    }
}
