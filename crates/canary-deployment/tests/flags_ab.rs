//! Feature flags and the A/B test, as the lesson mounts them beside its two version pools: a flag
//! set through the master reaches the workers of both pools, a 25% flag is on for about a quarter
//! of the users, and an A/B user keeps their variant whichever pool serves them, counted once.
//!
//! One cluster for the file, its flags in a private file of Cargo's scratch directory.
//! The canary is put at 10% once (by whichever test asks first), so both pools take traffic.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use support::{CANARY, STABLE, post, post_ok};
use test_support::{Http, Reply, SharedCluster, eventually_async};

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();
/// Whether the canary was put at 10% yet.
static CANARY_ON: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);

/// What one worker answered about a flag: `(value, reason)`s.
type Answers = BTreeSet<(bool, String)>;
/// Per `(X-App-Version, worker)`: the lowest flag-store version it answered from, and its answers.
type Seen = BTreeMap<(String, u64), (u64, Answers)>;

/// Whether a worker gave only `(value, reason)`.
fn only(value: bool, reason: &str) -> impl Fn(&Answers) -> bool {
    let want: Answers = [(value, reason.to_string())].into();
    move |answers| *answers == want
}

/// Two stable workers and one canary; the analysis may not roll the canary back on noise (steps
/// move by hand here, the verdict has its own tests).
fn cluster() -> SharedCluster {
    static ENV: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        // Cargo's scratch directory for integration tests: the file outlives the shared cluster,
        // which dies with the test binary, and goes with `cargo clean`.
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("canary-flags-ab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the flags directory");
        let file: &'static str = dir.join("flags.json").to_string_lossy().into_owned().leak();
        vec![
            ("WORKERS", "2"),
            ("CANARY_WORKERS", "1"),
            ("CANARY_SALT", "flags-ab-test-salt"),
            ("CANARY_P95_FLOOR_MS", "60000"),
            ("CANARY_STEP_SECONDS", "3600"),
            ("FLAGS_FILE", file),
            ("FLAGS_POLL_MS", "50"),
        ]
    });
    SharedCluster::get(&CLUSTER, support::BIN, env.as_slice())
}

/// The cluster's base URL, with the canary at 10% of the users.
async fn base_with_canary_on(http: &Http) -> String {
    let base = cluster().url("");
    let mut on = CANARY_ON.lock().await;
    if !*on {
        let r = post_ok(http, &base, "/canary/increase", "").await;
        assert_eq!(r["canaryPercentage"], 10, "{r}");
        *on = true;
    }
    base
}

/// `GET url` as user `user` (`X-User-Id`, which the split places by), every reply, `concurrency`
/// at a time.
async fn as_users(http: &Http, urls: Vec<(String, String)>, concurrency: usize) -> Vec<Reply> {
    futures_util::stream::iter(urls)
        .map(|(url, user)| {
            let http = http.clone();
            async move {
                http.send("GET", &url, &[("x-user-id", &user)], "")
                    .await
                    .unwrap_or_else(|e| panic!("GET {url} as {user}: {e}"))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// `POST /flags/{key}`, asserting it was saved; the store's version after it.
async fn set_flag(http: &Http, base: &str, key: &str, body: &str) -> u64 {
    let r = post(http, &format!("{base}/flags/{key}"), body).await;
    assert!(
        r.status == 200 || r.status == 201,
        "POST /flags/{key} {body}: {} {}",
        r.status,
        r.body
    );
    r.json()["version"].as_u64().expect("a version")
}

/// What 300 users were told by the workers about flag `key`: per `(X-App-Version, worker)`, the
/// lowest flag-store version and every `(value, reason)` it answered.
async fn workers_say(http: &Http, base: &str, key: &str) -> Seen {
    let urls = (0..300)
        .map(|i| {
            let user = format!("pool-user-{i}");
            (format!("{base}/feature/{key}?user={user}"), user)
        })
        .collect();
    let mut seen: Seen = BTreeMap::new();
    for r in as_users(http, urls, 16).await {
        assert_eq!(r.status, 200, "/feature/{key}: {}", r.body);
        let v = r.json();
        let worker = v["worker"].as_u64().expect("a worker id");
        let version = v["version"].as_u64().expect("a flags version");
        let answer = (
            v["value"].as_bool().expect("a boolean value"),
            v["reason"].as_str().expect("a reason").to_string(),
        );
        let entry = seen
            .entry((r.header("x-app-version").to_string(), worker))
            .or_insert((u64::MAX, BTreeSet::new()));
        entry.0 = entry.0.min(version);
        entry.1.insert(answer);
    }
    seen
}

/// Waits until every worker of both pools answers flag `key` from store version `version` or
/// later, with answers that `accept` takes; what they said last.
async fn wait_workers(
    http: &Http,
    base: &str,
    key: &str,
    version: u64,
    accept: impl Fn(&Answers) -> bool,
) -> (bool, Seen) {
    let last = std::sync::Mutex::new(BTreeMap::new());
    let ok = eventually_async(Duration::from_secs(10), || async {
        let seen = workers_say(http, base, key).await;
        let pools: BTreeSet<&str> = seen.keys().map(|(pool, _)| pool.as_str()).collect();
        let done = seen.len() == 3
            && pools == BTreeSet::from([STABLE, CANARY])
            && seen
                .values()
                .all(|(v, answers)| *v >= version && accept(answers));
        *last.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        done
    })
    .await;
    (ok, last.into_inner().unwrap_or_else(|p| p.into_inner()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_set_through_the_master_reaches_every_worker_of_both_pools() {
    let http = Http::new();
    let base = base_with_canary_on(&http).await;
    let version = set_flag(&http, &base, "pools-see-it", r#"{"enabled": true}"#).await;
    let (ok, seen) =
        wait_workers(&http, &base, "pools-see-it", version, only(true, "DEFAULT")).await;
    assert!(ok, "on at 100%: {seen:?}");
    // And the kill switch reaches them all the same way.
    let version = set_flag(&http, &base, "pools-see-it", r#"{"enabled": false}"#).await;
    let (ok, seen) = wait_workers(
        &http,
        &base,
        "pools-see-it",
        version,
        only(false, "DISABLED"),
    )
    .await;
    assert!(ok, "switched off: {seen:?}");
    println!("flag seen by workers {:?}", seen.keys().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_at_25_percent_is_on_for_about_a_quarter_of_1000_users() {
    let http = Http::new();
    let base = base_with_canary_on(&http).await;
    let version = set_flag(
        &http,
        &base,
        "quarter",
        r#"{"enabled": true, "percentage": 25}"#,
    )
    .await;
    // Each worker answers from its own client: wait until they all have the flag.
    let (fresh, seen) = wait_workers(&http, &base, "quarter", version, |answers| {
        answers.iter().all(|(_, reason)| reason == "SPLIT")
    })
    .await;
    assert!(
        fresh,
        "the workers never loaded version {version}: {seen:?}"
    );
    let urls = (0..1000)
        .map(|i| {
            let user = format!("user-{i}");
            (format!("{base}/feature/quarter?user={user}"), user)
        })
        .collect();
    let (mut on, mut by_pool) = (0, BTreeMap::<String, usize>::new());
    for r in as_users(&http, urls, 16).await {
        assert_eq!(r.status, 200, "{}", r.body);
        let v: Value = r.json();
        assert_eq!(v["reason"], "SPLIT", "{v}");
        on += usize::from(v["value"] == true);
        *by_pool
            .entry(r.header("x-app-version").to_string())
            .or_default() += 1;
    }
    println!("quarter: on for {on} of 1000 users, answered by {by_pool:?}");
    // One standard deviation of a fair 25% over 1,000 users is 1.4 points.
    assert!(
        (200..=300).contains(&on),
        "a 25% flag was on for {on} of 1000 users"
    );
    assert_eq!(by_pool.len(), 2, "both pools answered: {by_pool:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_user_keeps_their_variant_is_exposed_once_and_a_conversion_is_counted() {
    let http = Http::new();
    let base = base_with_canary_on(&http).await;
    let users: Vec<String> = (0..200).map(|i| format!("shopper-{i}")).collect();
    // Every user loads the page twice.
    let urls = users
        .iter()
        .chain(users.iter())
        .map(|u| (format!("{base}/ab/page"), u.clone()))
        .collect();
    let mut variants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pools = BTreeSet::new();
    for r in as_users(&http, urls, 16).await {
        assert_eq!(r.status, 200, "/ab/page: {}", r.body);
        let v = r.json();
        let user = v["user"].as_str().expect("the user").to_string();
        variants
            .entry(user)
            .or_default()
            .insert(v["variant"].as_str().expect("a variant").to_string());
        assert_eq!(r.header("x-variant"), v["variant"], "{v}");
        pools.insert(r.header("x-app-version").to_string());
    }
    assert_eq!(variants.len(), 200);
    assert_eq!(
        pools,
        BTreeSet::from([STABLE.to_string(), CANARY.to_string()]),
        "both pools served the page"
    );
    for (user, seen) in &variants {
        assert_eq!(seen.len(), 1, "{user} saw {seen:?}");
        let master = http.get(&format!("{base}/ab/variant?user={user}")).await;
        assert_eq!(master.status, 200, "{}", master.body);
        assert!(
            seen.contains(master.json()["variant"].as_str().unwrap_or("")),
            "{user}: the workers said {seen:?}, the master {}",
            master.body
        );
    }

    let status = http.get(&format!("{base}/ab/status")).await.json();
    let sum = |field: &str| -> u64 {
        status["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .map(|v| v[field].as_u64().expect("a count"))
            .sum()
    };
    println!(
        "A/B: {} requests, {} exposures over both pools",
        sum("requests"),
        sum("exposures")
    );
    assert_eq!(sum("requests"), 400, "{status:#}");
    assert_eq!(sum("exposures"), 200, "each user once: {status:#}");
    assert_eq!(sum("conversions"), 0, "{status:#}");

    let buyer = &users[0];
    let variant = variants[buyer].first().expect("a variant").clone();
    let body = format!(r#"{{"user": "{buyer}"}}"#);
    let r = post_ok(&http, &base, "/ab/convert", &body).await;
    assert_eq!(r["counted"], true, "{r}");
    assert_eq!(r["variant"], variant.as_str(), "{r}");
    let again = post_ok(&http, &base, "/ab/convert", &body).await;
    assert_eq!(again["counted"], false, "a second purchase: {again}");
    let stranger = post(
        &http,
        &format!("{base}/ab/convert"),
        r#"{"user": "stranger"}"#,
    )
    .await;
    assert_eq!(stranger.status, 409, "{}", stranger.body);

    let status = http.get(&format!("{base}/ab/status")).await.json();
    let of = |name: &str| {
        status["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .find(|v| v["variant"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("variant {name}: {status:#}"))
    };
    assert_eq!(of(&variant)["conversions"], 1, "{status:#}");
    let other = if variant == "A" { "B" } else { "A" };
    assert_eq!(of(other)["conversions"], 0, "{status:#}");
}
