//! The grader for exercise 03. Run it with `cargo test -p ex03-performance-monitoring` inside
//! `exercises/`.
//!
//! Tests go from easiest to hardest: make the first failing one pass, then the next. Counting comes
//! first, then rates, percentiles, memory, and last the health score.
//! `solutions/03-performance-monitoring` runs this same file against the reference answer.

use ex03_performance_monitoring::{Health, Thresholds, Window, health_score, status};

/// A one-second window: the unit the lesson's rates use.
const SECOND: u64 = 1000;

// ---------------------------------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------------------------------

#[test]
fn an_empty_window_counts_nothing_and_has_no_percentiles() {
    let w = Window::new(SECOND);
    assert_eq!(w.count(0), 0, "count(0) of a new window: expected 0");
    assert_eq!(
        w.percentile(0, 50.0),
        None,
        "p50 of a new window: expected None"
    );
    assert_eq!(
        w.error_rate(0),
        0.0,
        "error_rate of a new window: expected 0.0, not NaN"
    );
}

#[test]
fn recorded_requests_are_counted() {
    let mut w = Window::new(SECOND);
    for t in [100, 200, 300] {
        w.record(t, 10.0, false);
    }
    assert_eq!(
        w.count(300),
        3,
        "3 requests at 100, 200, 300 ms; count(300): expected 3"
    );
}

#[test]
fn requests_older_than_the_window_are_not_counted() {
    let mut w = Window::new(SECOND);
    w.record(5000, 10.0, false);
    // inside while now - at < 1000
    assert_eq!(
        w.count(5999),
        1,
        "a sample at 5000 ms, count(5999) with a 1000 ms window: expected 1"
    );
    assert_eq!(
        w.count(6000),
        0,
        "a sample at 5000 ms, count(6000) with a 1000 ms window: expected 0"
    );
}

// ---------------------------------------------------------------------------------------------------
// Rates
// ---------------------------------------------------------------------------------------------------

#[test]
fn the_rate_is_requests_per_second_over_the_window() {
    let mut w = Window::new(10 * SECOND);
    // 50 requests spread over 10 s: 5 per second.
    for i in 0..50 {
        w.record(i * 200, 1.0, false);
    }
    let rate = w.rate(9_999);
    assert!(
        (rate - 5.0).abs() < 1e-9,
        "50 requests in a 10 s window, rate(9999): expected 5.0, got {rate}"
    );
}

#[test]
fn the_error_rate_is_a_percent_of_the_requests_in_the_window() {
    let mut w = Window::new(SECOND);
    for i in 0..20 {
        w.record(100 + i, 1.0, i < 3);
    }
    let r = w.error_rate(200);
    assert!(
        (r - 15.0).abs() < 1e-9,
        "3 failures in 20 requests: expected 15.0 (percent), got {r}"
    );
    // The failures fall out of the window with everything else.
    w.record(1150, 1.0, false);
    assert_eq!(
        w.error_rate(1150),
        0.0,
        "at 1150 ms only the request at 1150 is inside: expected 0.0"
    );
}

// ---------------------------------------------------------------------------------------------------
// Percentiles
// ---------------------------------------------------------------------------------------------------

#[test]
fn percentiles_use_the_nearest_rank() {
    let mut w = Window::new(SECOND);
    // Recorded out of order: 100, 99, … 1 ms.
    for ms in (1..=100).rev() {
        w.record(10, ms as f64, false);
    }
    // nearest rank: the ceil(p/100 * n)-th smallest, with rank at least 1
    for (p, want) in [
        (50.0, 50.0),
        (95.0, 95.0),
        (99.0, 99.0),
        (100.0, 100.0),
        (0.0, 1.0),
        (0.5, 1.0),
    ] {
        assert_eq!(
            w.percentile(10, p),
            Some(want),
            "latencies 1..=100 ms, percentile(p = {p}): expected {want}"
        );
    }
}

#[test]
fn a_single_sample_is_every_percentile() {
    let mut w = Window::new(SECOND);
    w.record(0, 42.0, false);
    for p in [0.0, 50.0, 99.9, 100.0] {
        assert_eq!(
            w.percentile(0, p),
            Some(42.0),
            "one sample of 42 ms, percentile({p})"
        );
    }
}

#[test]
fn percentiles_forget_samples_that_left_the_window() {
    let mut w = Window::new(SECOND);
    // A slow second, then a fast one.
    for i in 0..10 {
        w.record(i * 10, 900.0, false);
    }
    for i in 0..10 {
        w.record(2000 + i * 10, 5.0, false);
    }
    assert_eq!(
        w.percentile(2100, 99.0),
        Some(5.0),
        "the 900 ms requests ended 2 s ago; p99 at 2100 ms: expected 5.0"
    );
}

// ---------------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------------

#[test]
fn recording_forever_keeps_only_one_window_of_samples() {
    let mut w = Window::new(SECOND);
    // 100 requests a second for 100 seconds.
    for i in 0..10_000u64 {
        w.record(i * 10, 1.0, false);
    }
    assert!(
        w.len() <= 100,
        "after 100 s at 100 requests/s with a 1 s window, {} samples are held: expected at most 100",
        w.len()
    );
    w.evict(1_000_000);
    assert_eq!(
        w.len(),
        0,
        "evict long after the last request: expected nothing held"
    );
}

// ---------------------------------------------------------------------------------------------------
// The health score
// ---------------------------------------------------------------------------------------------------

fn calm() -> Health {
    Health {
        cpu_percent: 10.0,
        memory_percent: 20.0,
        lag_ms: 1.0,
        error_rate_percent: 0.0,
        p95_ms: 30.0,
    }
}

#[test]
fn a_calm_worker_scores_100_and_is_healthy() {
    let t = Thresholds::default();
    assert_eq!(health_score(&calm(), &t), 100, "{:?}: expected 100", calm());
    assert_eq!(status(100), "healthy");
}

#[test]
fn each_threshold_crossed_costs_20_points() {
    let t = Thresholds::default();
    let cases = [
        (
            Health {
                cpu_percent: 95.0,
                ..calm()
            },
            80,
        ),
        (
            Health {
                cpu_percent: 95.0,
                lag_ms: 250.0,
                ..calm()
            },
            60,
        ),
        (
            Health {
                memory_percent: 90.0,
                error_rate_percent: 7.5,
                p95_ms: 1500.0,
                ..calm()
            },
            40,
        ),
        (
            Health {
                cpu_percent: 100.0,
                memory_percent: 99.0,
                lag_ms: 500.0,
                error_rate_percent: 50.0,
                p95_ms: 5000.0,
            },
            0,
        ),
    ];
    for (h, want) in cases {
        assert_eq!(
            health_score(&h, &t),
            want,
            "{h:?} with default thresholds: expected {want}"
        );
    }
}

#[test]
fn a_figure_exactly_at_its_threshold_is_not_a_penalty() {
    let t = Thresholds::default();
    let h = Health {
        cpu_percent: 80.0,
        memory_percent: 85.0,
        lag_ms: 100.0,
        error_rate_percent: 5.0,
        p95_ms: 1000.0,
    };
    assert_eq!(
        health_score(&h, &t),
        100,
        "every figure exactly at its threshold: expected 100"
    );
}

#[test]
fn thresholds_are_the_callers_not_constants() {
    let strict = Thresholds {
        p95_ms: 20.0,
        ..Thresholds::default()
    };
    assert_eq!(
        health_score(&calm(), &strict),
        80,
        "p95 30 ms against a 20 ms threshold: expected 80"
    );
}

#[test]
fn healthy_means_a_score_above_50() {
    for (score, want) in [
        (100, "healthy"),
        (60, "healthy"),
        (51, "healthy"),
        (50, "degraded"),
        (0, "degraded"),
    ] {
        assert_eq!(status(score), want, "status({score}): expected {want:?}");
    }
}
