//! The `scripts/chaos` scenarios as integration tests, with a smaller load so CI keeps them true:
//! a rolling restart three times, TTIN then TTOU, a hung (SIGSTOPped) worker, a worker over
//! `MAX_MEMORY`, and SIGKILL every 300 ms in handoff mode. (SIGKILL every 300 ms in proxy mode,
//! a crash loop, a query of death and a SIGKILLed master are in `supervision.rs`.)
//!
//! Each test owns its cluster and runs under keep-alive load from a few client tasks. They take
//! turns (`SERIAL`): on two shared cores, five loaded clusters at once would blur the timing
//! bounds the tests check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use test_support::{ClusterProcess, Http, eventually, eventually_async, is_alive, send_many};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// One loaded cluster at a time (a tokio mutex: it does not poison when a test fails).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Client tasks each test's load runs.
const CONNECTIONS: usize = 8;

type Slots = Vec<(u64, String, Option<u64>)>;

/// What a [`Load`] saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    /// Every outcome but 2xx, by status code or `transport error`, with its count.
    failures: BTreeMap<String, u64>,
    /// The first few failures in full.
    samples: Vec<String>,
    /// The slowest request.
    worst: Duration,
    /// When each failure was seen.
    failed_at: Vec<Instant>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally")
            .field("ok", &self.ok)
            .field("failures", &self.failures)
            .field("worst", &self.worst)
            .field("samples", &self.samples)
            .finish()
    }
}

impl Tally {
    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// `CONNECTIONS` keep-alive GET loops on one URL until [`Load::finish`].
struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered 2xx so far, for [`Load::progress`].
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    /// Its own client: in handoff mode a pooled connection belongs to a worker, so `/health`
    /// must not share the load's pool.
    fn start(url: &str) -> Self {
        let http = Http::new();
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let tasks = (0..CONNECTIONS)
            .map(|_| {
                let (http, url, stop, ok) =
                    (http.clone(), url.to_string(), stop.clone(), ok.clone());
                tokio::spawn(async move {
                    let mut t = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let outcome = http.send("GET", &url, &[], "").await;
                        t.worst = t.worst.max(started.elapsed());
                        let (key, sample) = match outcome {
                            Ok(r) if (200..300).contains(&r.status) => {
                                t.ok += 1;
                                ok.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(r) => (r.status.to_string(), format!("{}: {}", r.status, r.body)),
                            Err(e) => ("transport error".to_string(), e),
                        };
                        *t.failures.entry(key).or_default() += 1;
                        t.failed_at.push(Instant::now());
                        if t.samples.len() < 3 {
                            t.samples.push(sample);
                        }
                    }
                    t
                })
            })
            .collect();
        Self { stop, ok, tasks }
    }

    /// Waits (up to 5 s) until `n` more requests have succeeded, so what follows happens under
    /// load; panics if the load is not flowing.
    async fn progress(&self, n: u64) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        let flowing = eventually_async(Duration::from_secs(5), || async {
            self.ok.load(Ordering::Relaxed) >= target
        })
        .await;
        assert!(
            flowing,
            "the load is not flowing: {} ok",
            self.ok.load(Ordering::Relaxed)
        );
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for task in self.tasks {
            let t = task.await.expect("a load task panicked");
            total.ok += t.ok;
            total.worst = total.worst.max(t.worst);
            total.failed_at.extend(t.failed_at);
            for (k, n) in t.failures {
                *total.failures.entry(k).or_default() += n;
            }
            total.samples.extend(t.samples);
        }
        total.samples.truncate(6);
        // Shown with --nocapture: what the load saw, for a test that passes but looks odd.
        eprintln!("load: {total:?}");
        total
    }
}

/// Polls `/health` every 10 ms until `pred` holds on the slots, up to `timeout`. Returns how long
/// it took (None if it never held), the last slots seen, and whether any slot was seen Failed.
async fn watch(
    http: &Http,
    base: &str,
    timeout: Duration,
    pred: impl Fn(&Slots) -> bool,
) -> (Option<Duration>, Slots, bool) {
    let started = Instant::now();
    let mut saw_failed = false;
    loop {
        let slots = http.slot_states(base).await;
        saw_failed |= slots.iter().any(|(_, state, _)| state == "failed");
        if pred(&slots) {
            return (Some(started.elapsed()), slots, saw_failed);
        }
        if started.elapsed() >= timeout {
            return (None, slots, saw_failed);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `n` slots, every one Ready, none with a pid in `old`.
fn all_ready_without(n: usize, old: &[u64]) -> impl Fn(&Slots) -> bool + '_ {
    move |slots| {
        slots.len() == n
            && slots
                .iter()
                .all(|(_, state, pid)| state == "ready" && pid.is_some_and(|p| !old.contains(&p)))
    }
}

fn pids(slots: &Slots) -> Vec<u64> {
    slots.iter().filter_map(|(_, _, pid)| *pid).collect()
}

fn start(env: &[(&str, &str)]) -> ClusterProcess {
    let mut all = vec![("RUST_LOG", "warn")];
    all.extend_from_slice(env);
    ClusterProcess::start(FIXTURE, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usr2_three_times_under_load_gives_every_slot_a_new_pid_each_time_and_fails_nothing() {
    let _turn = SERIAL.lock().await;
    let c = start(&[("WORKERS", "2")]);
    let (http, base) = (Http::new(), c.base());
    let load = Load::start(&c.url("/whoami"));
    for round in 1..=3 {
        let (ok, before, _) = watch(
            &http,
            &base,
            Duration::from_secs(5),
            all_ready_without(2, &[]),
        )
        .await;
        assert!(
            ok.is_some(),
            "USR2 #{round}: two Ready slots to start from: {before:?}"
        );
        let old = pids(&before);
        load.progress(20).await;
        c.signal(Signal::SIGUSR2);
        let (took, seen, saw_failed) = watch(
            &http,
            &base,
            Duration::from_secs(10),
            all_ready_without(2, &old),
        )
        .await;
        assert!(
            took.is_some(),
            "USR2 #{round}: every slot Ready with a new pid within 10 s (old {old:?}), saw {seen:?}"
        );
        assert!(
            !saw_failed,
            "USR2 #{round}: a slot was Failed during the roll: {seen:?}"
        );
    }
    load.progress(20).await;
    let t = load.finish().await;
    assert!(t.ok > 100, "traffic flowed: {t:?}");
    assert_eq!(t.failed(), 0, "no request failed across three rolls: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttin_then_ttou_under_load_goes_two_three_two_workers_and_fails_nothing() {
    let _turn = SERIAL.lock().await;
    let c = start(&[("WORKERS", "2")]);
    let (http, base) = (Http::new(), c.base());
    let load = Load::start(&c.url("/whoami"));
    let timeout = Duration::from_secs(10);
    let (ok, seen, _) = watch(&http, &base, timeout, all_ready_without(2, &[])).await;
    assert!(ok.is_some(), "two Ready workers to start with: {seen:?}");
    load.progress(20).await;
    c.signal(Signal::SIGTTIN);
    let (ok, seen, saw_failed) = watch(&http, &base, timeout, all_ready_without(3, &[])).await;
    assert!(ok.is_some(), "TTIN: three slots, all Ready: {seen:?}");
    assert!(!saw_failed, "TTIN: {seen:?}");
    load.progress(20).await;
    c.signal(Signal::SIGTTOU);
    let (ok, seen, saw_failed) = watch(&http, &base, timeout, all_ready_without(2, &[])).await;
    assert!(
        ok.is_some(),
        "TTOU: back to two slots, both Ready: {seen:?}"
    );
    assert!(!saw_failed, "TTOU: {seen:?}");
    assert!(
        eventually(timeout, || c.children().len() == 2),
        "the drained worker exited: children {:?}",
        c.children()
    );
    load.progress(20).await;
    let t = load.finish().await;
    assert!(t.ok > 100, "traffic flowed: {t:?}");
    assert_eq!(
        t.failed(),
        0,
        "no request failed across TTIN and TTOU: {t:?}"
    );
}

/// SIGCONTs and SIGKILLs a stopped worker on drop if it is still there, so a failing test leaves
/// no stopped process behind.
struct Stopped(u64);

impl Drop for Stopped {
    fn drop(&mut self) {
        if is_alive(self.0 as u32) {
            let pid = Pid::from_raw(self.0 as i32);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGCONT);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigstopped_worker_is_replaced_after_three_missed_heartbeats_and_no_request_hangs() {
    const INTERVAL_MS: u64 = 500;
    const UPSTREAM_TIMEOUT_MS: u64 = 1000;
    let _turn = SERIAL.lock().await;
    let c = start(&[
        ("WORKERS", "2"),
        ("HEALTH_CHECK_INTERVAL", "500"),
        ("UPSTREAM_TIMEOUT", "1000"),
        ("RESTART_DELAY", "50"),
    ]);
    let (http, base) = (Http::new(), c.base());
    let before = http.ready_pids(&base).await;
    assert_eq!(before.len(), 2, "{before:?}");
    let load = Load::start(&c.url("/whoami"));
    load.progress(20).await;
    let (slot, pid) = before[0];
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP the worker");
    let stopped = Stopped(pid);
    let hung_at = Instant::now();
    let replaced = |slots: &Slots| {
        all_ready_without(2, &[pid])(slots)
            && slots
                .iter()
                .any(|(id, _, p)| *id == slot && *p != Some(pid))
    };
    let (took, seen, saw_failed) = watch(&http, &base, Duration::from_secs(8), replaced).await;
    let took = took.map(|_| hung_at.elapsed());
    eprintln!("SIGSTOP → replaced: {took:?}");
    load.progress(20).await;
    let t = load.finish().await;
    // Checked before the guard's drop, which would kill it itself.
    let hung_left = is_alive(pid as u32);
    drop(stopped);
    // Three missed beats: killed between 2 and 3 intervals after the last beat, which was up to
    // one interval before the SIGSTOP; then a new process starts and turns Ready.
    assert!(
        took.is_some_and(|d| d >= Duration::from_millis(2 * INTERVAL_MS)
            && d <= Duration::from_millis(6 * INTERVAL_MS + 1000)),
        "slot {slot} (pid {pid}) replaced 1–4 s after its SIGSTOP: took {took:?}, saw {seen:?}"
    );
    assert!(!saw_failed, "no slot Failed: {seen:?}");
    assert!(!hung_left, "the master killed the hung process");
    assert!(
        c.stderr().contains("heartbeats"),
        "the master logged why: {}",
        c.stderr()
    );
    assert!(t.ok > 100, "traffic flowed: {t:?}");
    assert!(
        t.failures.keys().all(|k| k == "504"),
        "requests to the hung worker are retried (200) or answered 504, nothing else: {t:?}"
    );
    assert!(
        t.worst <= Duration::from_millis(UPSTREAM_TIMEOUT_MS + 1000),
        "no request took longer than UPSTREAM_TIMEOUT ({UPSTREAM_TIMEOUT_MS} ms) + 1 s: {t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_max_memory_under_load_is_replaced_gracefully_and_nothing_fails() {
    let _turn = SERIAL.lock().await;
    let c = start(&[
        ("WORKERS", "2"),
        ("MAX_MEMORY", "96M"),
        ("METRICS_INTERVAL", "50"),
    ]);
    let (http, base) = (Http::new(), c.base());
    let before = http.ready_pids(&base).await;
    assert_eq!(before.len(), 2, "{before:?}");
    let load = Load::start(&c.url("/whoami"));
    load.progress(20).await;
    let r = http.get(&c.url("/alloc?mb=128")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let slot: u64 = r.header("x-worker-id").parse().expect("X-Worker-Id");
    let old = before.iter().find(|(s, _)| *s == slot).expect("the slot").1;
    let other = before
        .iter()
        .find(|(s, _)| *s != slot)
        .expect("another slot");
    let replaced = |slots: &Slots| {
        all_ready_without(2, &[old])(slots)
            && slots
                .iter()
                .any(|(id, _, p)| *id == other.0 && *p == Some(other.1))
    };
    let (took, seen, saw_failed) = watch(&http, &base, Duration::from_secs(10), replaced).await;
    assert!(
        took.is_some(),
        "slot {slot} (pid {old}) replaced, slot {} untouched: saw {seen:?}",
        other.0
    );
    assert!(!saw_failed, "{seen:?}");
    assert!(
        eventually(Duration::from_secs(5), || !is_alive(old as u32)),
        "the old worker drained and exited"
    );
    load.progress(20).await;
    let t = load.finish().await;
    let h = http.health(&base).await;
    for s in h["workers"]["slots"].as_array().expect("slots") {
        assert_eq!(s["restarts"], 0, "a planned replacement is no restart: {h}");
    }
    assert!(t.ok > 100, "traffic flowed: {t:?}");
    assert_eq!(
        t.failed(),
        0,
        "no request failed across the replacement: {t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_workers_killed_every_300ms_recover_within_a_second_and_only_their_connections_fail()
 {
    const KILLS: usize = 6;
    let _turn = SERIAL.lock().await;
    let c = start(&[("WORKERS", "2"), ("DISPATCH", "handoff")]);
    let (http, base) = (Http::new(), c.base());
    let load = Load::start(&c.url("/whoami"));
    load.progress(20).await;
    let mut killed = Vec::new();
    let mut kills_at = Vec::new();
    let mut saw_failed = false;
    for round in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (back, seen, failed) = watch(
            &http,
            &base,
            Duration::from_secs(1),
            all_ready_without(2, &killed),
        )
        .await;
        saw_failed |= failed;
        assert!(
            back.is_some(),
            "round {round}: both slots Ready within 1 s of the last kill: {seen:?}"
        );
        let pid = pids(&seen)[round % 2];
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        killed.push(pid);
        kills_at.push(Instant::now());
    }
    let (back, seen, failed) = watch(
        &http,
        &base,
        Duration::from_secs(1),
        all_ready_without(2, &killed),
    )
    .await;
    assert!(
        back.is_some(),
        "every slot Ready within 1 s of the last kill: {seen:?}"
    );
    assert!(!saw_failed && !failed, "no slot Failed: {seen:?}");
    load.progress(20).await;
    let t = load.finish().await;
    assert!(t.ok > 100, "traffic flowed: {t:?}");
    // A killed worker takes the connections it owned with it: each loses at most the request in
    // flight. No request may fail any other way (no 502, no 503).
    assert!(
        t.failures.keys().all(|k| k == "transport error"),
        "only connections cut by a kill fail: {t:?}"
    );
    // ... and only right after a kill: none while both workers are up, none after recovery.
    let window = Duration::from_millis(300);
    let stray: Vec<Duration> = t
        .failed_at
        .iter()
        .filter(|f| !kills_at.iter().any(|k| **f >= *k && **f - *k <= window))
        .map(|f| f.duration_since(kills_at[0]))
        .collect();
    assert!(
        stray.is_empty(),
        "failures more than {window:?} after any kill (since the first kill): {stray:?}; {t:?}"
    );
    // The client's pool may hold a few more connections than it has tasks; twice is the bound.
    assert!(
        t.failed() <= (2 * KILLS * CONNECTIONS) as u64,
        "a few failures per kill, not a flood: {t:?}"
    );
    // And the cluster recovered: fresh requests all succeed.
    let bad = send_many(&Http::new(), &c.url("/whoami"), 50, 4).await;
    assert!(bad.is_empty(), "after the kills: {bad:?}");
    let h = http.health(&base).await;
    assert_eq!(h["workers"]["failed"], 0, "{h}");
}
