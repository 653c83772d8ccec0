//! Checklist: security. The admin API answers only with `Authorization: Bearer $ADMIN_TOKEN`
//! (without it, or with a wrong one: 401 and nothing done), and not at all without a configured
//! token; mutating routes are POST only; the master's pages carry security headers.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use support::{BIN, TOKEN, admin, admin_workers, send};
use test_support::{Http, SharedCluster, eventually_async};

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

fn cluster() -> SharedCluster {
    SharedCluster::get(
        &CLUSTER,
        BIN,
        &[
            ("WORKERS", "2"),
            ("ADMIN_TOKEN", TOKEN),
            ("ACCESS_LOG", "off"),
        ],
    )
}

#[tokio::test]
async fn admin_without_a_token_or_with_a_wrong_one_is_401_and_changes_nothing() {
    let c = cluster();
    let http = Http::new();
    let url = c.url("/admin/strategy");
    let body = r#"{"strategy": "round-robin"}"#;
    let json = ("content-type", "application/json");
    let wrong = format!("Bearer {}x", TOKEN);
    for headers in [
        vec![json],
        vec![json, ("authorization", wrong.as_str())],
        vec![json, ("authorization", "Basic dGVzdDp0ZXN0")],
        vec![json, ("authorization", "Bearer")],
    ] {
        let r = send(&http, "POST", &url, &headers, body).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        assert_eq!(r.header("www-authenticate"), "Bearer");
    }
    let r = send(
        &http,
        "POST",
        &c.url("/admin/scale"),
        &[json],
        r#"{"workers": 4}"#,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = send(&http, "GET", &c.url("/admin/workers"), &[], "").await;
    assert_eq!(r.status, 401, "reading is guarded too: {}", r.body);
    let now = admin_workers(&http, &c.url("")).await;
    assert_ne!(now["strategy"], "round-robin", "no effect: {now}");
    assert_ne!(
        now["workers"].as_array().map(Vec::len),
        Some(4),
        "no effect: {now}"
    );
}

#[tokio::test]
async fn admin_with_the_token_changes_the_strategy_and_scales() {
    let c = cluster();
    let http = Http::new();
    let r = admin(
        &http,
        "POST",
        &c.url("/admin/strategy"),
        r#"{"strategy": "power-of-two-choices"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["strategy"], "power-of-two-choices");
    let r = admin(
        &http,
        "POST",
        &c.url("/admin/strategy"),
        r#"{"strategy": "fastest"}"#,
    )
    .await;
    assert_eq!(r.status, 400, "an unknown strategy: {}", r.body);
    let r = admin(&http, "POST", &c.url("/admin/strategy"), "{not json").await;
    assert_eq!(r.status, 400, "malformed JSON: {}", r.body);
    assert_eq!(
        admin_workers(&http, &c.url("")).await["strategy"],
        "power-of-two-choices"
    );

    let r = admin(&http, "POST", &c.url("/admin/scale"), r#"{"workers": 3}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let scaled = eventually_async(Duration::from_secs(20), || async {
        let w = admin_workers(&http, &c.url("")).await;
        w["workers"]
            .as_array()
            .is_some_and(|all| all.len() == 3 && all.iter().all(|w| w["state"] == "ready"))
    })
    .await;
    assert!(
        scaled,
        "three ready workers: {}",
        admin_workers(&http, &c.url("")).await
    );
    let r = admin(&http, "POST", &c.url("/admin/scale"), r#"{"workers": 0}"#).await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn admin_drain_replaces_one_slot_and_mutations_are_post_only() {
    let c = cluster();
    let http = Http::new();
    let before = admin_workers(&http, &c.url("")).await;
    let pid = before["workers"][0]["pid"]
        .as_u64()
        .expect("slot 1 has a pid");
    let r = admin(&http, "POST", &c.url("/admin/drain/1"), "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let replaced = eventually_async(Duration::from_secs(20), || async {
        let w = admin_workers(&http, &c.url("")).await;
        w["workers"].as_array().is_some_and(|all| {
            all.iter()
                .any(|w| w["id"] == 1 && w["state"] == "ready" && w["pid"].as_u64() != Some(pid))
        })
    })
    .await;
    assert!(replaced, "slot 1 has a new ready process");
    let r = admin(&http, "POST", &c.url("/admin/drain/99"), "").await;
    assert_eq!(r.status, 404, "{}", r.body);
    for path in [
        "/admin/scale",
        "/admin/restart",
        "/admin/strategy",
        "/admin/drain/1",
    ] {
        let r = admin(&http, "GET", &c.url(path), "").await;
        assert_eq!(r.status, 405, "GET {path}: {}", r.body);
    }
}

#[tokio::test]
async fn the_masters_pages_carry_security_headers() {
    let c = cluster();
    let http = Http::new();
    for path in ["/dashboard", "/health/ready", "/metrics", "/admin/workers"] {
        let r = http.get(&c.url(path)).await;
        assert_eq!(r.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(r.header("x-frame-options"), "DENY", "{path}");
        assert_eq!(
            r.header("content-security-policy"),
            "frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(r.header("referrer-policy"), "no-referrer", "{path}");
    }
}

#[tokio::test]
async fn without_a_configured_token_the_admin_api_is_off_not_open() {
    let cluster = test_support::ClusterProcess::start(BIN, &[("WORKERS", "1")]);
    let http = Http::new();
    for auth in ["", "Bearer ", "Bearer anything-at-all-123456"] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("authorization", auth)]
        };
        let r = send(&http, "GET", &cluster.url("/admin/workers"), &headers, "").await;
        assert_eq!(r.status, 403, "{auth:?}: {}", r.body);
        assert_eq!(r.json()["error"], "admin_disabled");
    }
}
