//! The grader for exercise 05. Run it with `cargo test -p ex05-canary` inside `exercises/`.
//!
//! Tests go from easiest to hardest: make the first failing one pass, then the next. The
//! splitter comes first (the bucket, then the split), then the figures a verdict is made of
//! (error rate, p95), and last the verdict itself.
//! `solutions/05-canary` runs this same file against the reference answer.

use ex05_canary::{
    Breach, Rules, Verdict, Version, Window, bucket, error_rate, p95, split, verdict,
};

fn users(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!("user-{i}"))
}

/// The share of `n` users (in percent) that `split` sends to the canary at `percent`.
fn canary_share(salt: &str, n: usize, percent: u8) -> f64 {
    let on = users(n)
        .filter(|u| split(salt, u, percent) == Version::Canary)
        .count();
    100.0 * on as f64 / n as f64
}

/// A window of `requests` requests with `errors` failures, every request timed at `latency_ms`.
fn window(requests: u64, errors: u64, latency_ms: u64) -> Window {
    Window {
        requests,
        errors,
        latencies_ms: vec![latency_ms; requests as usize],
    }
}

/// Rules whose numbers are exact in binary, so a result at a limit is exactly at it.
fn exact_rules() -> Rules {
    Rules {
        error_ratio: 1.5,
        error_floor: 0.125,
        latency_ratio: 1.5,
        latency_floor_ms: 10.0,
        min_requests: 100,
    }
}

// ---------------------------------------------------------------------------------------------------
// The splitter
// ---------------------------------------------------------------------------------------------------

#[test]
fn a_bucket_is_always_below_100() {
    for user in users(2_000).chain(["".to_string(), "é漢🦀".to_string()]) {
        let b = bucket("release-42", &user);
        assert!(
            b < 100,
            "bucket(\"release-42\", {user:?}) = {b}: expected 0..100"
        );
    }
}

#[test]
fn the_same_salt_and_user_always_get_the_same_bucket() {
    for user in users(200) {
        let first = bucket("release-42", &user);
        for _ in 0..3 {
            assert_eq!(
                bucket("release-42", &user),
                first,
                "bucket(\"release-42\", {user:?}) changed between calls: a user must never move"
            );
        }
    }
}

#[test]
fn buckets_are_spread_evenly_over_10000_users() {
    let mut counts = [0u32; 100];
    for user in users(10_000) {
        counts[usize::from(bucket("release-42", &user))] += 1;
    }
    // 100 expected in each; a fair hash stays within about 4 standard deviations (±40).
    for (b, n) in counts.iter().enumerate() {
        assert!(
            (60..=140).contains(n),
            "bucket {b} holds {n} of 10,000 users (user-0 … user-9999, salt \"release-42\"): \
             expected about 100; is every byte of the salt and the user mixed into the hash?"
        );
    }
}

#[test]
fn zero_percent_sends_everyone_to_stable_and_100_everyone_to_the_canary() {
    for user in users(500) {
        assert_eq!(
            split("s", &user, 0),
            Version::Stable,
            "split(\"s\", {user:?}, 0)"
        );
        assert_eq!(
            split("s", &user, 100),
            Version::Canary,
            "split(\"s\", {user:?}, 100)"
        );
    }
}

#[test]
fn the_canary_share_is_within_3_points_of_the_percentage_over_2000_users() {
    for percent in [10, 25, 50, 75] {
        let share = canary_share("release-42", 2_000, percent);
        assert!(
            (share - f64::from(percent)).abs() <= 3.0,
            "split(\"release-42\", user-0 … user-1999, {percent}): {share:.1}% on the canary, \
             expected {percent} ± 3"
        );
    }
}

#[test]
fn raising_the_percentage_never_moves_a_user_back_to_stable() {
    let steps = [0, 10, 25, 50, 75, 100];
    for user in users(2_000) {
        let mut was_canary_at = None;
        for p in steps {
            let v = split("release-42", &user, p);
            if let Some(q) = was_canary_at {
                assert_eq!(
                    v,
                    Version::Canary,
                    "{user:?} was on the canary at {q}% but back on stable at {p}%"
                );
            } else if v == Version::Canary {
                was_canary_at = Some(p);
            }
        }
    }
}

#[test]
fn two_salts_at_25_percent_pick_mostly_different_users() {
    let n = 4_000;
    let both = users(n)
        .filter(|u| split("release-42", u, 25) == Version::Canary)
        .filter(|u| split("release-43", u, 25) == Version::Canary)
        .count();
    let share = 100.0 * both as f64 / n as f64;
    // Independent quarters overlap on a sixteenth: 6.25%. The same quarter would be 25%.
    assert!(
        (3.5..=9.5).contains(&share),
        "{share:.2}% of {n} users are on the canary at 25% under both \"release-42\" and \
         \"release-43\": expected about 6.25%; does the salt go into the hash?"
    );
}

// ---------------------------------------------------------------------------------------------------
// The figures
// ---------------------------------------------------------------------------------------------------

#[test]
fn the_error_rate_is_errors_over_requests_and_zero_with_no_requests() {
    for (requests, errors, expected) in [(0, 0, 0.0), (100, 0, 0.0), (200, 50, 0.25), (8, 8, 1.0)] {
        let w = window(requests, errors, 10);
        let got = error_rate(&w);
        assert_eq!(
            got, expected,
            "error_rate of {requests} requests with {errors} errors: expected {expected}"
        );
    }
}

#[test]
fn p95_is_the_nearest_rank_and_none_without_samples() {
    let one_to_100: Vec<u64> = (1..=100).rev().collect();
    let cases: [(&[u64], Option<u64>); 5] = [
        (&[], None),
        (&[7], Some(7)),
        (&[30, 10, 20], Some(30)),
        (&one_to_100, Some(95)),
        (
            &[
                5, 1, 4, 2, 3, 9, 8, 7, 6, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
            ],
            Some(19),
        ),
    ];
    for (samples, expected) in cases {
        assert_eq!(
            p95(samples),
            expected,
            "p95 of {} samples {:?}: expected {expected:?} (the ⌈0.95·n⌉-th smallest)",
            samples.len(),
            &samples[..samples.len().min(8)]
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// The verdict
// ---------------------------------------------------------------------------------------------------

#[test]
fn a_canary_that_does_as_well_as_stable_is_healthy() {
    let stable = window(1_000, 10, 100);
    let canary = window(500, 5, 100);
    assert_eq!(
        verdict(&stable, &canary, &Rules::default()),
        Verdict::Healthy,
        "stable 10/1000 errors at 100 ms, canary 5/500 at 100 ms, default rules"
    );
}

#[test]
fn too_few_requests_on_either_side_is_not_enough_data_even_when_the_canary_only_fails() {
    let rules = Rules::default(); // min_requests 50
    let cases = [
        (window(1_000, 0, 100), window(49, 49, 5_000), 1_000, 49),
        (window(49, 0, 100), window(1_000, 0, 100), 49, 1_000),
        (window(0, 0, 100), window(0, 0, 100), 0, 0),
    ];
    for (stable, canary, s, c) in cases {
        assert_eq!(
            verdict(&stable, &canary, &rules),
            Verdict::NotEnoughData {
                stable: s,
                canary: c,
                needed: 50
            },
            "stable {s} requests, canary {c} requests ({} errors), min_requests 50: hold the step",
            canary.errors
        );
    }
}

#[test]
fn a_canary_error_rate_above_1_5_times_stable_plus_the_floor_is_unhealthy() {
    let stable = window(1_000, 20, 100); // 2%
    let canary = window(1_000, 100, 100); // 10% > 1.5 × 2% + 1% = 4%
    let v = verdict(&stable, &canary, &Rules::default());
    let Verdict::Unhealthy(breaches) = &v else {
        panic!("stable 2% errors, canary 10%, default rules: expected Unhealthy, got {v:?}");
    };
    match breaches.as_slice() {
        [
            Breach::ErrorRate {
                canary,
                stable,
                limit,
            },
        ] => {
            assert_eq!((*canary, *stable), (0.1, 0.02), "the rates judged: {v:?}");
            assert!(
                (limit - 0.04).abs() < 1e-12,
                "the limit is 1.5 × 0.02 + 0.01: {v:?}"
            );
        }
        other => panic!("expected exactly an ErrorRate breach, got {other:?}"),
    }
}

#[test]
fn the_error_floor_keeps_one_error_against_none_from_failing_the_canary() {
    let stable = window(1_000, 0, 100);
    let canary = window(200, 1, 100); // 0.5% against 0%: below the 1-point floor
    assert_eq!(
        verdict(&stable, &canary, &Rules::default()),
        Verdict::Healthy,
        "stable 0/1000 errors, canary 1/200, default rules (floor 0.01): one error is noise"
    );
    let canary = window(200, 4, 100); // 2%: above the floor
    assert!(
        matches!(
            verdict(&stable, &canary, &Rules::default()),
            Verdict::Unhealthy(_)
        ),
        "stable 0/1000 errors, canary 4/200 (2%), default rules: expected Unhealthy"
    );
}

#[test]
fn a_canary_p95_above_1_3_times_stable_plus_the_floor_is_unhealthy() {
    let stable = window(1_000, 0, 100);
    let canary = window(1_000, 0, 200); // 200 ms > 1.3 × 100 + 20 = 150 ms
    let v = verdict(&stable, &canary, &Rules::default());
    match &v {
        Verdict::Unhealthy(b) => match b.as_slice() {
            [
                Breach::Latency {
                    canary_p95_ms: 200,
                    stable_p95_ms: 100,
                    limit_ms,
                },
            ] => {
                assert!(
                    (limit_ms - 150.0).abs() < 1e-9,
                    "limit 1.3 × 100 + 20: {v:?}"
                );
            }
            other => panic!("expected exactly a Latency breach at 200 vs 100 ms, got {other:?}"),
        },
        _ => panic!(
            "stable p95 100 ms, canary p95 200 ms, default rules: expected Unhealthy, got {v:?}"
        ),
    }
    let canary = window(1_000, 0, 140);
    assert_eq!(
        verdict(&stable, &canary, &Rules::default()),
        Verdict::Healthy,
        "stable p95 100 ms, canary 140 ms, limit 150 ms: healthy"
    );
}

#[test]
fn the_latency_rule_uses_the_95th_percentile_not_the_mean_or_the_max() {
    let stable = window(1_000, 0, 100);
    // 96% of requests at 100 ms and 4% at 10 s: the mean is 496 ms and the max 10 s, but the
    // p95 is 100 ms, like stable's.
    let mut latencies = vec![100; 960];
    latencies.extend(vec![10_000; 40]);
    let canary = Window {
        requests: 1_000,
        errors: 0,
        latencies_ms: latencies,
    };
    assert_eq!(
        verdict(&stable, &canary, &Rules::default()),
        Verdict::Healthy,
        "canary with 960 samples at 100 ms and 40 at 10,000 ms (p95 100 ms) against stable at 100 ms"
    );
    let mut latencies = vec![100; 940];
    latencies.extend(vec![10_000; 60]);
    let canary = Window {
        requests: 1_000,
        errors: 0,
        latencies_ms: latencies,
    };
    assert!(
        matches!(
            verdict(&stable, &canary, &Rules::default()),
            Verdict::Unhealthy(_)
        ),
        "canary with 940 samples at 100 ms and 60 at 10,000 ms (p95 10,000 ms): expected Unhealthy"
    );
}

#[test]
fn exactly_at_a_limit_is_still_healthy_and_one_past_it_is_not() {
    let rules = exact_rules(); // errors: 1.5 × rate + 0.125; p95: 1.5 × p95 + 10 ms
    let stable = window(400, 100, 100); // 25% errors, p95 100 ms
    // Limits: 1.5 × 0.25 + 0.125 = 0.5 of errors; 1.5 × 100 + 10 = 160 ms.
    let cases = [
        (
            window(400, 200, 160),
            true,
            "errors 0.5, p95 160 ms: both exactly at their limit",
        ),
        (
            window(400, 201, 160),
            false,
            "errors 201/400, just above 0.5",
        ),
        (
            window(400, 200, 161),
            false,
            "p95 161 ms, just above 160 ms",
        ),
    ];
    for (canary, healthy, what) in cases {
        let v = verdict(&stable, &canary, &rules);
        assert_eq!(
            v == Verdict::Healthy,
            healthy,
            "stable 100/400 errors at 100 ms, {what}, rules {rules:?}: got {v:?}"
        );
    }
}

#[test]
fn every_broken_rule_is_reported_the_error_rate_first() {
    let stable = window(1_000, 10, 100);
    let canary = window(1_000, 300, 900);
    let v = verdict(&stable, &canary, &Rules::default());
    match &v {
        Verdict::Unhealthy(b) => assert!(
            matches!(
                b.as_slice(),
                [Breach::ErrorRate { .. }, Breach::Latency { .. }]
            ),
            "canary 30% errors and p95 900 ms against 1% and 100 ms: expected [ErrorRate, Latency], got {b:?}"
        ),
        _ => panic!(
            "canary 30% errors and p95 900 ms against 1% and 100 ms: expected Unhealthy, got {v:?}"
        ),
    }
}

#[test]
fn without_latency_samples_only_the_error_rule_is_judged() {
    let stable = Window {
        requests: 1_000,
        errors: 10,
        latencies_ms: Vec::new(),
    };
    let canary = window(1_000, 10, 9_000);
    assert_eq!(
        verdict(&stable, &canary, &Rules::default()),
        Verdict::Healthy,
        "stable 10/1000 errors with no latency samples, canary 10/1000 at 9,000 ms: no p95 to compare"
    );
}
