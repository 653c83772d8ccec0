//! Bad settings are refused at start: exit 2, naming the variable.

use test_support::{assert_bad_settings_exit_2, run_to_exit};

#[test]
fn bad_settings_exit_2_naming_the_variable() {
    let long_salt = "s".repeat(257);
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
            ("AB_SALT", &long_salt),
            ("AB_SPLIT", "101"),
            ("AB_MAX_USERS", "0"),
        ],
    );
}

/// The master reads its flags before it binds: a file it cannot read is a bad `FLAGS_FILE`, not
/// flags silently lost.
#[test]
fn a_corrupt_flags_file_exits_2_naming_flags_file() {
    let path =
        std::env::temp_dir().join(format!("canary-corrupt-flags-{}.json", std::process::id()));
    std::fs::write(&path, "{ not json").expect("write the corrupt file");
    let file = path.to_string_lossy().into_owned();
    let (status, stderr) = run_to_exit(
        env!("CARGO_BIN_EXE_canary-deployment"),
        &[("WORKERS", "1"), ("FLAGS_FILE", &file)],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("FLAGS_FILE"), "{stderr}");
}
