//! What the lesson's integration tests share: reading and driving breakers through the master's
//! routes, setting the services' faults, and waiting for states with a deadline (never a fixed
//! sleep).

#![allow(dead_code, reason = "each test file uses its own subset")]

use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;
use test_support::{Http, Reply, eventually_async};

/// The lesson's binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_circuit-breaker");

/// The workers a test file's shared cluster runs.
pub const WORKERS: usize = 2;

/// The file's shared cluster in `cell`: two workers, worker scope, default settings otherwise.
pub fn two_workers(
    cell: &'static std::sync::OnceLock<test_support::SharedCluster>,
) -> test_support::SharedCluster {
    test_support::SharedCluster::get(cell, BIN, &[("WORKERS", "2"), ("BREAKER_SCOPE", "worker")])
}

/// `POST url` with a JSON body, panicking on a transport error.
pub async fn post(http: &Http, url: &str, body: &str) -> Reply {
    http.send("POST", url, &[("content-type", "application/json")], body)
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// `POST /faults/{service}` with `faults` (e.g. `{"down": true}`; `{}` clears), asserting it
/// worked.
pub async fn set_faults(http: &Http, base: &str, service: &str, faults: &str) {
    let r = post(http, &format!("{base}/faults/{service}"), faults).await;
    assert_eq!(r.status, 200, "set {service} faults {faults}: {}", r.body);
}

/// Calls that reached `service`, by calling worker id.
pub async fn calls_by_worker(http: &Http, base: &str, service: &str) -> Vec<(String, u64)> {
    let r = http.get(&format!("{base}/faults/{service}")).await.json();
    r["callsByWorker"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /circuit-status`, asserting every worker answered.
pub async fn status(http: &Http, base: &str) -> Value {
    let r = http.get(&format!("{base}/circuit-status")).await;
    assert_eq!(r.status, 200, "/circuit-status: {}", r.body);
    r.json()
}

/// Circuit `name`'s snapshot on each worker: `(worker id, snapshot)`.
pub async fn circuit_on_workers(http: &Http, base: &str, name: &str) -> Vec<(u64, Value)> {
    let s = status(http, base).await;
    s["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter_map(|w| {
                    let b = w["breakers"]
                        .as_array()?
                        .iter()
                        .find(|b| b["name"] == name)?;
                    Some((w["id"].as_u64()?, b.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Circuit `name`'s state on each worker.
pub async fn states(http: &Http, base: &str, name: &str) -> Vec<String> {
    circuit_on_workers(http, base, name)
        .await
        .into_iter()
        .map(|(_, b)| b["state"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Whether circuit `name` is in one of `wanted` on all `workers` workers.
pub async fn all_in(http: &Http, base: &str, name: &str, workers: usize, wanted: &[&str]) -> bool {
    let s = states(http, base, name).await;
    s.len() == workers && s.iter().all(|st| wanted.contains(&st.as_str()))
}

/// With `service` made to fail, calls `/api/{service}` until its circuit has opened on every
/// worker (it may already be probing again when the wait is short); panics after `timeout`.
pub async fn open_everywhere(http: &Http, base: &str, service: &str, workers: usize) {
    let url = format!("{base}/api/{service}");
    let opened = eventually_async(Duration::from_secs(20), || async {
        for _ in 0..workers {
            let _ = http.send("GET", &url, &[], "").await;
        }
        all_in(http, base, service, workers, &["OPEN", "HALF_OPEN"]).await
    })
    .await;
    assert!(
        opened,
        "{service} did not open on every worker: {:?}",
        states(http, base, service).await
    );
}

/// The `q`-quantile (0.0–1.0) of `sorted`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs the binary with one worker and `env` until it exits (within 10 s); its status and stderr.
pub fn run_to_exit(env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut all = vec![("WORKERS", "1")];
    all.extend_from_slice(env);
    test_support::run_to_exit(BIN, &all)
}
