//! Bad settings are refused at start: exit 2, naming the variable.

use test_support::assert_bad_settings_exit_2;

#[test]
fn bad_settings_exit_2_naming_the_variable() {
    assert_bad_settings_exit_2(
        env!("CARGO_BIN_EXE_canary-deployment"),
        &[("WORKERS", "1")],
        &[
            ("CANARY_STEPS", "10,50"),
            ("CANARY_STEPS", "50,10,100"),
            ("CANARY_STEP_SECONDS", "0"),
            ("CANARY_MIN_REQUESTS", "0"),
            ("CANARY_VERSION", "v2 beta"),
            ("APP_VERSION", "v1\u{7f}"),
            ("CANARY_BIN", "/nonexistent/canary"),
            ("CANARY_WORKERS", "1000"),
            ("CANARY_SALT", "short"),
            ("BLUE_GREEN_KEEP_SECONDS", "-1"),
            ("DISPATCH", "handoff"),
            ("FLAGS_FILE", "/nonexistent/dir/flags.json"),
            ("FLAGS_POLL_MS", "5"),
            ("AB_EXPERIMENT", "check out"),
            ("AB_SALT", ""),
            ("AB_SPLIT", "101"),
            ("AB_MAX_USERS", "0"),
        ],
    );
}
