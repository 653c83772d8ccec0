//! A worker burning a core shows the CPU the kernel charged it. Alone in its test binary, so no
//! other test of this crate competes for the two cores while it measures.

mod support;

use std::time::{Duration, Instant};

use support::{BIN, FAST, metrics, worker};
use test_support::{ClusterProcess, Http, eventually_async};

/// CPU time (user + system) the kernel has charged to `pid`, from /proc.
fn cpu_time(pid: u64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // Fields after the parenthesised command, from 3 (state): utime is field 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields[10] + fields[11];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

#[tokio::test]
async fn a_worker_burning_a_core_shows_what_the_kernel_charged_it() {
    let cluster = ClusterProcess::start(BIN, &[("WORKERS", "2"), FAST[0], FAST[1]]);
    let http = Http::new();
    let base = cluster.base();
    let m = metrics(&http, &base).await;
    let pids: Vec<(u64, u64)> = [1, 2]
        .iter()
        .map(|id| (*id, worker(&m, *id)["pid"].as_u64().unwrap_or(0)))
        .collect();

    let burner = {
        let (http, url) = (http.clone(), cluster.url("/burn?ms=4000"));
        tokio::spawn(async move { http.get(&url).await })
    };
    // Wait until the sampler has seen the burn start, then watch for two seconds.
    assert!(
        eventually_async(Duration::from_secs(3), || async {
            let m = metrics(&http, &base).await;
            m["workers"].as_array().is_some_and(|ws| {
                ws.iter()
                    .any(|w| w["metrics"]["cpuUsage"].as_f64().unwrap_or(0.0) > 30.0)
            })
        })
        .await,
        "no worker's CPU rose while /burn ran"
    );
    let began = Instant::now();
    let before: Vec<Duration> = pids.iter().map(|(_, pid)| cpu_time(*pid)).collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); pids.len()];
    while began.elapsed() < Duration::from_secs(2) {
        let m = metrics(&http, &base).await;
        for (i, (id, _)) in pids.iter().enumerate() {
            samples[i].push(
                worker(&m, *id)["metrics"]["cpuUsage"]
                    .as_f64()
                    .unwrap_or(-1.0),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = began.elapsed();
    let charged: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|((_, pid), b)| (cpu_time(*pid) - *b).as_secs_f64() * 100.0 / wall.as_secs_f64())
        .collect();
    let busy = if charged[0] >= charged[1] { 0 } else { 1 };
    let mut seen = samples[busy].clone();
    seen.sort_by(f64::total_cmp);
    let median = seen[seen.len() / 2];
    eprintln!(
        "worker {}: kernel charged {:.1}% of a core over {wall:?}; /metrics said {seen:?} (median {median})",
        pids[busy].0, charged[busy]
    );
    // The acceptance band: the figure must agree with the kernel's own accounting within 15 points;
    // and whenever the kernel says the worker really got at least 90% of a core, it must read 80–100.
    // On an idle machine that is the "80–100%"; with other builds on these 2 cores a spinning
    // thread may get less than a whole core, and then reporting less is the truth, not an error.
    assert!(
        (median - charged[busy]).abs() <= 15.0,
        "reported {median}% vs kernel {:.1}%",
        charged[busy]
    );
    assert!(
        median <= 110.0,
        "one spinning thread cannot use {median}% of a core"
    );
    if charged[busy] >= 90.0 {
        assert!(
            (80.0..=105.0).contains(&median),
            "a worker burning a whole core reads {median}%"
        );
    }
    // Only a sanity check that the burn ran at all: how much of a core it got is up to the machine.
    assert!(
        charged[busy] >= 10.0,
        "the burn barely ran ({:.1}%)",
        charged[busy]
    );
    let idle = 1 - busy;
    assert!(
        charged[idle] < 30.0,
        "the other worker should be idle, the kernel says {:.1}%",
        charged[idle]
    );
    let r = burner.await.expect("burn request");
    assert_eq!(r.status, 200);
}
