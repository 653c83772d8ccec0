//! The grader for exercise 01. Run it with `cargo test -p ex01-sticky-sessions` inside `exercises/`.
//!
//! Tests go from easiest to hardest: make the first failing one pass, then the next. Ring tests come first,
//! then the session table. `solutions/01-sticky-sessions` runs this same file against the reference answer.

use ex01_sticky_sessions::{HashRing, Session, SessionTable, hash, vnode_point};

/// Vnodes per node in these tests. With 150 (about what ketama-style rings use), one of 8 nodes got 16%
/// more than its fair share of the 10,000 test keys; with 1000, every node is within 5% of its share.
const VNODES: usize = 1000;

/// The keys the distribution tests route: what a session cookie might hold.
fn keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("user-{i}")).collect()
}

/// A ring with `VNODES` points for each node in `nodes`.
fn ring_with(nodes: &[u32]) -> HashRing {
    let mut ring = HashRing::new(VNODES);
    for &node in nodes {
        ring.add(node);
    }
    ring
}

/// The owner of every key, in key order. Panics with the key if one has no owner.
fn owners(ring: &HashRing, keys: &[String]) -> Vec<u32> {
    keys.iter()
        .map(|key| {
            ring.get(key.as_bytes()).unwrap_or_else(|| {
                panic!(
                    "get({key:?}) on a ring with nodes {:?} returned None, expected a node",
                    ring.nodes()
                )
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// The ring
// ---------------------------------------------------------------------------------------------------

#[test]
fn an_empty_ring_has_no_owner() {
    let ring = HashRing::new(VNODES);
    assert_eq!(
        ring.get(b"user-1"),
        None,
        "get(\"user-1\") on an empty ring: expected None"
    );
    assert_eq!(
        ring.get_at(0),
        None,
        "get_at(0) on an empty ring: expected None"
    );
    assert_eq!(ring.len(), 0, "len() of an empty ring");
    assert!(
        ring.is_empty(),
        "is_empty() of an empty ring: expected true"
    );
    assert_eq!(ring.nodes(), Vec::<u32>::new(), "nodes() of an empty ring");
}

#[test]
fn a_ring_with_one_node_sends_every_key_to_it() {
    let mut ring = HashRing::new(VNODES);
    assert!(
        ring.add(7),
        "add(7) to an empty ring: expected true (it was not there)"
    );
    for key in keys(100) {
        assert_eq!(
            ring.get(key.as_bytes()),
            Some(7),
            "get({key:?}) with only node 7: expected Some(7)"
        );
    }
    assert_eq!(ring.len(), 1, "len() after add(7)");
    assert!(!ring.is_empty(), "is_empty() after add(7): expected false");
}

#[test]
fn adding_a_node_twice_keeps_one_copy() {
    let mut ring = HashRing::new(VNODES);
    assert!(ring.add(7), "first add(7): expected true");
    assert!(
        !ring.add(7),
        "second add(7): expected false (already on the ring)"
    );
    assert_eq!(ring.nodes(), vec![7], "nodes() after add(7) twice");
    assert_eq!(ring.len(), 1, "len() after add(7) twice");
}

#[test]
fn nodes_are_listed_in_ascending_order() {
    let ring = ring_with(&[30, 10, 20]);
    assert_eq!(
        ring.nodes(),
        vec![10, 20, 30],
        "nodes() after adding 30, 10, 20"
    );
    assert_eq!(ring.len(), 3, "len() after adding 30, 10, 20");
}

#[test]
fn removing_the_last_node_empties_the_ring() {
    let mut ring = ring_with(&[7]);
    assert!(
        ring.remove(7),
        "remove(7) from a ring holding 7: expected true"
    );
    assert_eq!(
        ring.get(b"user-1"),
        None,
        "get(\"user-1\") after removing the only node: expected None"
    );
    assert!(
        ring.is_empty(),
        "is_empty() after removing the only node: expected true"
    );
    assert_eq!(
        ring.nodes(),
        Vec::<u32>::new(),
        "nodes() after removing the only node"
    );
}

#[test]
fn removing_a_node_that_is_not_there_changes_nothing() {
    let mut ring = ring_with(&[1, 2, 3]);
    let keys = keys(1000);
    let before = owners(&ring, &keys);

    assert!(
        !ring.remove(9),
        "remove(9) from a ring of [1, 2, 3]: expected false (9 is not there)"
    );

    assert_eq!(ring.nodes(), vec![1, 2, 3], "nodes() after remove(9)");
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            ring.get(key.as_bytes()),
            Some(before[i]),
            "get({key:?}) after remove(9): expected the owner before it"
        );
    }
}

#[test]
fn the_same_key_always_goes_to_the_same_node() {
    // Two rings with the same nodes, added in different orders, as two processes might build them.
    let ring = ring_with(&[1, 2, 3, 4]);
    let other = ring_with(&[4, 2, 3, 1]);
    for key in keys(1000) {
        let first = ring.get(key.as_bytes());
        assert_eq!(
            ring.get(key.as_bytes()),
            first,
            "get({key:?}) twice on one ring: expected the same node"
        );
        assert_eq!(
            other.get(key.as_bytes()),
            first,
            "get({key:?}) on rings of nodes [1, 2, 3, 4] added in different orders: expected the same node"
        );
    }
}

#[test]
fn a_position_belongs_to_the_first_point_at_or_after_it_wrapping_around() {
    // Two nodes with one point each: `lo` is the lower point, `hi` the higher.
    //
    //   0 ........ lo ................ hi ........ u64::MAX
    //              [a]                 [b]
    //
    //   get_at(0)       -> a   (the first point clockwise from 0 is lo)
    //   get_at(lo)      -> a   (a point owns its own position)
    //   get_at(lo + 1)  -> b
    //   get_at(hi)      -> b
    //   get_at(hi + 1)  -> a   (past the last point, wrap around to the first)
    //   get_at(MAX)     -> a
    let mut ring = HashRing::new(1);
    ring.add(1);
    ring.add(2);
    let (p1, p2) = (vnode_point(1, 0), vnode_point(2, 0));
    let ((lo, a), (hi, b)) = if p1 < p2 {
        ((p1, 1), (p2, 2))
    } else {
        ((p2, 2), (p1, 1))
    };
    // With this hash the two points are far from 0, from each other and from u64::MAX, so the +1s below
    // stay between them. (Checked here so a changed hash fails loudly rather than strangely.)
    assert!(
        0 < lo && lo + 1 < hi && hi < u64::MAX,
        "points of nodes 1 and 2 are at {lo} and {hi}"
    );

    for (position, expected, why) in [
        (0, a, "the first point clockwise from 0 is lo"),
        (lo, a, "a point owns its own position"),
        (lo + 1, b, "the first point after lo is hi"),
        (hi, b, "a point owns its own position"),
        (hi + 1, a, "past the last point the ring wraps to lo"),
        (u64::MAX, a, "past the last point the ring wraps to lo"),
    ] {
        assert_eq!(
            ring.get_at(position),
            Some(expected),
            "get_at({position}) with node {a} at lo={lo} and node {b} at hi={hi}: expected Some({expected}), because {why}"
        );
    }
}

#[test]
fn a_key_goes_to_the_first_point_clockwise_from_its_hash() {
    // A brute-force model of the ring: every point in a plain list; the owner of hash h is the node of the
    // smallest point >= h, or of the smallest point overall if there is none (wrap around).
    //
    //   points:  [p(3,1)] ... [p(1,0)] ... h ... [p(2,2)] ... [p(1,3)]
    //                                            ^ owner of h: node 2
    let nodes = [1, 2, 3];
    let vnodes = 4;
    let mut ring = HashRing::new(vnodes);
    let mut points = Vec::new();
    for node in nodes {
        ring.add(node);
        for replica in 0..vnodes {
            points.push((vnode_point(node, replica), node));
        }
    }
    points.sort();
    let model = |h: u64| {
        points
            .iter()
            .find(|&&(p, _)| p >= h)
            .unwrap_or(&points[0])
            .1
    };

    for key in keys(2000) {
        let h = hash(key.as_bytes());
        assert_eq!(
            ring.get(key.as_bytes()),
            Some(model(h)),
            "get({key:?}) (hash {h}) on nodes {nodes:?} with {vnodes} vnodes each: expected the node of the first point at or after {h}"
        );
    }
}

#[test]
fn a_ring_with_zero_vnodes_per_node_still_gives_each_node_a_point() {
    let mut ring = HashRing::new(0);
    ring.add(5);
    assert_eq!(
        ring.get(b"user-1"),
        Some(5),
        "HashRing::new(0), add(5), get(\"user-1\"): expected Some(5)"
    );
}

#[test]
fn keys_spread_evenly_across_nodes() {
    let keys = keys(10_000);
    for n in [2_u32, 3, 4, 8] {
        let nodes: Vec<u32> = (1..=n).collect();
        let ring = ring_with(&nodes);
        let mut counts = vec![0_usize; nodes.len()];
        for owner in owners(&ring, &keys) {
            let slot = nodes.iter().position(|&node| node == owner);
            let slot = slot
                .unwrap_or_else(|| panic!("a key went to node {owner}, which is not in {nodes:?}"));
            counts[slot] += 1;
        }
        // Fair share is 10,000 / n; allow 15% either way.
        let fair = keys.len() as f64 / f64::from(n);
        let (low, high) = (fair * 0.85, fair * 1.15);
        for (node, &count) in nodes.iter().zip(&counts) {
            assert!(
                (low..=high).contains(&(count as f64)),
                "{n} nodes x {VNODES} vnodes, 10,000 keys: node {node} got {count} keys, expected {low:.0}..={high:.0} (all counts: {counts:?})"
            );
        }
    }
}

#[test]
fn adding_a_node_moves_keys_only_to_it_and_at_most_its_share() {
    // Growing from n - 1 to n nodes: only keys that now belong to the new node may move, and the new
    // node's fair share is 1/n, so at most 1.25/n of the keys move. (hash % n would move about (n-1)/n.)
    //
    //   before:  ... [2] ........ [1] ...        key k owned by 1
    //   after:   ... [2] .. [9] . [1] ...        k, if it lies before 9's point, moves to 9 and only to 9
    let keys = keys(10_000);
    for n in [2_u32, 3, 4, 8] {
        let mut ring = ring_with(&(1..n).collect::<Vec<_>>());
        let before = owners(&ring, &keys);
        let new_node = 100;
        ring.add(new_node);
        let after = owners(&ring, &keys);

        let mut moved = 0;
        for (i, key) in keys.iter().enumerate() {
            if before[i] != after[i] {
                moved += 1;
                assert_eq!(
                    after[i], new_node,
                    "{n} nodes after adding {new_node}: {key:?} moved from {} to {}, expected it to stay or move to {new_node}",
                    before[i], after[i]
                );
            }
        }
        let limit = 1.25 / f64::from(n) * keys.len() as f64;
        assert!(
            (moved as f64) <= limit,
            "growing from {} to {n} nodes moved {moved} of 10,000 keys, expected at most {limit:.0} (1.25/{n})",
            n - 1
        );
    }
}

#[test]
fn removing_a_node_moves_only_its_own_keys() {
    // Shrinking from n to n - 1 nodes: exactly the removed node's keys move, each to another node; every
    // other key stays. The removed node held about 1/n of the keys, so at most 1.25/n move.
    //
    //   before:  ... [2] .. [3] . [1] ...        keys owned by 3 lie just before 3's points
    //   after:   ... [2] ........ [1] ...        those keys (and only those) now go to the next point: 1
    let keys = keys(10_000);
    for n in [2_u32, 3, 4, 8] {
        let mut ring = ring_with(&(1..=n).collect::<Vec<_>>());
        let before = owners(&ring, &keys);
        let gone = n.div_ceil(2); // a node from the middle of the id range
        assert!(
            ring.remove(gone),
            "remove({gone}) from nodes 1..={n}: expected true"
        );
        let after = owners(&ring, &keys);

        let mut moved = 0;
        for (i, key) in keys.iter().enumerate() {
            if before[i] == gone {
                moved += 1;
                assert_ne!(
                    after[i], gone,
                    "{key:?} still goes to {gone} after remove({gone})"
                );
            } else {
                assert_eq!(
                    after[i], before[i],
                    "{n} nodes, remove({gone}): {key:?} was on {} and moved to {}, expected it to stay (only {gone}'s keys move)",
                    before[i], after[i]
                );
            }
        }
        let limit = 1.25 / f64::from(n) * keys.len() as f64;
        assert!(
            (moved as f64) <= limit,
            "removing {gone} from {n} nodes moved {moved} of 10,000 keys, expected at most {limit:.0} (1.25/{n})"
        );
    }
}

#[test]
fn adding_then_removing_a_node_puts_every_key_back() {
    let keys = keys(10_000);
    let mut ring = ring_with(&[1, 2, 3, 4]);
    let before = owners(&ring, &keys);
    ring.add(9);
    ring.remove(9);
    let after = owners(&ring, &keys);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            after[i], before[i],
            "nodes [1, 2, 3, 4], add(9), remove(9): {key:?} went from {} to {}, expected it back where it was",
            before[i], after[i]
        );
    }
    assert_eq!(
        ring.nodes(),
        vec![1, 2, 3, 4],
        "nodes() after add(9), remove(9)"
    );
}

// ---------------------------------------------------------------------------------------------------
// The session table. Times are plain numbers of milliseconds: no clock, no sleeps.
// ---------------------------------------------------------------------------------------------------

/// The session a test expects, written out in full so a mismatch shows every field.
fn session(id: &str, created_ms: u64, last_access_ms: u64, request_count: u64) -> Session {
    Session {
        id: id.to_owned(),
        created_ms,
        last_access_ms,
        request_count,
    }
}

#[test]
fn a_new_table_is_empty() {
    let table = SessionTable::new(1000, 10);
    assert_eq!(table.len(), 0, "len() of SessionTable::new(1000, 10)");
    assert!(table.is_empty(), "is_empty() of a new table: expected true");
}

#[test]
fn an_unknown_session_is_not_found() {
    let mut table = SessionTable::new(1000, 10);
    assert_eq!(
        table.get("nope", 0),
        None,
        "get(\"nope\", 0) on an empty table: expected None"
    );
    assert_eq!(
        table.touch("nope", 0),
        None,
        "touch(\"nope\", 0) on an empty table: expected None"
    );
}

#[test]
fn inserting_a_session_records_its_first_request() {
    let mut table = SessionTable::new(1000, 10);
    assert_eq!(
        table.insert("a", 100),
        None,
        "insert(\"a\", 100) into an empty table: expected no eviction"
    );
    assert_eq!(table.len(), 1, "len() after one insert");
    assert_eq!(
        table.get("a", 100),
        Some(&session("a", 100, 100, 1)),
        "get(\"a\", 100) after insert(\"a\", 100): expected created 100, last access 100, 1 request"
    );
}

#[test]
fn touching_a_session_counts_the_request_and_records_the_access() {
    let mut table = SessionTable::new(1000, 10);
    table.insert("a", 100);
    assert_eq!(
        table.touch("a", 150),
        Some(&session("a", 100, 150, 2)),
        "insert(\"a\", 100), touch(\"a\", 150): expected created 100, last access 150, 2 requests"
    );
    assert_eq!(
        table.get("a", 160),
        Some(&session("a", 100, 150, 2)),
        "get(\"a\", 160) must only look: expected last access still 150 and still 2 requests"
    );
}

#[test]
fn each_touch_slides_the_expiry_forward() {
    // ttl 1000. Each touch comes 900 ms after the one before, so the session never idles for 1000 ms,
    // although by the last touch it is 2700 ms old.
    //
    //   t:      0        900       1800      2700
    //           insert   touch     touch     touch
    //   expires 1000     1900      2800      3700
    let mut table = SessionTable::new(1000, 10);
    table.insert("a", 0);
    for (now, count) in [(900, 2), (1800, 3), (2700, 4)] {
        assert_eq!(
            table.touch("a", now),
            Some(&session("a", 0, now, count)),
            "ttl 1000, touches 900 ms apart, touch(\"a\", {now}): expected alive with last access {now}, {count} requests"
        );
    }
}

#[test]
fn a_session_is_alive_until_one_ms_before_ttl_after_its_last_access() {
    // ttl 1000, last access 0: alive at 999, expired at exactly 1000.
    //
    //   t:   0 ................ 999 | 1000
    //        insert            alive | expired
    let mut table = SessionTable::new(1000, 10);
    table.insert("a", 0);
    assert!(
        table.get("a", 999).is_some(),
        "ttl 1000, insert at 0, get at 999: expected alive"
    );
    assert_eq!(
        table.get("a", 1000),
        None,
        "ttl 1000, insert at 0, get at 1000: expected expired (None)"
    );

    let mut table = SessionTable::new(1000, 10);
    table.insert("a", 0);
    assert_eq!(
        table.touch("a", 999),
        Some(&session("a", 0, 999, 2)),
        "ttl 1000, insert at 0, touch at 999: expected alive"
    );
    assert_eq!(
        table.touch("a", 1999),
        None,
        "ttl 1000, last access 999, touch at 1999: expected expired (None)"
    );
}

#[test]
fn touching_an_expired_session_removes_it() {
    let mut table = SessionTable::new(1000, 10);
    table.insert("a", 0);
    table.insert("b", 500);
    assert_eq!(
        table.touch("a", 1200),
        None,
        "ttl 1000, \"a\" last used at 0, touch at 1200: expected None"
    );
    assert_eq!(
        table.len(),
        1,
        "len() after touching expired \"a\": expected 1 (only \"b\" left)"
    );
    assert_eq!(
        table.touch("a", 1200),
        None,
        "touch(\"a\") again after it expired: expected None"
    );
}

#[test]
fn inserting_an_existing_id_replaces_it_without_evicting() {
    let mut table = SessionTable::new(1000, 2);
    table.insert("a", 0);
    table.insert("b", 0);
    table.touch("a", 10);
    assert_eq!(
        table.insert("a", 50),
        None,
        "full table [a, b], insert(\"a\", 50): expected no eviction"
    );
    assert_eq!(table.len(), 2, "len() after re-inserting \"a\"");
    assert_eq!(
        table.get("a", 50),
        Some(&session("a", 50, 50, 1)),
        "insert(\"a\", 50) over an existing \"a\": expected a fresh session (created 50, 1 request)"
    );
}

#[test]
fn inserting_into_a_full_table_evicts_the_least_recently_accessed() {
    // max 3.
    //
    //   t:   0         10        20        30         40
    //        insert a  insert b  insert c  touch a    insert d (table full)
    //   last access then:  a=30  b=10  c=20   ->  b is the least recently accessed: evict b
    let mut table = SessionTable::new(1000, 3);
    assert_eq!(
        table.insert("a", 0),
        None,
        "insert(\"a\", 0): room left, expected no eviction"
    );
    assert_eq!(
        table.insert("b", 10),
        None,
        "insert(\"b\", 10): room left, expected no eviction"
    );
    assert_eq!(
        table.insert("c", 20),
        None,
        "insert(\"c\", 20): room left, expected no eviction"
    );
    table.touch("a", 30);
    assert_eq!(
        table.insert("d", 40),
        Some("b".to_owned()),
        "max 3, last access a=30 b=10 c=20, insert(\"d\", 40): expected to evict \"b\""
    );
    assert_eq!(
        table.len(),
        3,
        "len() after an eviction: expected to stay at max (3)"
    );
    assert_eq!(
        table.get("b", 40),
        None,
        "get(\"b\") after it was evicted: expected None"
    );
    for id in ["a", "c", "d"] {
        assert!(
            table.get(id, 40).is_some(),
            "get({id:?}, 40) after evicting \"b\": expected it to be kept"
        );
    }
}

#[test]
fn eviction_ties_go_to_the_smallest_id() {
    // max 2, "b" and "a" both last used at 5: the tie goes to the smallest id, "a", whatever the insert order.
    let mut table = SessionTable::new(1000, 2);
    table.insert("b", 5);
    table.insert("a", 5);
    assert_eq!(
        table.insert("c", 6),
        Some("a".to_owned()),
        "max 2, \"b\" and \"a\" both last used at 5, insert(\"c\", 6): expected to evict \"a\" (smallest id)"
    );
}

#[test]
fn remove_expired_counts_what_it_removed() {
    // ttl 100, swept at 150:
    //
    //   session  last access  idle at 150  ->
    //   a        0            150          expired
    //   b        50           100          expired (exactly ttl)
    //   c        120          30           kept
    let mut table = SessionTable::new(100, 10);
    table.insert("a", 0);
    table.insert("b", 50);
    table.insert("c", 120);
    assert_eq!(
        table.remove_expired(150),
        2,
        "ttl 100, last access a=0 b=50 c=120, remove_expired(150): expected 2 (a, b)"
    );
    assert_eq!(table.len(), 1, "len() after the sweep: expected 1 (c)");
    assert!(
        table.get("c", 150).is_some(),
        "get(\"c\", 150) after the sweep: expected kept"
    );
    assert_eq!(
        table.remove_expired(150),
        0,
        "a second remove_expired(150): expected 0, nothing left to remove"
    );
}

#[test]
fn a_table_with_room_for_zero_sessions_still_keeps_one() {
    let mut table = SessionTable::new(1000, 0);
    assert_eq!(
        table.insert("a", 0),
        None,
        "SessionTable::new(1000, 0), insert(\"a\", 0): expected no eviction"
    );
    assert_eq!(
        table.insert("b", 1),
        Some("a".to_owned()),
        "then insert(\"b\", 1): expected to evict \"a\""
    );
    assert_eq!(table.len(), 1, "len(): expected 1");
}

#[test]
fn a_clock_that_steps_back_neither_expires_nor_rewinds_a_session() {
    // ttl 1000, last access 5000, then a touch "at" 4000 (the clock stepped back): still alive, and the
    // last access stays at 5000 rather than moving back to 4000.
    let mut table = SessionTable::new(1000, 10);
    table.insert("a", 5000);
    assert_eq!(
        table.touch("a", 4000),
        Some(&session("a", 5000, 5000, 2)),
        "ttl 1000, insert at 5000, touch at 4000: expected alive, last access still 5000, 2 requests"
    );
    assert_eq!(
        table.remove_expired(4000),
        0,
        "remove_expired(4000) after the clock stepped back: expected 0"
    );
}
