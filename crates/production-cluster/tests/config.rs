//! Checklist: configuration. Every variable is validated at start (a bad one exits 2 naming it),
//! a TOML file can hold the settings with the environment winning over it, and
//! `--print-config` shows the effective settings with their secrets masked.

mod support;

use std::process::{Command, Stdio};

use support::BIN;
use test_support::{ClusterProcess, Http, assert_bad_settings_exit_2, run_to_exit};

#[test]
fn a_setting_refused_after_logging_started_still_leaves_the_lines_before_it() {
    // `WATCHDOG_USEC` is read once the log is set up: the debug line written just before the
    // refusal is still in the log buffer when the process exits 2, and comes out first.
    let (status, stderr) = run_to_exit(
        BIN,
        &[
            ("WORKERS", "1"),
            ("RUST_LOG", "debug"),
            ("WATCHDOG_USEC", "soon"),
        ],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    let policy = stderr.find("scheduling policy");
    let refusal = stderr.find("WATCHDOG_USEC");
    assert!(
        matches!((policy, refusal), (Some(p), Some(r)) if p < r),
        "the debug line, then the refusal naming the variable: {stderr}"
    );
}

#[test]
fn every_bad_variable_exits_2_naming_it() {
    assert_bad_settings_exit_2(
        BIN,
        &[("WORKERS", "1")],
        &[
            ("PORT", "80000"),
            ("HOST", "localhost"),
            ("WORKERS", "0"),
            ("SHUTDOWN_TIMEOUT", "30s"),
            ("SHUTDOWN_DELAY", "-1"),
            ("HEALTH_CHECK_INTERVAL", "5"),
            ("METRICS_INTERVAL", "often"),
            ("SESSION_TIMEOUT", "1h"),
            ("SESSION_STORE", "mysql://db"),
            ("SESSION_MAX", "0"),
            ("STRATEGY", "fastest"),
            ("DISPATCH", "magic"),
            ("LOG_FORMAT", "xml"),
            ("ACCESS_LOG", "yes"),
            ("MAX_MEMORY", "lots"),
            ("RATE_LIMIT", "100/day"),
            ("RATE_LIMIT_BURST", "0"),
            ("RATE_LIMIT_KEYS", "0"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("ADMIN_TOKEN", "short"),
            ("DOWNSTREAM_URL", "ftp://x"),
            ("BREAKER_WAIT_IN_OPEN", "10s"),
            ("BREAKER_MIN_CALLS", "many"),
            ("BREAKER_FAILURE_RATE", "150"),
            ("BREAKER_SCOPE", "everywhere"),
            ("OUTLIER_CONSECUTIVE_ERRORS", "-1"),
            ("ALERT_CPU_PERCENT", "lots"),
            ("CONFIG", "/nonexistent/cluster.toml"),
        ],
    );
}

#[test]
fn the_rate_limit_refuses_handoff_dispatch_where_the_master_cannot_count() {
    let (status, stderr) = run_to_exit(BIN, &[("RATE_LIMIT", "100/min"), ("DISPATCH", "handoff")]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("DISPATCH"), "{stderr}");
}

fn print_config(env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .arg("--print-config")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run --print-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn print_config_masks_the_admin_token_and_url_passwords() {
    let token = "a-very-secret-token-42";
    let text = print_config(&[
        ("ADMIN_TOKEN", token),
        ("SESSION_STORE", "redis://app:hunter2@127.0.0.1:6399/0"),
    ]);
    assert!(!text.contains(token), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("ADMIN_TOKEN = \"****\"  # env"), "{text}");
    assert!(
        text.contains("SESSION_STORE = \"redis://app:****@127.0.0.1:6399/0\"  # env"),
        "{text}"
    );
    assert!(
        text.contains("PORT = \"8000\"  # default"),
        "the original's default: {text}"
    );
    assert!(
        text.contains("SHUTDOWN_TIMEOUT = \"30000\"  # default"),
        "{text}"
    );
    assert!(
        text.contains("SESSION_TIMEOUT = \"1800000\"  # default"),
        "{text}"
    );
    assert!(text.contains("AUTOSCALE = \"off\"  # default"), "{text}");
    assert!(text.contains("TLS_CERT = \"off\"  # default"), "{text}");
}

fn write_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write the config file");
    path
}

#[test]
fn a_config_file_sets_values_and_the_environment_overrides_it() {
    let path = write_file(
        "cluster",
        "workers = 3\nSTRATEGY = \"round-robin\"\nrate_limit = \"50/min\"\n",
    );
    let file = path.to_str().expect("utf-8 path");
    let text = print_config(&[
        ("CONFIG", file),
        ("STRATEGY", "power-of-two-choices"),
        ("AUTOSCALE", "2..6"),
    ]);
    assert!(text.contains("AUTOSCALE = \"2..6\"  # env"), "{text}");
    assert!(text.contains("WORKERS = \"3\"  # file"), "{text}");
    assert!(text.contains("RATE_LIMIT = \"50/min\"  # file"), "{text}");
    assert!(
        text.contains("STRATEGY = \"power-of-two-choices\"  # env"),
        "env wins: {text}"
    );

    // The file really runs the cluster: two workers from it, one overridden by the environment.
    let path2 = write_file("cluster-run", "workers = 2\n");
    let cluster = ClusterProcess::start(BIN, &[("CONFIG", path2.to_str().expect("utf-8"))]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let health = rt.block_on(Http::new().health(&cluster.base()));
    assert_eq!(health["workers"]["total"], 2, "{health}");
    drop(cluster);
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path2);
}

#[test]
fn an_unknown_name_in_the_file_exits_2_naming_it() {
    let path = write_file("typo", "wrokers = 2\n");
    let (status, stderr) = run_to_exit(BIN, &[("CONFIG", path.to_str().expect("utf-8"))]);
    let _ = std::fs::remove_file(path);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("WROKERS"), "{stderr}");
}
