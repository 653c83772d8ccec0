//! A/B tests on a real cluster: workers render the variant from the pure assignment, the master
//! counts exposures as it routes `/ab/page` (`ab::Exposing`) and conversions on `POST
//! /ab/convert`, and `GET /ab/status` gives the figures and the z-test.
//!
//! Each test starts its own two-worker cluster: the figures are the whole cluster's.

mod flags_ab_common;

use std::collections::{BTreeMap, BTreeSet};

use flags_ab_common::{BIN, TempDir, post};
use serde_json::Value;
use test_support::{ClusterProcess, Http};

fn start(dir: &TempDir) -> ClusterProcess {
    let file = dir.flags_file();
    ClusterProcess::start(BIN, &[("WORKERS", "2"), ("FLAGS_FILE", &file)])
}

/// `GET /ab/page` as `user`: (the variant in the body, the `X-Variant` header, the worker).
async fn page(http: &Http, base: &str, user: &str) -> (String, String, u64) {
    let r = http
        .send(
            "GET",
            &format!("{base}/ab/page"),
            &[("x-user-id", user)],
            "",
        )
        .await
        .unwrap_or_else(|e| panic!("GET /ab/page as {user}: {e}"));
    assert_eq!(r.status, 200, "/ab/page as {user}: {}", r.body);
    let v = r.json();
    (
        v["variant"].as_str().expect("a variant").to_string(),
        r.header("x-variant").to_string(),
        v["worker"].as_u64().expect("a worker"),
    )
}

/// What the master says `user`'s variant is, counting nothing.
async fn assigned(http: &Http, base: &str, user: &str) -> String {
    let v = http
        .get(&format!("{base}/ab/variant?user={user}"))
        .await
        .json();
    v["variant"].as_str().expect("a variant").to_string()
}

async fn status(http: &Http, base: &str) -> Value {
    let r = http.get(&format!("{base}/ab/status")).await;
    assert_eq!(r.status, 200, "/ab/status: {}", r.body);
    r.json()
}

/// `(requests, exposures, conversions)` of `variant` in a status.
fn counts(status: &Value, variant: &str) -> (u64, u64, u64) {
    let v = status["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["variant"] == variant))
        .unwrap_or_else(|| panic!("no variant {variant} in {status}"));
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    (n("requests"), n("exposures"), n("conversions"))
}

#[tokio::test]
async fn a_user_keeps_their_variant_on_every_worker_and_the_master_agrees() {
    let dir = TempDir::new("ab-stable");
    let cluster = start(&dir);
    let (http, base) = (Http::new(), cluster.base());
    let mut on_b = 0;
    let mut workers = BTreeSet::new();
    for i in 0..100 {
        let user = format!("visitor-{i}");
        let expected = assigned(&http, &base, &user).await;
        for _ in 0..4 {
            let (variant, header, worker) = page(&http, &base, &user).await;
            assert_eq!(
                (variant.as_str(), header.as_str()),
                (expected.as_str(), expected.as_str()),
                "{user} on worker {worker}: the body and X-Variant must be the assigned variant"
            );
            workers.insert(worker);
        }
        on_b += u32::from(expected == "B");
    }
    assert_eq!(workers.len(), 2, "both workers rendered variants");
    eprintln!("of 100 users, {on_b} on B");
    // A 50% split of 100 users: standard deviation 5.
    assert!((30..=70).contains(&on_b), "{on_b} of 100 users on B");
}

#[tokio::test]
async fn exposures_count_users_once_and_conversions_once_per_exposed_user() {
    let dir = TempDir::new("ab-counts");
    let cluster = start(&dir);
    let (http, base) = (Http::new(), cluster.base());
    let mut users_on: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..40 {
        let user = format!("shopper-{i}");
        for _ in 0..3 {
            page(&http, &base, &user).await;
        }
        let variant = assigned(&http, &base, &user).await;
        users_on.entry(variant).or_default().push(user);
    }
    // A request with no user is served the control and counts for nothing.
    let r = http.get(&format!("{base}/ab/page")).await;
    assert_eq!(r.header("x-variant"), "A", "{}", r.body);
    let mut converted: BTreeMap<&str, u64> = BTreeMap::new();
    for (variant, users) in &users_on {
        for user in users.iter().take(5) {
            let body = format!(r#"{{"user": "{user}"}}"#);
            let r = post(&http, &format!("{base}/ab/convert"), &body).await;
            assert_eq!(r.status, 200, "convert {user}: {}", r.body);
            assert_eq!(r.json()["counted"], true, "first conversion of {user}");
            let again = post(&http, &format!("{base}/ab/convert"), &body).await;
            assert_eq!(
                again.json()["counted"],
                false,
                "{user} converts once: {}",
                again.body
            );
            *converted.entry(variant.as_str()).or_default() += 1;
        }
    }
    let r = post(
        &http,
        &format!("{base}/ab/convert"),
        r#"{"user": "never-seen"}"#,
    )
    .await;
    assert_eq!(r.status, 409, "a conversion with no exposure: {}", r.body);
    let s = status(&http, &base).await;
    for variant in ["A", "B"] {
        let users = users_on.get(variant).map_or(0, |u| u.len() as u64);
        let conv = converted.get(variant).copied().unwrap_or(0);
        assert_eq!(
            counts(&s, variant),
            (3 * users, users, conv),
            "{variant}: 3 requests from each of {users} users, {conv} converted; status {s}"
        );
    }
    assert_eq!(s["users"], 40, "{s}");
    assert_eq!(s["notCounted"], 0, "{s}");
}

/// The hand-computed case, 20 of 200 users converting on A (10%) and 40 of 200 on B (20%):
///   pooled p = 60 / 400 = 0.15;  p(1 − p) = 0.1275;  × (1/200 + 1/200) = 0.001275
///   se = √0.001275 = 0.0357071;  z = (0.20 − 0.10) / 0.0357071 = 2.80056
///   p-value = 2 (1 − Φ(2.80056)) = 2 × 0.0025507 = 0.0051014, significant at 5%.
#[tokio::test]
async fn the_status_reports_the_z_test_of_b_against_a() {
    let dir = TempDir::new("ab-ztest");
    let cluster = start(&dir);
    let (http, base) = (Http::new(), cluster.base());
    let s = status(&http, &base).await;
    assert_eq!(s["significance"], Value::Null, "no users, no test: {s}");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut i = 0;
    while a.len() < 200 || b.len() < 200 {
        let user = format!("buyer-{i}");
        i += 1;
        let group = if assigned(&http, &base, &user).await == "A" {
            &mut a
        } else {
            &mut b
        };
        if group.len() < 200 {
            page(&http, &base, &user).await;
            group.push(user);
        }
    }
    for user in a.iter().take(20).chain(b.iter().take(40)) {
        let r = post(
            &http,
            &format!("{base}/ab/convert"),
            &format!(r#"{{"user": "{user}"}}"#),
        )
        .await;
        assert_eq!(r.status, 200, "convert {user}: {}", r.body);
    }
    let s = status(&http, &base).await;
    assert_eq!(counts(&s, "A"), (200, 200, 20), "{s}");
    assert_eq!(counts(&s, "B"), (200, 200, 40), "{s}");
    let sig = &s["significance"];
    let f = |k: &str| sig[k].as_f64().unwrap_or_else(|| panic!("{k} in {sig}"));
    assert!((f("z") - 2.80056).abs() < 1e-4, "z: {sig}");
    assert!((f("pValue") - 0.0051014).abs() < 1e-5, "p-value: {sig}");
    assert!((f("difference") - 0.1).abs() < 1e-12, "difference: {sig}");
    assert_eq!(sig["significantAt5Percent"], true, "{sig}");
    assert_eq!(sig["method"], "two-proportion z-test (pooled), two-sided");
    eprintln!("status: {s}");
}
