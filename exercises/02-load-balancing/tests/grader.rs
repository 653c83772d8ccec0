//! The grader for exercise 02. Run it with `cargo test -p ex02-load-balancing` inside `exercises/`.
//!
//! Tests go from easiest to hardest: least-connections first, then smooth weighted round-robin, then
//! power of two choices. `solutions/02-load-balancing` runs this same file against the reference answer.

use ex02_load_balancing::{LeastConnections, PowerOfTwoChoices, Selector, SmoothWeighted, Worker};

/// Idle workers with ids 1..=n and weight 1.
fn idle(n: usize) -> Vec<Worker> {
    (1..=n)
        .map(|id| Worker {
            id,
            in_flight: 0,
            weight: 1,
        })
        .collect()
}

/// Workers with ids 1..=n and these in-flight counts.
fn busy(in_flight: &[u64]) -> Vec<Worker> {
    in_flight
        .iter()
        .enumerate()
        .map(|(i, &n)| Worker {
            id: i + 1,
            in_flight: n,
            weight: 1,
        })
        .collect()
}

/// Workers with ids 1..=n and these weights.
fn weighted(weights: &[u32]) -> Vec<Worker> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Worker {
            id: i + 1,
            in_flight: 0,
            weight: w,
        })
        .collect()
}

/// The id `selector` picks from `workers`.
fn pick(selector: &dyn Selector, workers: &[Worker]) -> usize {
    let i = selector.select(workers).unwrap_or_else(|| {
        panic!(
            "{}.select({workers:?}) returned None, expected an index",
            selector.name()
        )
    });
    assert!(
        i < workers.len(),
        "{}.select returned index {i} for {} workers",
        selector.name(),
        workers.len()
    );
    workers[i].id
}

/// `n` picks in a row, as ids, with nothing changing in between.
fn sequence(selector: &dyn Selector, workers: &[Worker], n: usize) -> Vec<usize> {
    (0..n).map(|_| pick(selector, workers)).collect()
}

/// How many times `id` appears in `picks`.
fn count(picks: &[usize], id: usize) -> usize {
    picks.iter().filter(|p| **p == id).count()
}

/// The longest run of one id in `picks`.
fn longest_run(picks: &[usize]) -> usize {
    picks
        .chunk_by(|a, b| a == b)
        .map(<[usize]>::len)
        .max()
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------
// Least connections
// ---------------------------------------------------------------------------------------------------

#[test]
fn least_connections_with_no_workers_picks_none() {
    let lc = LeastConnections::new();
    assert_eq!(lc.select(&[]), None, "select(&[]): expected None");
}

#[test]
fn least_connections_picks_the_worker_with_fewest_in_flight() {
    let lc = LeastConnections::new();
    let workers = busy(&[4, 1, 2]);
    for _ in 0..6 {
        assert_eq!(
            pick(&lc, &workers),
            2,
            "in flight 4/1/2 on workers 1/2/3: expected worker 2 every time"
        );
    }
}

#[test]
fn least_connections_lets_idle_workers_take_turns() {
    let lc = LeastConnections::new();
    // All idle. Pick k starts its scan at index k % 3, and the first of the equal counts wins:
    //   pick 0: scan 1 2 3 → 1    pick 1: scan 2 3 1 → 2    pick 2: scan 3 1 2 → 3    …
    assert_eq!(
        sequence(&lc, &idle(3), 6),
        [1, 2, 3, 1, 2, 3],
        "6 picks over 3 idle workers"
    );
}

#[test]
fn least_connections_breaks_ties_among_the_least_busy_only() {
    let lc = LeastConnections::new();
    // Workers 1 and 3 have 0 in flight, worker 2 has 5: 2 is never picked, 1 and 3 share the picks.
    //   pick 0: scan 1 2 3 → 1    pick 1: scan 2 3 1 → 3    pick 2: scan 3 1 2 → 3    pick 3 → 1
    let picks = sequence(&lc, &busy(&[0, 5, 0]), 6);
    assert_eq!(picks, [1, 3, 3, 1, 3, 3], "6 picks with in flight 0/5/0");
}

#[test]
fn least_connections_splits_a_burst_of_forty_twenty_twenty() {
    // What the cluster's edge does with 40 requests arriving together: pick, then count the request
    // in flight before the next pick. The Node.js original split these 27/13.
    let lc = LeastConnections::new();
    let mut workers = idle(2);
    for _ in 0..40 {
        let id = pick(&lc, &workers);
        workers[id - 1].in_flight += 1;
    }
    assert_eq!(
        (workers[0].in_flight, workers[1].in_flight),
        (20, 20),
        "40 concurrent requests over 2 workers"
    );
}

// ---------------------------------------------------------------------------------------------------
// Smooth weighted round-robin
// ---------------------------------------------------------------------------------------------------

#[test]
fn weighted_with_no_workers_picks_none() {
    let w = SmoothWeighted::new();
    assert_eq!(w.select(&[]), None, "select(&[]): expected None");
}

#[test]
fn weighted_with_equal_weights_is_round_robin() {
    let w = SmoothWeighted::new();
    assert_eq!(
        sequence(&w, &weighted(&[1, 1, 1]), 6),
        [1, 2, 3, 1, 2, 3],
        "weights 1,1,1"
    );
}

#[test]
fn weighted_three_to_one_follows_the_running_values() {
    let w = SmoothWeighted::new();
    let workers = weighted(&[3, 1]);
    // running values (worker 1, worker 2); each pick adds the weights, the largest wins and drops
    // by the total (4):
    //   ( 0, 0) + (3,1) = ( 3, 1) → 1 wins → (-1, 1)
    //   (-1, 1) + (3,1) = ( 2, 2) → tie, the first wins: 1 → (-2, 2)
    //   (-2, 2) + (3,1) = ( 1, 3) → 2 wins → ( 1,-1)
    //   ( 1,-1) + (3,1) = ( 4, 0) → 1 wins → ( 0, 0)   back to the start
    let expected = [
        (1, [(1, -1), (2, 1)]),
        (1, [(1, -2), (2, 2)]),
        (2, [(1, 1), (2, -1)]),
        (1, [(1, 0), (2, 0)]),
    ];
    for (k, (id, values)) in expected.into_iter().enumerate() {
        assert_eq!(pick(&w, &workers), id, "pick {k} with weights 3,1");
        assert_eq!(
            w.current(),
            values.into_iter().collect(),
            "running values after pick {k} with weights 3,1"
        );
    }
}

#[test]
fn weighted_five_one_one_spreads_the_light_workers() {
    // nginx's own example: weights {a: 5, b: 1, c: 1} give a a b a c a a, never a a a a a b c.
    let w = SmoothWeighted::new();
    assert_eq!(
        sequence(&w, &weighted(&[5, 1, 1]), 14),
        [1, 1, 2, 1, 3, 1, 1, 1, 1, 2, 1, 3, 1, 1],
        "two periods with weights 5,1,1"
    );
}

#[test]
fn weighted_gives_exact_shares_without_long_bursts() {
    let w = SmoothWeighted::new();
    let picks = sequence(&w, &weighted(&[3, 1]), 4000);
    assert_eq!(
        count(&picks, 1),
        3000,
        "weights 3,1 over 4000 picks: worker 1 should get 3000"
    );
    assert!(
        longest_run(&picks) <= 3,
        "weights 3,1: the longest run of one worker is {}, expected at most 3",
        longest_run(&picks)
    );
}

#[test]
fn weighted_keeps_going_when_a_worker_leaves() {
    let w = SmoothWeighted::new();
    let all = weighted(&[2, 1, 1]);
    sequence(&w, &all, 3);
    // Worker 2 goes away (restarting); the other two share by their weights, 2:1.
    let rest = vec![all[0], all[2]];
    let picks = sequence(&w, &rest, 300);
    assert_eq!(count(&picks, 2), 0, "worker 2 is not in the list");
    let share = count(&picks, 1);
    assert!(
        (198..=202).contains(&share),
        "weights 2 and 1 over 300 picks: worker 1 got {share}, expected 200"
    );
}

// ---------------------------------------------------------------------------------------------------
// Power of two choices
// ---------------------------------------------------------------------------------------------------

#[test]
fn two_choices_are_two_distinct_indices_in_range() {
    let p = PowerOfTwoChoices::from_seed(9);
    for n in 2..6 {
        for _ in 0..1000 {
            let (a, b) = p.two(n);
            assert!(
                a != b && a < n && b < n,
                "two({n}) returned ({a}, {b}): expected two different indices below {n}"
            );
        }
    }
}

#[test]
fn two_choices_follow_the_documented_draws() {
    // With seed 0, below(4) then below(3) draw these; b steps over a when b >= a.
    let draws = PowerOfTwoChoices::from_seed(0);
    let p = PowerOfTwoChoices::from_seed(0);
    for k in 0..10 {
        let a = draws.below(4);
        let b = draws.below(3);
        let expected = (a, if b >= a { b + 1 } else { b });
        assert_eq!(
            p.two(4),
            expected,
            "draw {k}: below(4) = {a}, below(3) = {b}"
        );
    }
}

#[test]
fn two_choices_with_no_workers_picks_none_and_with_one_picks_it() {
    let p = PowerOfTwoChoices::from_seed(1);
    assert_eq!(p.select(&[]), None, "select(&[]): expected None");
    assert_eq!(
        p.select(&busy(&[7])),
        Some(0),
        "one worker: it is the only choice"
    );
}

#[test]
fn two_choices_send_to_the_less_busy_candidate() {
    // With two workers both are always the candidates, so the less busy one always wins.
    let p = PowerOfTwoChoices::from_seed(1);
    let workers = busy(&[3, 0]);
    for _ in 0..20 {
        assert_eq!(pick(&p, &workers), 2, "in flight 3/0: expected worker 2");
    }
}

#[test]
fn two_choices_never_pick_the_busiest_of_four() {
    // The busiest worker can only win against itself, and the two candidates are distinct.
    let p = PowerOfTwoChoices::from_seed(42);
    let picks = sequence(&p, &busy(&[1, 2, 9, 1]), 1000);
    assert_eq!(
        count(&picks, 3),
        0,
        "in flight 1/2/9/1: worker 3 was picked"
    );
}

#[test]
fn two_choices_with_the_same_seed_make_the_same_picks() {
    let workers = busy(&[0, 1, 0, 1]);
    let a = sequence(&PowerOfTwoChoices::from_seed(7), &workers, 50);
    let b = sequence(&PowerOfTwoChoices::from_seed(7), &workers, 50);
    assert_eq!(a, b, "seed 7 twice");
}

#[test]
fn two_choices_spread_idle_workers_evenly() {
    let p = PowerOfTwoChoices::from_seed(3);
    let picks = sequence(&p, &idle(4), 40_000);
    for id in 1..=4 {
        let n = count(&picks, id);
        assert!(
            (9_500..=10_500).contains(&n),
            "40000 picks over 4 idle workers: worker {id} got {n}, expected 10000 ± 500"
        );
    }
}
