//! Two instances sharing `CANARY_SALT` behind the real nginx (the committed
//! `deploy/nginx/nginx.conf`, which balances by least connections and knows nothing of versions):
//! a user keeps one version through whichever instance serves each request, because the signed
//! version cookie says which bucket the user is in and both instances read it alike.

mod support;

use futures_util::StreamExt;
use support::{BIN, CANARY, STABLE, post_ok};
use test_support::services::fleet::Fleet;
use test_support::services::proxy::Proxy;
use test_support::{Http, Reply};

const ENV: &[(&str, &str)] = &[
    ("WORKERS", "1"),
    ("CANARY_WORKERS", "1"),
    ("CANARY_SALT", "proxies-test-salt"),
    ("CANARY_STEPS", "25,100"),
    ("CANARY_STEP_SECONDS", "3600"),
    ("CANARY_P95_FLOOR_MS", "60000"),
    ("ACCESS_LOG", "off"),
];

const JARS: usize = 100;
const REQUESTS: usize = 20;

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

/// What one cookie jar saw: the version and the worker pid of each response.
struct JarRun {
    versions: Vec<String>,
    pids: Vec<u64>,
}

/// User `n`'s first request names the user (`X-User-Id`); every later one carries only the
/// cookie the jar was given, so only the cookie can keep the user's version.
async fn jar_run(http: Http, url: String, n: usize) -> Result<JarRun, String> {
    let user = format!("proxy-user-{n}");
    let mut cookie: Option<String> = None;
    let mut run = JarRun {
        versions: Vec::new(),
        pids: Vec::new(),
    };
    for i in 0..REQUESTS {
        let mut headers = Vec::new();
        if i == 0 {
            headers.push(("x-user-id", user.as_str()));
        }
        if let Some(c) = &cookie {
            headers.push(("cookie", c.as_str()));
        }
        let r = http.send("GET", &url, &headers, "").await?;
        if r.status != 200 {
            return Err(format!("{user} request {i}: {} {}", r.status, r.body));
        }
        if let Some(c) = bucket_cookie(&r) {
            cookie = Some(c);
        }
        run.versions.push(r.header("x-app-version").to_string());
        run.pids
            .push(r.json()["pid"].as_u64().ok_or("a pid in the body")?);
    }
    Ok(run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_two_instances_keep_each_user_on_one_version_at_25_percent() {
    let fleet = Fleet::start(BIN, 2, ENV);
    let http = Http::new();
    for i in 0..2 {
        let base = fleet.get(i).expect("running").base();
        post_ok(&http, &base, "/canary/increase", "").await;
    }
    let proxy = Proxy::nginx(&fleet.ports);
    let url = format!("{}/", proxy.base());
    let runs: Vec<Result<JarRun, String>> = futures_util::stream::iter(0..JARS)
        .map(|n| jar_run(http.clone(), url.clone(), n))
        .buffer_unordered(10)
        .collect()
        .await;

    let (mut canary, mut both_instances) = (0, 0);
    for run in runs {
        let run = run.unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
        let first = &run.versions[0];
        assert!(first == STABLE || first == CANARY, "version {first}");
        assert!(
            run.versions.iter().all(|v| v == first),
            "a user changed version: {:?}",
            run.versions
        );
        canary += usize::from(first == CANARY);
        let mut owners: Vec<usize> = run.pids.iter().map(|p| fleet.owner_of(*p)).collect();
        owners.sort_unstable();
        owners.dedup();
        both_instances += usize::from(owners.len() == 2);
    }
    println!(
        "nginx, 2 instances at 25%: {JARS} users × {REQUESTS} requests, {canary} users on {CANARY}, \
         {} on {STABLE}, every user on one version; {both_instances} users served by both instances",
        JARS - canary
    );
    // 25 of 100 expected; far off means the bucket is not the user's.
    assert!(
        (10..=45).contains(&canary),
        "{canary} of {JARS} users on the canary"
    );
    assert!(
        both_instances >= JARS * 9 / 10,
        "only {both_instances} users crossed instances: the test proves nothing for the others"
    );
}
