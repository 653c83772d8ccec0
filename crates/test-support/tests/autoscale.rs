//! Autoscaling (`AUTOSCALE=min..max`) against a real cluster: load goes up and down on loopback,
//! and the number of Ready workers follows within the bounds.

use std::time::{Duration, Instant};

use test_support::{BackgroundLoad, ClusterProcess, Http, assert_bad_settings_exit_2};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// Ready workers and live slots (not Stopped or Draining), from `/health`.
async fn counts(http: &Http, base: &str) -> (usize, usize) {
    let slots = http.slot_states(base).await;
    let ready = slots.iter().filter(|(_, s, _)| s == "ready").count();
    let live = slots
        .iter()
        .filter(|(_, s, _)| s != "stopped" && s != "draining")
        .count();
    (ready, live)
}

/// Polls until `ready` workers are Ready, for up to `timeout`; every live count seen on the way.
async fn wait_for_ready(http: &Http, base: &str, ready: usize, timeout: Duration) -> Vec<usize> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let (now_ready, live) = counts(http, base).await;
        seen.push(live);
        if now_ready == ready && live == ready {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{ready} Ready workers expected within {timeout:?}; counts seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_worker_count_follows_the_load_up_to_max_and_back_down_to_min() {
    let mut cluster = ClusterProcess::start(
        FIXTURE,
        &[
            // Below min on purpose: the first decision brings it into the range.
            ("WORKERS", "1"),
            ("AUTOSCALE", "2..3"),
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
        wait_for_ready(&http, &base, 2, Duration::from_secs(20)).await;

        // 8 connections, each always waiting on a 100 ms request: about 8 in flight, which at
        // 2 per worker asks for 4, so max (3).
        let load = BackgroundLoad::start(cluster.url("/slow?ms=100"), 8);
        let up = wait_for_ready(&http, &base, 3, Duration::from_secs(20)).await;
        assert!(up.iter().all(|n| *n <= 3), "never above max 3: {up:?}");
        // Held at max for a while under the same load: it neither overshoots nor flaps.
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            let (_, live) = counts(&http, &base).await;
            assert_eq!(live, 3, "stays at max 3 while the load lasts");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (report, _) = load.finish().await;
        assert_eq!(
            report.failed, 0,
            "no request failed while workers joined: {:?}",
            report.failures
        );
        assert!(report.ok > 0, "the load was served");

        // No load: down to min once the 1.5 s window has been low throughout, and no lower.
        let idle_since = Instant::now();
        let down = wait_for_ready(&http, &base, 2, Duration::from_secs(20)).await;
        assert!(down.iter().all(|n| *n >= 2), "never below min 2: {down:?}");
        assert!(
            idle_since.elapsed() >= Duration::from_millis(1000),
            "scaled down {:?} after the load ended, before the 1.5 s window could be low \
             throughout (allowing for the interval)",
            idle_since.elapsed()
        );
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            let (_, live) = counts(&http, &base).await;
            assert_eq!(live, 2, "stays at min 2 when idle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Every decision is kept with its reason, for an admin route.
        let status = http.get(&cluster.url("/fixture/autoscale")).await.json();
        let decisions = status["decisions"].as_array().cloned().unwrap_or_default();
        let moves: Vec<(u64, u64)> = decisions
            .iter()
            .filter_map(|d| Some((d["from"].as_u64()?, d["to"].as_u64()?)))
            .collect();
        assert_eq!(
            moves,
            vec![(1, 2), (2, 3), (3, 2)],
            "into the range, up, down: {status}"
        );
        let reasons: Vec<&str> = decisions
            .iter()
            .filter_map(|d| d["reason"].as_str())
            .collect();
        assert!(reasons[0].contains("outside AUTOSCALE=2..3"), "{reasons:?}");
        assert!(reasons[1].contains("scaling up"), "{reasons:?}");
        assert!(reasons[2].contains("scaling down"), "{reasons:?}");
        assert_eq!(status["min"], 2, "{status}");
        assert_eq!(status["max"], 3, "{status}");
    });
    // And as events, in the same order.
    for to in [2, 3, 2] {
        let want = format!("\"to\":{to}");
        let line = cluster.wait_line(
            |l| l.starts_with("event: ") && l.contains("\"autoscaled\"") && l.contains(&want),
            Duration::from_secs(5),
        );
        assert!(line.is_some(), "an autoscaled event to {to}");
    }
}

#[test]
fn without_autoscale_the_count_stays_at_workers_under_load() {
    let cluster = ClusterProcess::start(FIXTURE, &[("WORKERS", "1")]);
    let base = cluster.base();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let http = Http::new();
        let load = BackgroundLoad::start(cluster.url("/slow?ms=50"), 8);
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            assert_eq!(
                counts(&http, &base).await.1,
                1,
                "one worker, as WORKERS says"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        load.finish().await;
        let status = http.get(&cluster.url("/fixture/autoscale")).await;
        assert_eq!(status.body, "null", "no autoscaler state without AUTOSCALE");
    });
}

#[test]
fn bad_autoscale_values_exit_2_naming_the_variable() {
    assert_bad_settings_exit_2(
        FIXTURE,
        &[("AUTOSCALE", "1..4")],
        &[
            ("AUTOSCALE", "many"),
            ("AUTOSCALE", "3..1"),
            ("AUTOSCALE", "0..2"),
            ("AUTOSCALE", "1..300"),
            ("AUTOSCALE", "2"),
            ("AUTOSCALE_TARGET_INFLIGHT", "0"),
            ("AUTOSCALE_TARGET_INFLIGHT", "lots"),
            ("AUTOSCALE_INTERVAL", "1s"),
            ("AUTOSCALE_UP_COOLDOWN", "-1"),
            ("AUTOSCALE_DOWN_WINDOW", "soon"),
        ],
    );
}
