//! What the lesson's integration tests share: driving the master's routes, load from many
//! distinct users (one user would be one bucket: a single version), and waiting for a state with
//! a deadline (never a fixed sleep).

#![allow(dead_code, reason = "each test file uses its own subset")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use test_support::{Http, Reply, eventually_async};

/// The lesson's binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_canary-deployment");
/// The versions the tests run.
pub const STABLE: &str = "v1.0.0";
pub const CANARY: &str = "v2.0.0";

/// `POST url` with a JSON body, panicking on a transport error.
pub async fn post(http: &Http, url: &str, body: &str) -> Reply {
    http.send("POST", url, &[("content-type", "application/json")], body)
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// `POST path` on `base`, asserting a 200.
pub async fn post_ok(http: &Http, base: &str, path: &str, body: &str) -> Value {
    let r = post(http, &format!("{base}{path}"), body).await;
    assert_eq!(r.status, 200, "POST {path} {body}: {}", r.body);
    r.json()
}

/// `GET /canary/status`.
pub async fn status(http: &Http, base: &str) -> Value {
    let r = http.get(&format!("{base}/canary/status")).await;
    assert_eq!(r.status, 200, "/canary/status: {}", r.body);
    r.json()
}

/// Waits up to `timeout` for `/canary/status` to satisfy `cond`; the last status either way.
pub async fn wait_status(
    http: &Http,
    base: &str,
    timeout: Duration,
    cond: impl Fn(&Value) -> bool,
) -> (bool, Value) {
    let last = std::sync::Mutex::new(Value::Null);
    let ok = eventually_async(timeout, || async {
        let s = status(http, base).await;
        let done = cond(&s);
        *last.lock().unwrap_or_else(|p| p.into_inner()) = s;
        done
    })
    .await;
    let last = last.into_inner().unwrap_or_else(|p| p.into_inner());
    (ok, last)
}

/// How `n` distinct users (`X-User-Id: {prefix}-{i}`, no cookies) were served: the count per
/// `X-App-Version`, and every request that did not answer 200.
pub async fn users(
    http: &Http,
    base: &str,
    prefix: &str,
    n: usize,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let url = format!("{base}/");
    let replies: Vec<Result<Reply, String>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            let user = format!("{prefix}-{i}");
            async move { http.send("GET", &url, &[("x-user-id", &user)], "").await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut versions = BTreeMap::new();
    let mut failures = Vec::new();
    for r in replies {
        match r {
            Ok(r) if r.status == 200 => {
                *versions
                    .entry(r.header("x-app-version").to_string())
                    .or_insert(0) += 1
            }
            Ok(r) => failures.push(format!(
                "{} ({}): {}",
                r.status,
                r.header("x-app-version"),
                r.body
            )),
            Err(e) => failures.push(e),
        }
    }
    (versions, failures)
}

/// The share (in points) of `n` distinct users the canary served now.
pub async fn canary_share(http: &Http, base: &str, prefix: &str, n: usize) -> f64 {
    let (versions, failures) = users(http, base, prefix, n).await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    100.0 * versions.get(CANARY).copied().unwrap_or(0) as f64 / n as f64
}

/// What a [`UserLoad`] saw.
#[derive(Debug, Default)]
pub struct UserReport {
    /// 200s per `X-App-Version`.
    pub ok: BTreeMap<String, u64>,
    /// Non-200 answers per `X-App-Version` ("" when the edge answered, no worker).
    pub failed: BTreeMap<String, u64>,
    /// Transport errors.
    pub errors: u64,
    /// The first few failures, for the assertion message.
    pub samples: Vec<String>,
}

impl UserReport {
    /// Every request that did not get a 200.
    pub fn all_failed(&self) -> u64 {
        self.failed.values().sum::<u64>() + self.errors
    }

    /// Requests that got an answer from `version`, whatever it was.
    pub fn served_by(&self, version: &str) -> u64 {
        self.ok.get(version).copied().unwrap_or(0) + self.failed.get(version).copied().unwrap_or(0)
    }
}

/// GET loops in the background, each request from one of `users` users in turn.
pub struct UserLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<UserReport>>,
}

impl UserLoad {
    /// Starts `connections` loops against `base` + `/`.
    pub fn start(base: &str, connections: usize, users: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let url = format!("{base}/");
        let tasks = (0..connections)
            .map(|_| {
                let (stop, sent, url) = (stop.clone(), sent.clone(), url.clone());
                tokio::spawn(async move {
                    let http = Http::new();
                    let mut report = UserReport::default();
                    while !stop.load(Ordering::Relaxed) {
                        let n = sent.fetch_add(1, Ordering::Relaxed);
                        let user = format!("load-{}", n % users);
                        match http.send("GET", &url, &[("x-user-id", &user)], "").await {
                            Ok(r) => {
                                let v = r.header("x-app-version").to_string();
                                if r.status == 200 {
                                    *report.ok.entry(v).or_insert(0) += 1;
                                } else {
                                    if report.samples.len() < 5 {
                                        report
                                            .samples
                                            .push(format!("{} ({v}): {}", r.status, r.body));
                                    }
                                    *report.failed.entry(v).or_insert(0) += 1;
                                }
                            }
                            Err(e) => {
                                if report.samples.len() < 5 {
                                    report.samples.push(e);
                                }
                                report.errors += 1;
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        Self { stop, sent, tasks }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the loops and adds up what they saw.
    pub async fn finish(self) -> UserReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = UserReport::default();
        for t in self.tasks {
            let Ok(r) = t.await else { continue };
            for (k, v) in r.ok {
                *total.ok.entry(k).or_insert(0) += v;
            }
            for (k, v) in r.failed {
                *total.failed.entry(k).or_insert(0) += v;
            }
            total.errors += r.errors;
            total.samples.extend(r.samples);
        }
        total
    }
}
