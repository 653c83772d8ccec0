//! Checklist: the platform around the cluster, against the lesson's own binary. Under systemd it
//! says `READY=1` once it serves, pings the watchdog and says `STOPPING=1` on SIGTERM; it serves
//! on a socket systemd passes it; it speaks HTTPS with `TLS_CERT`/`TLS_KEY`; and with
//! `AUTOSCALE=min..max` its worker count follows the load.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{BIN, TOKEN, admin_workers};
use test_support::systemd::{NotifySocket, start_socket_activated};
use test_support::tls::{Certs, https_connect, plain_http_to, send, send_with};
use test_support::{BackgroundLoad, ClusterProcess, Http};

#[test]
fn under_systemd_ready_comes_once_it_serves_the_watchdog_is_pinged_and_sigterm_says_stopping() {
    let notify = NotifySocket::bind("platform");
    let mut cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "1"),
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = Vec::new();
    assert!(
        notify.until("READY=1", Duration::from_secs(20), &mut seen),
        "no READY=1 within 20 s; got {seen:?}"
    );
    // READY=1 means "serving": the first request after it succeeds, without retrying.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let r = rt.block_on(Http::new().get(&cluster.url("/session")));
    assert_eq!(
        r.status, 200,
        "a worker serves once READY=1 came: {}",
        r.body
    );

    let mut pings = Vec::new();
    for n in 1..=2 {
        assert!(
            notify.until("WATCHDOG=1", Duration::from_secs(5), &mut pings),
            "WATCHDOG=1 #{n} not within 5 s (WATCHDOG_USEC=400000 asks for one every 200 ms); \
             got {pings:?}"
        );
    }

    cluster.signal(Signal::SIGTERM);
    let mut at_stop = Vec::new();
    assert!(
        notify.until("STOPPING=1", Duration::from_secs(10), &mut at_stop),
        "no STOPPING=1 within 10 s of SIGTERM; got {at_stop:?}"
    );
    let status = cluster.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "a clean shutdown exits 0; stderr:\n{}",
        cluster.stderr()
    );
}

#[test]
fn a_socket_systemd_passes_as_fd_3_is_the_one_it_serves_on() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let cluster = start_socket_activated(BIN, &[("WORKERS", "1")], &listener);
    assert_eq!(
        cluster.addr.port(),
        port,
        "the master serves on the passed socket, not on PORT=0"
    );
    // From here the master accepts on it, not the test.
    drop(listener);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let http = Http::new();
        let live = http
            .get(&format!("http://127.0.0.1:{port}/health/live"))
            .await;
        assert_eq!(
            live.status, 200,
            "GET /health/live through fd 3: {}",
            live.body
        );
        let r = http.get(&format!("http://127.0.0.1:{port}/session")).await;
        assert_eq!(r.status, 200, "a worker answers through fd 3: {}", r.body);
    });
}

#[test]
fn with_tls_cert_and_key_it_serves_https_and_shrugs_off_plain_http() {
    let certs = Certs::make("platform");
    let env = certs.env();
    let mut all: Vec<(&str, &str)> = vec![("WORKERS", "1")];
    all.extend(env.iter().map(|(k, v)| (*k, v.as_str())));
    let cluster = ClusterProcess::start(BIN, &all);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut conn = https_connect(cluster.addr, &certs.der).await;
        let (status, _, body) = send(&mut conn, "GET", "/health/ready", "").await;
        assert_eq!(status, 200, "GET /health/ready over TLS: {body}");

        // A session made over HTTPS is the same session on the next request with its cookie.
        let ((status, _, body), head) = send_with(&mut conn, "GET", "/session", &[], "").await;
        assert_eq!(status, 200, "GET /session over TLS: {body}");
        let cookie = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("set-cookie")
                    .then(|| v.trim().split(';').next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| panic!("GET /session sets a cookie: {head}"));
        let first: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let cookie_line = format!("Cookie: {cookie}");
        let ((status, _, body), _) =
            send_with(&mut conn, "GET", "/session", &[&cookie_line], "").await;
        assert_eq!(status, 200, "GET /session again over TLS: {body}");
        let again: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            again["session"]["id"], first["session"]["id"],
            "the cookie carries the session over TLS: {first} then {again}"
        );
        assert_eq!(
            again["session"]["requestCount"].as_u64(),
            first["session"]["requestCount"].as_u64().map(|n| n + 1),
            "{first} then {again}"
        );

        for _ in 0..3 {
            let answer = plain_http_to(cluster.addr, "/health/live").await;
            assert!(
                !answer.starts_with("HTTP/"),
                "plain HTTP on the TLS port got an HTTP answer: {answer:?}"
            );
        }
        let mut conn = https_connect(cluster.addr, &certs.der).await;
        let (status, _, body) = send(&mut conn, "GET", "/health/live", "").await;
        assert_eq!(status, 200, "HTTPS still works after plain HTTP: {body}");
    });
    assert!(test_support::is_alive(cluster.pid()), "the master survived");
}

/// Live slots (neither Stopped nor Draining) in `GET /admin/workers`.
async fn live_workers(http: &Http, base: &str) -> usize {
    let w = admin_workers(http, base).await;
    w["workers"]
        .as_array()
        .map(|slots| {
            slots
                .iter()
                .filter(|s| s["state"] != "stopped" && s["state"] != "draining")
                .count()
        })
        .unwrap_or_else(|| panic!("/admin/workers lists slots: {w}"))
}

/// Polls until `want(live)` holds, for up to `timeout`; every count seen on the way.
async fn wait_for(
    http: &Http,
    base: &str,
    timeout: Duration,
    want: impl Fn(usize) -> bool,
) -> Result<Vec<usize>, Vec<usize>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let live = live_workers(http, base).await;
        seen.push(live);
        if want(live) {
            return Ok(seen);
        }
        if Instant::now() >= deadline {
            return Err(seen);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn with_autoscale_the_worker_count_rises_under_load_and_falls_back_after() {
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "1"),
            ("ADMIN_TOKEN", TOKEN),
            ("AUTOSCALE", "1..3"),
            ("AUTOSCALE_TARGET_INFLIGHT", "2"),
            ("AUTOSCALE_INTERVAL", "200"),
            ("AUTOSCALE_UP_COOLDOWN", "400"),
            ("AUTOSCALE_DOWN_WINDOW", "1500"),
        ],
    );
    let base = cluster.base();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let http = Http::new();
        assert_eq!(live_workers(&http, &base).await, 1, "starts at WORKERS=1");
        // 8 connections, each always waiting on a 100 ms request: about 8 in flight, which at 2
        // per worker asks for more than one worker.
        let load = BackgroundLoad::start(cluster.url("/slow?ms=100"), 8);
        let up = wait_for(&http, &base, Duration::from_secs(20), |n| n > 1).await;
        let (report, _) = load.finish().await;
        let up = up.unwrap_or_else(|seen| panic!("no scale-up within 20 s; counts: {seen:?}"));
        assert!(up.iter().all(|n| *n <= 3), "never above max 3: {up:?}");
        assert!(report.ok > 0, "the load was served: {:?}", report.failures);
        assert_eq!(report.failed, 0, "no request failed: {:?}", report.failures);

        let down = wait_for(&http, &base, Duration::from_secs(20), |n| n == 1).await;
        let down =
            down.unwrap_or_else(|seen| panic!("no scale-down within 20 s; counts: {seen:?}"));
        assert!(down.iter().all(|n| *n >= 1), "never below min 1: {down:?}");
    });
}
