//! Checklist: logging, monitoring and tracing. Every answer carries `X-Request-Id` (the client's,
//! or a fresh one) and `X-Response-Time`; `LOG_FORMAT=json` writes one JSON line per request with
//! its id, worker, status and duration (the header's, to the microsecond);
//! `/metrics/prometheus` passes `promtool check metrics`; the notes API and `/slow` answer
//! malformed input with a 4xx.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use support::{BIN, send};
use test_support::{ClusterProcess, Http, Reply, SharedCluster, assert_promtool_clean, eventually};

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

/// `X-Response-Time` in milliseconds: the figure the access log's `duration_ms` must equal.
fn response_ms(r: &Reply) -> f64 {
    r.header("x-response-time")
        .trim_end_matches("ms")
        .parse()
        .expect("x-response-time is a number of milliseconds")
}

fn base() -> String {
    SharedCluster::get(&CLUSTER, BIN, &[("WORKERS", "2"), ("ACCESS_LOG", "off")]).url("")
}

#[tokio::test]
async fn every_answer_has_a_request_id_and_a_response_time_and_a_json_log_line() {
    // Its own cluster, to read what it logs.
    let cluster = ClusterProcess::start(BIN, &[("WORKERS", "2"), ("LOG_FORMAT", "json")]);
    let base = cluster.base();
    let http = Http::new();
    let r = send(
        &http,
        "GET",
        &format!("{base}/"),
        &[("x-request-id", "trace-abc-123")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-request-id"),
        "trace-abc-123",
        "a client's id is kept"
    );
    assert!(
        r.header("x-response-time").ends_with("ms"),
        "{:?}",
        r.headers
    );
    let worker = r.header("x-worker-id").to_string();
    // The log's duration is the header's time, to the same microsecond.
    let took = response_ms(&r);
    for path in ["/health/ready", "/metrics", "/nope"] {
        let r = http.get(&format!("{base}{path}")).await;
        assert_eq!(r.header("x-request-id").len(), 25, "{path}: a minted id");
        assert!(r.header("x-response-time").ends_with("ms"), "{path}");
    }
    let bad = send(
        &http,
        "GET",
        &format!("{base}/"),
        &[("x-request-id", "bad id <script>")],
        "",
    )
    .await;
    assert_ne!(
        bad.header("x-request-id"),
        "bad id <script>",
        "an unsafe id is replaced"
    );

    let logged = eventually(Duration::from_secs(5), || {
        let stderr = cluster.stderr();
        stderr.lines().any(|line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|j| {
                let f = &j["fields"];
                f["request_id"] == "trace-abc-123"
                    && f["worker"] == worker.as_str()
                    && f["status"] == 200
                    && f["duration_ms"].as_f64() == Some(took)
            })
        })
    });
    assert!(logged, "a JSON log line for the request");
}

#[tokio::test]
async fn a_text_access_line_is_the_formatters_line_for_the_request() {
    // The text format's access lines are written straight into the log, not as events
    // (`common`'s `access_lines`): the line must be the one the event would have made.
    let cluster = ClusterProcess::start(
        BIN,
        &[("WORKERS", "1"), ("ACCESS_LOG", "on"), ("RUST_LOG", "info")],
    );
    let http = Http::new();
    let r = send(
        &http,
        "GET",
        &cluster.url("/nope%22x?q=1"),
        &[("x-request-id", "text-line-1")],
        "",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let worker = r.header("x-worker-id").to_string();
    let took = response_ms(&r);
    let want = format!(
        "  INFO master: request request_id=\"text-line-1\" method=GET path=/nope%22x \
         worker=\"{worker}\" status=404 duration_ms="
    );
    let line = || {
        cluster
            .stderr()
            .lines()
            .find(|l| l.contains("request_id=\"text-line-1\""))
            .map(str::to_owned)
    };
    assert!(eventually(Duration::from_secs(5), || line().is_some()));
    let line = line().unwrap_or_default();
    // `2026-12-04T21:52:35.116396Z`, then the rest.
    let (time, rest) = line.split_at(line.len().min(27));
    let shape = time.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        19 => b == b'.',
        26 => b == b'Z',
        _ => b.is_ascii_digit(),
    });
    assert!(shape && time.len() == 27, "{line}");
    let duration = rest
        .strip_prefix(want.as_str())
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(duration.parse::<f64>().ok(), Some(took), "{line}");
}

#[tokio::test]
async fn health_has_the_originals_shape_and_readiness_its_reasons() {
    let base = base();
    let http = Http::new();
    let h = http.health(&base).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["workers"]["total"], 2, "{h}");
    assert_eq!(h["workers"]["healthy"], 2, "{h}");
    assert_eq!(h["workers"]["degraded"], 0, "{h}");
    assert!(h["uptime"].as_f64().is_some(), "{h}");
    let r = http.get(&format!("{base}/health/ready")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ready = r.json();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["sessionStore"]["reachable"], true, "{ready}");
    let live = http.get(&format!("{base}/health/live")).await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "alive");
}

#[tokio::test]
async fn prometheus_output_passes_promtool() {
    let base = base();
    let http = Http::new();
    for _ in 0..20 {
        http.get(&format!("{base}/")).await;
    }
    let r = http.get(&format!("{base}/metrics/prometheus")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("_seconds"), "{}", r.body);
    assert_promtool_clean(&r.body);
}

#[tokio::test]
async fn the_notes_api_adds_and_lists_and_refuses_malformed_input() {
    let base = base();
    let http = Http::new();
    let json = [("content-type", "application/json")];
    let r = send(
        &http,
        "POST",
        &format!("{base}/api/notes"),
        &json,
        r#"{"text": "hello"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let note = r.json();
    let worker = r.header("x-worker-id").to_string();
    assert_eq!(note["text"], "hello");
    for body in ["{", r#"{"text": ""}"#, r#"{"txt": "x"}"#] {
        let r = send(&http, "POST", &format!("{base}/api/notes"), &json, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    let r = http.get(&format!("{base}/slow?ms=999999")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http.get(&format!("{base}/slow?ms=abc")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http.get(&format!("{base}/api/notes/abc")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!worker.is_empty());
}
