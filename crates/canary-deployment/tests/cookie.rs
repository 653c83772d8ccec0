//! The version cookie records a user's bucket so a second instance with the same `CANARY_SALT`
//! (or this one after a restart) honours it, even when the user's key changed; an edited cookie is
//! ignored and replaced, so a client cannot choose its version.

mod support;

use support::{BIN, CANARY, STABLE, post_ok};
use test_support::{ClusterProcess, Http, Reply};

const ENV: &[(&str, &str)] = &[
    ("WORKERS", "1"),
    ("CANARY_WORKERS", "1"),
    ("CANARY_SALT", "cookie-test-salt"),
    ("CANARY_STEPS", "50,100"),
    ("CANARY_STEP_SECONDS", "3600"),
    ("CANARY_P95_FLOOR_MS", "60000"),
];

async fn visit(http: &Http, base: &str, user: &str, cookie: Option<&str>) -> Reply {
    let mut headers = vec![("x-user-id", user)];
    if let Some(c) = cookie {
        headers.push(("cookie", c));
    }
    let r = http
        .send("GET", &format!("{base}/"), &headers, "")
        .await
        .unwrap_or_else(|e| panic!("GET {base}/: {e}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r
}

/// The `name=value` pair of the response's version cookie.
fn bucket_cookie(r: &Reply) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with("cluster_bucket="))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_honours_the_cookie_and_an_edited_one_is_replaced() {
    let (a, b) = (
        ClusterProcess::start(BIN, ENV),
        ClusterProcess::start(BIN, ENV),
    );
    let http = Http::new();
    for c in [&a, &b] {
        post_ok(&http, &c.base(), "/canary/increase", "").await;
    }
    // Two users on different versions at 50%, found on instance A.
    let mut on = std::collections::HashMap::new();
    for i in 0..50 {
        let user = format!("user-{i}");
        let r = visit(&http, &a.base(), &user, None).await;
        on.entry(r.header("x-app-version").to_string())
            .or_insert((user, bucket_cookie(&r).expect("a new user gets the cookie")));
        if on.len() == 2 {
            break;
        }
    }
    let (canary_user, canary_cookie) = on.get(CANARY).cloned().expect("a canary user among 50");
    let (stable_user, _) = on.get(STABLE).cloned().expect("a stable user among 50");

    // Instance B, same salt: the cookie decides, even for a request whose key is now another
    // user's (a login, a new address); and B sets no new cookie.
    let r = visit(&http, &b.base(), &stable_user, Some(&canary_cookie)).await;
    assert_eq!(r.header("x-app-version"), CANARY, "B follows A's cookie");
    assert_eq!(bucket_cookie(&r), None, "a valid cookie is not replaced");
    let r = visit(&http, &b.base(), &canary_user, None).await;
    assert_eq!(
        r.header("x-app-version"),
        CANARY,
        "the same salt buckets alike"
    );

    // Edited to claim bucket 0 (the canary's first), the tag no longer matches: ignored, and
    // replaced by the user's own bucket.
    let forged = "cluster_bucket=0-0123456789abcdef";
    let r = visit(&http, &b.base(), &stable_user, Some(forged)).await;
    assert_eq!(
        r.header("x-app-version"),
        STABLE,
        "a forged cookie does not choose the canary"
    );
    let replaced = bucket_cookie(&r).expect("the forged cookie is replaced");
    assert_ne!(replaced, forged);

    // A rollback moves the cookie's holder to stable: the cookie records a bucket, not a version.
    post_ok(&http, &b.base(), "/canary/rollback", "").await;
    let r = visit(&http, &b.base(), &canary_user, Some(&canary_cookie)).await;
    assert_eq!(r.header("x-app-version"), STABLE);
}
