//! Shared by this crate's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use test_support::Http;

/// The lesson's binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_performance-monitoring");

/// Sampling fast enough for a test to see changes within a second.
pub const FAST: [(&str, &str); 3] = [
    ("METRICS_INTERVAL", "250"),
    ("RUST_LOG", "warn"),
    ("HEALTH_CHECK_INTERVAL", "500"),
];

/// `GET /metrics`, parsed.
pub async fn metrics(http: &Http, base: &str) -> serde_json::Value {
    http.get(&format!("{base}/metrics")).await.json()
}

/// The worker object with slot `id` in a `/metrics` body.
pub fn worker(m: &serde_json::Value, id: u64) -> &serde_json::Value {
    m["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == id))
        .unwrap_or_else(|| panic!("no worker {id} in {m}"))
}

/// The `p`-th percentile (0..=100) of `samples` by nearest rank, as hdrhistogram reports it.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

#[allow(unused_imports, reason = "only the Prometheus test needs a tool")]
pub use test_support::require_tool;
