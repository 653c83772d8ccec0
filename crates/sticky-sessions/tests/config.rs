//! Bad settings stop the binary at once with status 2 and a message naming the variable.

mod support;

use support::run_to_exit;

#[test]
fn bad_settings_exit_with_status_2_naming_the_variable() {
    test_support::assert_bad_settings_exit_2(
        support::BIN,
        &[],
        &[
            ("SESSION_STORE", "mysql://localhost"),
            ("SESSION_TIMEOUT", "30m"),
            ("SESSION_MAX", "-5"),
            ("TRUSTED_PROXIES", "everyone"),
            ("WORKERS", "0"),
        ],
    );
}

#[test]
fn an_unreachable_redis_is_reported_at_startup() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let (status, stderr) = run_to_exit(&[("SESSION_STORE", "redis://127.0.0.1:1")]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SESSION_STORE=redis://127.0.0.1:1 does not answer"),
        "{stderr}"
    );
}
