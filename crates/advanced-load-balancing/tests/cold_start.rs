//! Least-response-time from a cold start, with worker 2 slowed from the environment
//! (`FAULT_WORKER=2 FAULT_DELAY_MS=50`); and an unknown `STRATEGY` refused at start.

mod support;

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{lb_stats, spread, worker};
use test_support::{Http, SharedCluster};

const BIN: &str = env!("CARGO_BIN_EXE_advanced-load-balancing");

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

fn cluster() -> SharedCluster {
    SharedCluster::get(
        &CLUSTER,
        BIN,
        &[
            ("WORKERS", "2"),
            ("STRATEGY", "least-response-time"),
            ("FAULT_WORKER", "2"),
            ("FAULT_DELAY_MS", "50"),
        ],
    )
}

#[tokio::test]
async fn from_a_cold_start_neither_worker_takes_everything_then_the_fast_one_takes_most() {
    let http = Http::new();
    let base = cluster().url("");
    let stats = lb_stats(&http, &base).await;
    assert_eq!(stats["totalRequests"], 0, "the cluster is cold: {stats}");

    // The Node original sent all 40 to one worker here: every score was 0 before metrics arrived.
    let burst = spread(&http, &format!("{base}/fast"), 40, 40).await;
    eprintln!("cold burst of 40: {:?}", burst.by_worker);
    assert_eq!(burst.failed, 0, "{:?}", burst.failures);
    for id in [1, 2] {
        assert!(
            burst.of(id) >= 10,
            "worker {id} got {} of 40: {:?}",
            burst.of(id),
            burst.by_worker
        );
    }

    // Having measured both, it now prefers worker 1 (worker 2 is 50 ms slower, set by env).
    let s = spread(&http, &format!("{base}/fast"), 400, 8).await;
    eprintln!("then 400: {:?}", s.by_worker);
    assert_eq!(s.failed, 0, "{:?}", s.failures);
    assert!(
        s.share(1) >= 0.8,
        "worker 1 got {:.3}: {:?}",
        s.share(1),
        s.by_worker
    );
    let stats = lb_stats(&http, &base).await;
    let (fast, slow) = (
        worker(&stats, 1)["ewmaResponseTime"]
            .as_f64()
            .unwrap_or(f64::NAN),
        worker(&stats, 2)["ewmaResponseTime"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
    assert!(
        slow > fast + 30.0,
        "estimates: worker 1 {fast} ms, worker 2 {slow} ms"
    );
}

#[test]
fn an_unknown_strategy_exits_2_listing_the_valid_names() {
    let mut child = Command::new(BIN)
        .env("STRATEGY", "fastest")
        .env("PORT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the lesson binary");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("an unknown STRATEGY did not stop the program within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim(),
        "error: invalid STRATEGY=\"fastest\": expected one of round-robin, least-connections, \
         weighted, least-response-time, resource-based, power-of-two-choices, consistent-hash"
    );
}
