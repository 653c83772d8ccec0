//! What the lesson's integration tests share: switching strategy, setting faults, and counting
//! which worker answered (the edge's `X-Worker-Id`) over a bounded number of requests.

#![allow(dead_code, reason = "each test file uses its own subset")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use test_support::Http;

/// `POST /lb/strategy`, asserting it worked.
pub async fn set_strategy(http: &Http, base: &str, name: &str) {
    let body = json!({ "strategy": name }).to_string();
    let r = http
        .send(
            "POST",
            &format!("{base}/lb/strategy"),
            &[("content-type", "application/json")],
            &body,
        )
        .await
        .unwrap_or_else(|e| panic!("POST /lb/strategy {name}: {e}"));
    assert_eq!(r.status, 200, "switch to {name}: {}", r.body);
    assert_eq!(r.json()["strategy"], name, "{}", r.body);
}

/// `POST /lb/fault` for `worker` with `fault` (e.g. `{"delayMs": 50}`; `{}` clears).
pub async fn set_fault(http: &Http, base: &str, worker: usize, fault: Value) {
    let mut body = fault;
    body["worker"] = json!(worker);
    let r = http
        .send(
            "POST",
            &format!("{base}/lb/fault"),
            &[("content-type", "application/json")],
            &body.to_string(),
        )
        .await
        .unwrap_or_else(|e| panic!("POST /lb/fault: {e}"));
    assert_eq!(r.status, 200, "set fault {body}: {}", r.body);
}

/// `GET /lb-stats`, parsed.
pub async fn lb_stats(http: &Http, base: &str) -> Value {
    http.get(&format!("{base}/lb-stats")).await.json()
}

/// The `/lb-stats` entry of worker `id`.
pub fn worker(stats: &Value, id: u64) -> &Value {
    stats["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == id))
        .unwrap_or_else(|| panic!("no worker {id} in {stats}"))
}

/// What [`spread`] saw.
#[derive(Debug, Default)]
pub struct Spread {
    /// Worker id → 2xx responses it sent.
    pub by_worker: BTreeMap<u64, u64>,
    /// Non-2xx responses and transport errors, first few kept.
    pub failed: u64,
    pub failures: Vec<String>,
    /// Worker ids in the order the responses arrived.
    pub order: Vec<u64>,
}

impl Spread {
    /// Responses from `id`.
    pub fn of(&self, id: u64) -> u64 {
        self.by_worker.get(&id).copied().unwrap_or(0)
    }

    /// All 2xx responses.
    pub fn ok(&self) -> u64 {
        self.by_worker.values().sum()
    }

    /// `id`'s share of the 2xx responses, 0.0 to 1.0.
    pub fn share(&self, id: u64) -> f64 {
        self.of(id) as f64 / self.ok().max(1) as f64
    }
}

/// Sends exactly `total` GETs to `url` from `concurrency` tasks and counts who answered.
pub async fn spread(http: &Http, url: &str, total: usize, concurrency: usize) -> Spread {
    spread_with(http, url, total, concurrency, &[]).await
}

/// [`spread`] with request headers.
pub async fn spread_with(
    http: &Http,
    url: &str,
    total: usize,
    concurrency: usize,
    headers: &[(&str, &str)],
) -> Spread {
    let next = Arc::new(AtomicUsize::new(0));
    let headers: Arc<Vec<(String, String)>> = Arc::new(
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, next, headers) =
            (http.clone(), url.to_string(), next.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Spread::default();
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                match http.send("GET", &url, &h, "").await {
                    Ok(r) if (200..300).contains(&r.status) => {
                        let id: u64 = r
                            .header("x-worker-id")
                            .parse()
                            .expect("X-Worker-Id is a number");
                        *seen.by_worker.entry(id).or_default() += 1;
                        seen.order.push(id);
                    }
                    Ok(r) => {
                        seen.failed += 1;
                        seen.failures.push(format!(
                            "{} from worker {:?}: {}",
                            r.status,
                            r.header("x-worker-id"),
                            r.body
                        ));
                    }
                    Err(e) => {
                        seen.failed += 1;
                        seen.failures.push(e);
                    }
                }
            }
            seen
        }));
    }
    let mut all = Spread::default();
    for t in tasks {
        let s = t.await.expect("a request task panicked");
        for (id, n) in s.by_worker {
            *all.by_worker.entry(id).or_default() += n;
        }
        all.failed += s.failed;
        all.failures.extend(s.failures.into_iter().take(5));
        all.order.extend(s.order);
    }
    all
}
