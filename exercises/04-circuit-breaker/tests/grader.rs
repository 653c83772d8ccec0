//! The grader for exercise 04. Run it with `cargo test -p ex04-circuit-breaker` inside
//! `exercises/`.
//!
//! Tests go from easiest to hardest: make the first failing one pass, then the next. The wait
//! comes first, then the closed state, open, half-open, and last the epochs.
//! `solutions/04-circuit-breaker` runs this same file against the reference answer.

use ex04_circuit_breaker::{Breaker, Config, Permit, Rejected, State, open_wait_ms};

/// Small numbers, so each test can be followed by hand: 3 failures in a row open it for 1 s,
/// doubling up to 4 s; 3 probes, of which 2 must succeed.
fn cfg() -> Config {
    Config {
        failure_threshold: 3,
        wait_ms: 1000,
        max_wait_ms: 4000,
        half_open_calls: 3,
        successes_to_close: 2,
    }
}

/// One call at `now_ms` that must be let through, then its result.
fn call(b: &mut Breaker, success: bool, now_ms: u64) {
    let permit = b.try_acquire(now_ms).unwrap_or_else(|r| {
        panic!(
            "try_acquire({now_ms}) in state {:?}: expected a permit, got {r:?}",
            b.state(now_ms)
        )
    });
    b.record(permit, success, now_ms);
}

/// A breaker from `cfg()` opened at `now_ms` by 3 failures.
fn tripped(now_ms: u64) -> Breaker {
    let mut b = Breaker::new(cfg());
    for _ in 0..3 {
        call(&mut b, false, now_ms);
    }
    assert_eq!(
        b.state(now_ms),
        State::Open,
        "3 failures in a row at {now_ms} ms with failure_threshold 3: expected Open"
    );
    b
}

// ---------------------------------------------------------------------------------------------------
// The wait
// ---------------------------------------------------------------------------------------------------

#[test]
fn the_wait_doubles_with_each_open_and_stops_at_the_cap() {
    let c = cfg();
    for (opens, expected) in [(1, 1000), (2, 2000), (3, 4000), (4, 4000), (50, 4000)] {
        assert_eq!(
            open_wait_ms(&c, opens),
            expected,
            "open_wait_ms with wait_ms 1000, max_wait_ms 4000, opens {opens}: expected {expected}"
        );
    }
    assert_eq!(
        open_wait_ms(&c, u32::MAX),
        4000,
        "open_wait_ms(opens = u32::MAX): expected the cap 4000, not an overflow"
    );
}

// ---------------------------------------------------------------------------------------------------
// Closed
// ---------------------------------------------------------------------------------------------------

#[test]
fn a_new_breaker_is_closed_and_lets_calls_through() {
    let mut b = Breaker::new(cfg());
    assert_eq!(b.state(0), State::Closed, "a new breaker: expected Closed");
    assert!(
        b.try_acquire(0).is_ok(),
        "try_acquire(0) on a new breaker: expected a permit"
    );
}

#[test]
fn failures_in_a_row_open_the_breaker() {
    let mut b = Breaker::new(cfg());
    call(&mut b, false, 0);
    call(&mut b, false, 0);
    assert_eq!(
        b.state(0),
        State::Closed,
        "2 failures, threshold 3: expected Closed"
    );
    call(&mut b, false, 0);
    assert_eq!(
        b.state(0),
        State::Open,
        "3 failures, threshold 3: expected Open"
    );
}

#[test]
fn a_success_resets_the_run_of_failures() {
    let mut b = Breaker::new(cfg());
    // F F S F F: never 3 in a row
    for success in [false, false, true, false, false] {
        call(&mut b, success, 0);
    }
    assert_eq!(
        b.state(0),
        State::Closed,
        "failure, failure, success, failure, failure with threshold 3: expected Closed"
    );
    assert_eq!(
        b.consecutive_failures(),
        2,
        "after F F S F F: expected 2 failures in a row"
    );
}

// ---------------------------------------------------------------------------------------------------
// Open
// ---------------------------------------------------------------------------------------------------

#[test]
fn an_open_breaker_refuses_with_the_time_left_to_wait() {
    let mut b = tripped(5000);
    assert_eq!(
        b.try_acquire(5300),
        Err(Rejected {
            retry_after_ms: 700
        }),
        "opened at 5000 for 1000 ms, try_acquire(5300): expected 700 ms left"
    );
    assert_eq!(
        b.try_acquire(5999),
        Err(Rejected { retry_after_ms: 1 }),
        "opened at 5000 for 1000 ms, try_acquire(5999): expected 1 ms left"
    );
}

#[test]
fn the_breaker_is_half_open_once_the_wait_is_over() {
    let mut b = tripped(5000);
    assert_eq!(
        b.state(5999),
        State::Open,
        "opened at 5000 for 1000 ms, state(5999): expected Open"
    );
    assert_eq!(
        b.state(6000),
        State::HalfOpen,
        "opened at 5000 for 1000 ms, state(6000): expected HalfOpen"
    );
}

// ---------------------------------------------------------------------------------------------------
// Half-open
// ---------------------------------------------------------------------------------------------------

#[test]
fn half_open_lets_only_half_open_calls_probes_through() {
    let mut b = tripped(0);
    for i in 1..=3 {
        assert!(
            b.try_acquire(1000).is_ok(),
            "half-open with half_open_calls 3, probe {i}: expected a permit"
        );
    }
    let refused = b.try_acquire(1000);
    assert_eq!(
        refused,
        Err(Rejected {
            retry_after_ms: 2000
        }),
        "a 4th call while 3 probes are out: expected refused, retry after the next wait (2000)"
    );
    assert_eq!(
        b.state(1000),
        State::HalfOpen,
        "refusing a call changes nothing: expected HalfOpen"
    );
}

#[test]
fn enough_successful_probes_close_the_breaker_but_one_is_not_enough() {
    let mut b = tripped(0);
    let probes: Vec<Permit> = (0..3)
        .map(|_| b.try_acquire(1000).expect("a probe"))
        .collect();
    b.record(probes[0], true, 1000);
    assert_eq!(
        b.state(1000),
        State::HalfOpen,
        "1 probe of 3 succeeded, successes_to_close 2: expected still HalfOpen"
    );
    b.record(probes[1], true, 1000);
    assert_eq!(
        b.state(1000),
        State::Closed,
        "2 probes of 3 succeeded: expected Closed"
    );
    assert!(
        b.try_acquire(1000).is_ok(),
        "closed again: expected every call let through"
    );
}

#[test]
fn too_many_failed_probes_reopen_it_for_twice_as_long() {
    let mut b = tripped(0);
    let probes: Vec<Permit> = (0..3)
        .map(|_| b.try_acquire(1000).expect("a probe"))
        .collect();
    b.record(probes[0], false, 1000);
    assert_eq!(
        b.state(1000),
        State::HalfOpen,
        "1 probe of 3 failed, 2 of 3 must succeed: the other 2 can still do it, expected HalfOpen"
    );
    b.record(probes[1], false, 1000);
    assert_eq!(
        b.state(1000),
        State::Open,
        "2 probes of 3 failed: expected Open"
    );
    assert_eq!(
        b.open_until_ms(),
        3000,
        "reopened at 1000, the 2nd open in a row: expected open until 1000 + 2000"
    );
}

#[test]
fn each_open_in_a_row_waits_longer_until_the_cap() {
    let mut b = tripped(0);
    let mut now = 0;
    let mut waits = Vec::new();
    for _ in 0..4 {
        waits.push(b.open_until_ms() - now);
        now = b.open_until_ms();
        call(&mut b, false, now);
        call(&mut b, false, now);
    }
    assert_eq!(
        waits,
        [1000, 2000, 4000, 4000],
        "4 opens in a row (each round's probes failing), wait_ms 1000, cap 4000"
    );
}

#[test]
fn closing_starts_the_backoff_over() {
    let mut b = tripped(0);
    call(&mut b, false, 1000);
    call(&mut b, false, 1000);
    assert_eq!(
        b.opens(),
        2,
        "opened, probes failed, reopened: expected opens 2"
    );
    call(&mut b, true, 3000);
    call(&mut b, true, 3000);
    assert_eq!(
        b.state(3000),
        State::Closed,
        "2 probes succeeded at 3000: expected Closed"
    );
    assert_eq!(b.opens(), 0, "closed: expected opens back to 0");
    for _ in 0..3 {
        call(&mut b, false, 3000);
    }
    assert_eq!(
        b.open_until_ms(),
        4000,
        "tripped again at 3000 after closing: expected the first wait again, until 4000"
    );
}

// ---------------------------------------------------------------------------------------------------
// Epochs
// ---------------------------------------------------------------------------------------------------

#[test]
fn every_change_of_state_bumps_the_epoch() {
    let mut b = Breaker::new(cfg());
    assert_eq!(b.epoch(), 0, "a new breaker: expected epoch 0");
    for _ in 0..3 {
        call(&mut b, false, 0);
    }
    assert_eq!(b.epoch(), 1, "Closed -> Open: expected epoch 1");
    b.state(1000);
    assert_eq!(b.epoch(), 2, "Open -> HalfOpen: expected epoch 2");
    call(&mut b, true, 1000);
    call(&mut b, true, 1000);
    assert_eq!(b.epoch(), 3, "HalfOpen -> Closed: expected epoch 3");
}

#[test]
fn results_of_calls_started_before_a_change_of_state_are_ignored() {
    let mut b = Breaker::new(cfg());
    // Two slow calls start while closed...
    let early: Vec<Permit> = (0..2).map(|_| b.try_acquire(0).expect("closed")).collect();
    for _ in 0..3 {
        call(&mut b, false, 0);
    }
    // ...and only finish, successfully, once the breaker is half-open.
    assert_eq!(b.state(1000), State::HalfOpen);
    for p in early {
        b.record(p, true, 1000);
    }
    assert_eq!(
        b.state(1000),
        State::HalfOpen,
        "2 successes from permits of epoch 0 recorded in half-open (epoch 2): expected them \
         ignored, still HalfOpen"
    );
    assert_eq!(
        b.probes(),
        (0, 0, 0),
        "ignored results: expected no probe counted"
    );
}
