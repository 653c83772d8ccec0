//! The grader for exercise 06. Run it with `cargo test -p ex06-production` inside `exercises/`.
//!
//! Tests go from easiest to hardest: the readiness rule first, then the admin check (the
//! constant-time compare, then the header), and last the GCRA rate limiter.
//! `solutions/06-production` runs this same file against the reference answer.

use ex06_production::{
    AdminAuth, Decision, Denied, Limit, NotReady, Readiness, ReadinessInput, check_admin,
    constant_time_eq, gcra, readiness,
};

fn input(workers_ready: usize, store_reachable: Option<bool>, draining: bool) -> ReadinessInput {
    ReadinessInput {
        workers_ready,
        store_reachable,
        draining,
    }
}

// ---------------------------------------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------------------------------------

#[test]
fn a_cluster_with_a_ready_worker_and_no_external_store_is_ready() {
    for workers in [1, 4] {
        let got = readiness(input(workers, None, false));
        assert_eq!(
            got,
            Readiness::Ready,
            "{workers} workers ready, sessions in memory, not draining: expected Ready"
        );
        assert_eq!(got.status(), 200);
    }
}

#[test]
fn no_ready_worker_means_not_ready() {
    let got = readiness(input(0, None, false));
    assert_eq!(
        got,
        Readiness::NotReady(NotReady::NoWorkerReady),
        "0 workers ready: expected NotReady(NoWorkerReady)"
    );
    assert_eq!(got.status(), 503);
}

#[test]
fn an_unreachable_store_means_not_ready_and_a_reachable_one_is_fine() {
    assert_eq!(
        readiness(input(2, Some(false), false)),
        Readiness::NotReady(NotReady::StoreUnreachable),
        "2 workers ready but the store unreachable: expected NotReady(StoreUnreachable)"
    );
    assert_eq!(
        readiness(input(2, Some(true), false)),
        Readiness::Ready,
        "2 workers ready and the store reachable: expected Ready"
    );
}

#[test]
fn draining_is_not_ready_whatever_else_is_true() {
    for (workers, store) in [(4, None), (4, Some(true)), (0, Some(false))] {
        assert_eq!(
            readiness(input(workers, store, true)),
            Readiness::NotReady(NotReady::Draining),
            "draining with {workers} workers ready and store {store:?}: expected \
             NotReady(Draining), so the load balancer stops sending before the listener closes"
        );
    }
}

#[test]
fn with_no_worker_and_no_store_the_workers_are_the_reason_given() {
    assert_eq!(
        readiness(input(0, Some(false), false)),
        Readiness::NotReady(NotReady::NoWorkerReady),
        "0 workers and an unreachable store: expected NoWorkerReady (checked before the store)"
    );
}

// ---------------------------------------------------------------------------------------------------
// The admin check
// ---------------------------------------------------------------------------------------------------

#[test]
fn constant_time_eq_is_true_only_for_the_same_bytes() {
    for (a, b, same) in [
        ("", "", true),
        ("s3cret", "s3cret", true),
        ("s3cret", "s3creT", false),
        ("s3cret", "s3cre", false),
        ("s3cre", "s3cret", false),
        ("", "x", false),
        ("abc", "xbc", false),
    ] {
        assert_eq!(
            constant_time_eq(a.as_bytes(), b.as_bytes()),
            same,
            "constant_time_eq({a:?}, {b:?}): expected {same}"
        );
    }
}

#[test]
fn with_no_token_configured_the_admin_api_is_off_whatever_is_sent() {
    for token in [None, Some("")] {
        for header in [None, Some("Bearer "), Some("Bearer anything")] {
            let got = check_admin(header, token);
            assert_eq!(
                got,
                AdminAuth::Denied(Denied::AdminOff),
                "token {token:?}, header {header:?}: expected Denied(AdminOff), never open"
            );
            assert_eq!(got.status(), 404, "an admin API that is off is not there");
        }
    }
}

#[test]
fn a_request_without_an_authorization_header_is_refused() {
    let got = check_admin(None, Some("s3cret"));
    assert_eq!(
        got,
        AdminAuth::Denied(Denied::Missing),
        "no header, token \"s3cret\": expected Denied(Missing)"
    );
    assert_eq!(got.status(), 401);
}

#[test]
fn the_right_bearer_token_is_authorised() {
    let got = check_admin(Some("Bearer s3cret"), Some("s3cret"));
    assert_eq!(
        got,
        AdminAuth::Authorised,
        "\"Bearer s3cret\" with token \"s3cret\": expected Authorised"
    );
    assert_eq!(got.status(), 200);
}

#[test]
fn the_scheme_is_case_insensitive_but_the_token_is_not() {
    for header in ["bearer s3cret", "BEARER s3cret", "Bearer   s3cret"] {
        assert_eq!(
            check_admin(Some(header), Some("s3cret")),
            AdminAuth::Authorised,
            "{header:?} with token \"s3cret\": expected Authorised (the scheme's case and the \
             number of spaces do not matter)"
        );
    }
    assert_eq!(
        check_admin(Some("Bearer S3CRET"), Some("s3cret")),
        AdminAuth::Denied(Denied::WrongToken),
        "\"Bearer S3CRET\" with token \"s3cret\": expected Denied(WrongToken)"
    );
}

#[test]
fn other_schemes_and_malformed_headers_are_not_bearer() {
    for header in [
        "Basic czNjcmV0",
        "s3cret",
        "Bearer",
        "Bearer ",
        "Token s3cret",
        "",
    ] {
        let got = check_admin(Some(header), Some("s3cret"));
        assert_eq!(
            got,
            AdminAuth::Denied(Denied::NotBearer),
            "header {header:?} with token \"s3cret\": expected Denied(NotBearer)"
        );
        assert_eq!(got.status(), 401);
    }
}

#[test]
fn a_wrong_a_longer_or_a_prefix_token_is_refused() {
    for header in [
        "Bearer s3cre",
        "Bearer s3cret!",
        "Bearer x3cret",
        "Bearer s3cret s3cret",
    ] {
        assert_eq!(
            check_admin(Some(header), Some("s3cret")),
            AdminAuth::Denied(Denied::WrongToken),
            "{header:?} with token \"s3cret\": expected Denied(WrongToken)"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// The rate limiter (GCRA)
// ---------------------------------------------------------------------------------------------------

/// 1 request per 100 ms on average, 3 at once.
fn limit() -> Limit {
    Limit {
        emission_interval_ms: 100,
        burst: 3,
    }
}

/// Expects `gcra` to allow; the new stored time and the remaining count.
fn allowed(limit: Limit, tat: Option<u64>, now: u64) -> (u64, u32) {
    match gcra(limit, tat, now) {
        Decision::Allow { tat_ms, remaining } => (tat_ms, remaining),
        deny => panic!("gcra({limit:?}, tat {tat:?}, now {now}): expected Allow, got {deny:?}"),
    }
}

#[test]
fn a_clients_first_request_is_allowed_with_the_rest_of_the_burst_remaining() {
    assert_eq!(
        gcra(limit(), None, 1000),
        Decision::Allow {
            tat_ms: 1100,
            remaining: 2
        },
        "first request at 1000 ms, 100 ms interval, burst 3: expected tat 1100, 2 remaining"
    );
}

#[test]
fn a_burst_is_allowed_at_once_and_the_next_request_is_denied_with_its_retry_after() {
    let mut tat = None;
    for expected_remaining in [2, 1, 0] {
        let (next, remaining) = allowed(limit(), tat, 1000);
        assert_eq!(
            remaining, expected_remaining,
            "request at 1000 ms with tat {tat:?}: expected {expected_remaining} remaining"
        );
        tat = Some(next);
    }
    assert_eq!(tat, Some(1300), "three requests at 1000 ms: tat 1300");
    assert_eq!(
        gcra(limit(), tat, 1000),
        Decision::Deny {
            retry_after_ms: 100
        },
        "a 4th at 1000 ms with tat 1300, burst 3: expected Deny, retry after 100 ms"
    );
    assert_eq!(
        gcra(limit(), tat, 1040),
        Decision::Deny { retry_after_ms: 60 },
        "at 1040 ms with tat 1300: expected Deny, retry after 60 ms"
    );
}

#[test]
fn waiting_the_retry_after_lets_exactly_one_more_through() {
    let tat = Some(1300);
    let (next, remaining) = allowed(limit(), tat, 1100);
    assert_eq!(
        (next, remaining),
        (1400, 0),
        "at 1100 ms with tat 1300: expected Allow with tat 1400 and 0 remaining"
    );
    assert!(
        matches!(gcra(limit(), Some(next), 1100), Decision::Deny { .. }),
        "a second request at 1100 ms with tat 1400: expected Deny"
    );
}

#[test]
fn an_idle_client_gets_its_whole_burst_back_and_no_more() {
    // The stored time is long past: it must count from now, not from then.
    assert_eq!(
        gcra(limit(), Some(500), 10_000),
        Decision::Allow {
            tat_ms: 10_100,
            remaining: 2
        },
        "tat 500 and now 10000 (idle for 9.5 s): expected tat 10100, 2 remaining, as a new client"
    );
}

#[test]
fn the_courses_limit_of_100_a_minute_denies_the_101st_request_in_the_minute() {
    let limit = Limit::per(100, 60_000, 100);
    assert_eq!(
        limit,
        Limit {
            emission_interval_ms: 600,
            burst: 100
        },
        "100 a minute with a burst of 100: 600 ms interval"
    );
    let mut tat = None;
    for i in 0..100u64 {
        let now = i; // 100 requests in the first 100 ms
        let (next, remaining) = allowed(limit, tat, now);
        let expected = 99 - i as u32;
        assert_eq!(
            remaining,
            expected,
            "request {} at {now} ms: expected {expected} remaining",
            i + 1
        );
        tat = Some(next);
    }
    match gcra(limit, tat, 100) {
        Decision::Deny { retry_after_ms } => assert_eq!(
            retry_after_ms, 500,
            "the 101st at 100 ms with tat {tat:?}: expected a retry after 500 ms (the first \
             request's 600 ms, less the 100 ms gone)"
        ),
        allow => {
            panic!("the 101st request at 100 ms with tat {tat:?}: expected Deny, got {allow:?}")
        }
    }
}

#[test]
fn a_burst_of_one_allows_one_request_per_interval() {
    let one = Limit {
        emission_interval_ms: 100,
        burst: 1,
    };
    assert_eq!(
        gcra(one, None, 0),
        Decision::Allow {
            tat_ms: 100,
            remaining: 0
        },
        "burst 1, first request at 0: expected tat 100, 0 remaining"
    );
    assert_eq!(
        gcra(one, Some(100), 50),
        Decision::Deny { retry_after_ms: 50 },
        "burst 1, tat 100, now 50: expected Deny, retry after 50 ms"
    );
    assert_eq!(
        gcra(one, Some(100), 100),
        Decision::Allow {
            tat_ms: 200,
            remaining: 0
        },
        "burst 1, tat 100, now 100: expected Allow with tat 200"
    );
}

#[test]
fn huge_times_do_not_overflow() {
    let limit = Limit {
        emission_interval_ms: u64::MAX / 2,
        burst: u32::MAX,
    };
    // Any answer is fine, as long as it is one (no panic on overflow in debug builds).
    let _ = gcra(limit, Some(u64::MAX), u64::MAX - 1);
    let _ = gcra(limit, None, u64::MAX);
}
