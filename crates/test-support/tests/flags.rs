//! Feature flags on a real cluster: the master's `/flags` routes, the file they are kept in, and
//! the workers' `FlagClient`.
//!
//! Each test starts its own two-worker cluster on a private flags file, so no test sees another's
//! flags and a restart test can stop its master.

mod flags_ab_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use flags_ab_common::{BIN, TempDir, evaluate, post, set_flag};
use test_support::{ClusterProcess, Http, run_to_exit};

fn start(dir: &TempDir) -> ClusterProcess {
    let file = dir.flags_file();
    ClusterProcess::start(BIN, &[("WORKERS", "2"), ("FLAGS_FILE", &file)])
}

/// The users among `users` that flag `key` is on for, asked of the master.
async fn users_on(http: &Http, base: &str, key: &str, users: &[String]) -> BTreeSet<String> {
    let mut on = BTreeSet::new();
    for user in users {
        let (value, reason) = evaluate(http, base, key, user).await;
        assert_eq!(
            reason, "SPLIT",
            "{key} for {user}: a percentage below 100 splits"
        );
        if value {
            on.insert(user.clone());
        }
    }
    on
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

#[tokio::test]
async fn a_user_in_at_10_percent_is_still_in_at_20_and_the_shares_follow_the_percentage() {
    let dir = TempDir::new("nesting");
    let cluster = start(&dir);
    let (http, base) = (Http::new(), cluster.base());
    let everyone = users(1_000);
    set_flag(
        &http,
        &base,
        "new-ui",
        r#"{"enabled": true, "percentage": 10}"#,
    )
    .await;
    let at_10 = users_on(&http, &base, "new-ui", &everyone).await;
    set_flag(&http, &base, "new-ui", r#"{"percentage": 20}"#).await;
    let at_20 = users_on(&http, &base, "new-ui", &everyone).await;
    eprintln!(
        "of 1,000 users: {} at 10%, {} at 20%",
        at_10.len(),
        at_20.len()
    );
    let dropped: Vec<_> = at_10.difference(&at_20).collect();
    assert!(
        dropped.is_empty(),
        "raising 10% to 20% must only add users; these left: {dropped:?}"
    );
    // 1,000 users: one standard deviation is about 1 point at 10% and 1.3 at 20%.
    assert!(
        (60..=140).contains(&at_10.len()),
        "10% of 1,000 users, got {}",
        at_10.len()
    );
    assert!(
        (150..=250).contains(&at_20.len()),
        "20% of 1,000 users, got {}",
        at_20.len()
    );
}

#[tokio::test]
async fn two_flags_at_25_percent_share_about_a_sixteenth_of_users_unless_given_one_salt() {
    let dir = TempDir::new("salts");
    let cluster = start(&dir);
    let (http, base) = (Http::new(), cluster.base());
    let everyone = users(1_000);
    for key in ["new-ui", "fast-checkout"] {
        set_flag(&http, &base, key, r#"{"enabled": true, "percentage": 25}"#).await;
    }
    // Salted like new-ui on purpose: the way to roll two flags out to the same users.
    set_flag(
        &http,
        &base,
        "new-ui-api",
        r#"{"enabled": true, "percentage": 25, "salt": "new-ui"}"#,
    )
    .await;
    let ui = users_on(&http, &base, "new-ui", &everyone).await;
    let checkout = users_on(&http, &base, "fast-checkout", &everyone).await;
    let ui_api = users_on(&http, &base, "new-ui-api", &everyone).await;
    let both = ui.intersection(&checkout).count();
    eprintln!(
        "of 1,000 users: new-ui {}, fast-checkout {}, both {both}",
        ui.len(),
        checkout.len()
    );
    // Independent quarters overlap on a sixteenth, 62.5 of 1,000 (standard deviation 7.7); the
    // seed's unsalted hash would give the whole quarter, about 250.
    assert!(
        (30..=100).contains(&both),
        "new-ui ({}) and fast-checkout ({}) share {both} of 1,000 users, expected about 62",
        ui.len(),
        checkout.len()
    );
    assert_eq!(ui, ui_api, "one salt, one percentage: the same users");
}

#[tokio::test]
async fn allow_and_deny_lists_win_over_the_percentage_and_a_disabled_flag_is_off_for_all() {
    let dir = TempDir::new("lists");
    let cluster = start(&dir);
    let (http, base) = (Http::new(), cluster.base());
    set_flag(
        &http,
        &base,
        "beta",
        r#"{"enabled": true, "percentage": 0, "allow": ["alice"], "deny": ["bob"]}"#,
    )
    .await;
    let cases = [
        ("alice", (true, "TARGETING_MATCH")),
        ("bob", (false, "TARGETING_MATCH")),
        ("carol", (false, "SPLIT")),
    ];
    for (user, (value, reason)) in cases {
        let got = evaluate(&http, &base, "beta", user).await;
        assert_eq!(got, (value, reason.to_string()), "beta for {user}");
    }
    set_flag(&http, &base, "beta", r#"{"percentage": 100, "deny": []}"#).await;
    let got = evaluate(&http, &base, "beta", "bob").await;
    assert_eq!(got, (true, "DEFAULT".into()), "on for everyone at 100%");
    set_flag(&http, &base, "beta", r#"{"enabled": false}"#).await;
    let got = evaluate(&http, &base, "beta", "alice").await;
    assert_eq!(got, (false, "DISABLED".into()), "off beats the allow list");
    let r = http
        .get(&format!("{base}/flags/nope/evaluate?user=alice"))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test]
async fn flags_survive_a_master_restart_from_their_file() {
    let dir = TempDir::new("restart");
    let http = Http::new();
    let before = {
        let cluster = start(&dir);
        let base = cluster.base();
        set_flag(
            &http,
            &base,
            "new-ui",
            r#"{"enabled": true, "percentage": 30, "allow": ["alice"]}"#,
        )
        .await;
        set_flag(&http, &base, "old-ui", r#"{"enabled": true}"#).await;
        let r = post(&http, &format!("{base}/flags/old-ui/delete"), "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        set_flag(&http, &base, "dark-mode", r#"{"enabled": false}"#).await;
        http.get(&format!("{base}/flags")).await.json()
        // Dropped here: SIGKILL, no goodbye. An answered POST is already on disk.
    };
    assert_eq!(before["version"], 4, "four changes: {before}");
    let cluster = start(&dir);
    let after = http.get(&cluster.url("/flags")).await.json();
    assert_eq!(after, before, "the new master reads what the old one wrote");
    let (value, reason) = evaluate(&http, &cluster.base(), "new-ui", "alice").await;
    assert_eq!((value, reason.as_str()), (true, "TARGETING_MATCH"));
    set_flag(&http, &cluster.base(), "dark-mode", r#"{"enabled": true}"#).await;
    let r = http.get(&cluster.url("/flags")).await.json();
    assert_eq!(r["version"], 5, "versions go on counting across restarts");
}

#[tokio::test]
async fn get_on_a_mutating_route_is_405_and_delete_is_a_post() {
    let dir = TempDir::new("methods");
    let cluster = start(&dir);
    let (http, base) = (Http::new(), cluster.base());
    set_flag(&http, &base, "keep", r#"{"enabled": true}"#).await;
    for (method, path) in [
        ("GET", "/flags/keep/delete"),
        ("DELETE", "/flags/keep"),
        ("PUT", "/flags/keep"),
        ("POST", "/flags/keep/evaluate?user=a"),
        ("GET", "/ab/convert"),
    ] {
        let r = http
            .send(method, &cluster.url(path), &[], "")
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
    }
    let r = http.get(&cluster.url("/flags/keep")).await;
    assert_eq!(r.status, 200, "the flag is still there: {}", r.body);
    let r = post(&http, &cluster.url("/flags/keep/delete"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http.get(&cluster.url("/flags/keep")).await;
    assert_eq!(r.status, 404, "deleted: {}", r.body);
    let r = post(&http, &cluster.url("/flags/keep/delete"), "").await;
    assert_eq!(r.status, 404, "nothing left to delete: {}", r.body);
}

#[tokio::test]
async fn bad_json_and_bad_values_are_400_with_a_message_that_says_why() {
    let dir = TempDir::new("bad-input");
    let cluster = start(&dir);
    let http = Http::new();
    let too_many: Vec<String> = (0..1_001).map(|i| format!("u{i}")).collect();
    let long_list = serde_json::json!({ "allow": too_many }).to_string();
    let cases = [
        ("/flags/f", "{", "expected a JSON object"),
        ("/flags/f", "[1, 2]", "expected a JSON object"),
        ("/flags/f", r#"{"percent": 10}"#, "unknown field `percent`"),
        ("/flags/f", r#"{"percentage": 101}"#, "0 to 100"),
        ("/flags/f", r#"{"percentage": -1}"#, "expected u8"),
        ("/flags/f", r#"{"enabled": "yes"}"#, "expected a boolean"),
        ("/flags/f", &long_list, "at most 1000"),
        ("/flags/bad%20key", r#"{"enabled": true}"#, "flag key"),
        ("/ab/convert", "not json", r#"like {"user": "alice"}"#),
        ("/ab/convert", r#"{"user": ""}"#, "1 to 256 bytes"),
    ];
    for (path, body, says) in cases {
        let r = post(&http, &cluster.url(path), body).await;
        assert_eq!(r.status, 400, "POST {path} {body:.40}: {}", r.body);
        let message = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains(says),
            "POST {path} {body:.40}: the message should say {says:?}: {message}"
        );
    }
    let r = http.get(&cluster.url("/flags/f/evaluate")).await;
    assert_eq!(r.status, 400, "no ?user=: {}", r.body);
    let r = http.get(&cluster.url("/flags")).await.json();
    assert_eq!(r["version"], 0, "nothing bad was saved: {r}");
}

/// Every worker's view of `key` for `user` (by worker id) from `tries` requests through the
/// edge, which spreads them round-robin.
async fn worker_views(
    http: &Http,
    base: &str,
    key: &str,
    user: &str,
    tries: usize,
) -> Vec<(u64, u64, bool, String)> {
    let mut seen = Vec::new();
    for _ in 0..tries {
        let v = http
            .get(&format!("{base}/feature/{key}?user={user}"))
            .await
            .json();
        seen.push((
            v["worker"].as_u64().expect("worker"),
            v["version"].as_u64().expect("version"),
            v["value"].as_bool().expect("value"),
            v["reason"].as_str().expect("reason").to_string(),
        ));
    }
    seen
}

#[tokio::test]
async fn workers_see_a_flag_change_through_their_client_within_a_bounded_time() {
    let dir = TempDir::new("workers");
    let cluster = start(&dir);
    let (http, base) = (Http::new(), cluster.base());
    let views = worker_views(&http, &base, "checkout-v2", "alice", 4).await;
    let workers: BTreeSet<u64> = views.iter().map(|v| v.0).collect();
    assert_eq!(workers.len(), 2, "both workers answered: {views:?}");
    assert!(
        views.iter().all(|v| !v.2 && v.3 == "ERROR"),
        "an unknown flag is off with ERROR on every worker: {views:?}"
    );
    // Bounded: the default poll is 100 ms; 3 s leaves room for a loaded machine.
    const BOUND: Duration = Duration::from_secs(3);
    for (change, value, reason) in [
        (
            r#"{"enabled": true, "allow": ["alice"], "percentage": 0}"#,
            true,
            "TARGETING_MATCH",
        ),
        (r#"{"enabled": false}"#, false, "DISABLED"),
    ] {
        let saved = set_flag(&http, &base, "checkout-v2", change).await;
        let version = saved["version"].as_u64().expect("a version");
        let started = Instant::now();
        let mut caught_up = BTreeSet::new();
        while caught_up.len() < 2 {
            assert!(
                started.elapsed() < BOUND,
                "after {change}, only workers {caught_up:?} saw version {version} within {BOUND:?}"
            );
            for (worker, seen, got, why) in
                worker_views(&http, &base, "checkout-v2", "alice", 2).await
            {
                if seen >= version {
                    assert_eq!(
                        (got, why.as_str()),
                        (value, reason),
                        "worker {worker} after {change}"
                    );
                    caught_up.insert(worker);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!(
            "both workers saw version {version} after {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_corrupt_flags_file_and_bad_settings_exit_2_naming_the_variable() {
    let dir = TempDir::new("corrupt");
    let file = dir.flags_file();
    std::fs::write(&file, "{ not json").expect("write");
    let (status, stderr) = run_to_exit(BIN, &[("FLAGS_FILE", &file)]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("FLAGS_FILE") && stderr.contains("flags.json"),
        "{stderr}"
    );
    let missing_dir = dir.path().join("no/such/dir/flags.json");
    let cases = [
        ("FLAGS_FILE", missing_dir.to_string_lossy().into_owned()),
        ("FLAGS_POLL_MS", "fast".to_string()),
        ("AB_SPLIT", "100".to_string()),
        ("AB_MAX_USERS", "0".to_string()),
    ];
    for (var, value) in cases {
        let mut env = vec![("FLAGS_FILE", file.as_str()), (var, value.as_str())];
        if var == "FLAGS_FILE" {
            env.remove(0);
        }
        std::fs::remove_file(&file).ok();
        let (status, stderr) = run_to_exit(BIN, &env);
        assert_eq!(status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(var),
            "{var}={value}: stderr does not name it: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_replacement_worker_starts_with_the_flags_of_the_moment() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = TempDir::new("replacement");
    let cluster = start(&dir);
    let (http, base) = (Http::new(), cluster.base());
    let saved = set_flag(&http, &base, "late", r#"{"enabled": true}"#).await;
    let version = saved["version"].as_u64().expect("a version");
    let ready = http.ready_pids(&base).await;
    let &(slot, pid) = ready.first().expect("a ready worker");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill the worker");
    let replaced = test_support::eventually_async(Duration::from_secs(20), || async {
        let now = http.ready_pids(&base).await;
        now.len() == 2 && now.iter().any(|&(s, p)| s == slot && p != pid)
    })
    .await;
    assert!(
        replaced,
        "slot {slot} (pid {pid}) was not replaced within 20 s"
    );
    // The file has not changed since the replacement started, so what it knows it read at boot.
    let views = worker_views(&http, &base, "late", "anyone", 4).await;
    let from_slot: Vec<_> = views.iter().filter(|v| v.0 == slot).collect();
    assert!(!from_slot.is_empty(), "the replacement answered: {views:?}");
    for v in from_slot {
        assert_eq!(
            (v.1, v.2, v.3.as_str()),
            (version, true, "DEFAULT"),
            "the replacement in slot {slot} knows flag version {version}: {views:?}"
        );
    }
}
