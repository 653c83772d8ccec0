//! Bad `BREAKER_*` settings stop the binary at once with status 2 and a message naming the
//! variable.

mod support;

#[test]
fn bad_breaker_settings_exit_with_status_2_naming_the_variable() {
    test_support::assert_bad_settings_exit_2(
        support::BIN,
        &[("WORKERS", "1")],
        &[
            ("BREAKER_WAIT_IN_OPEN", "10s"),
            ("BREAKER_HALF_OPEN_CALLS", "0"),
            ("BREAKER_MIN_CALLS", "many"),
            ("BREAKER_FAILURE_RATE", "150"),
            ("BREAKER_WINDOW", "0s"),
            ("BREAKER_SLOW_CALL_MS", "-1"),
            ("BREAKER_SCOPE", "global"),
            ("OUTLIER_CONSECUTIVE_ERRORS", "-1"),
            ("OUTLIER_BASE_EJECTION_MS", "soon"),
        ],
    );
}
