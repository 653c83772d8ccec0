//! Several instances of production-cluster behind the real nginx and HAProxy, run from the
//! committed `deploy/` files, sharing one real Redis for sessions; each instance trusts the
//! proxy's `X-Forwarded-For` (`TRUSTED_PROXIES`).
//!
//! One set of three instances per proxy, and through it, in turn: a session made through the proxy
//! survives SIGKILL of the whole instance that held it; an instance killed under load costs at
//! most the requests in flight on it, and only non-idempotent ones (the proxies resend a GET,
//! never a POST); a rolling restart of every instance, under load, loses no request. With
//! HAProxy the restart also proves the drain: SIGTERM turns an instance's `/health/ready` 503 for
//! `SHUTDOWN_DELAY`, and HAProxy's active check marks it DOWN while it still accepts.
//!
//! And the rate limit, which is per instance by design: through nginx in front of two instances
//! at `RATE_LIMIT=N/min`, a client gets N from each, 2 × N in all.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::BIN;
use test_support::jar::Jar;
use test_support::services::fleet::Fleet;
use test_support::services::proxy::{Proxy, nginx_fail_timeout};
use test_support::services::redis::RedisProcess;
use test_support::{BackgroundLoad, Http};

/// The path HAProxy's active check asks; 503 from SIGTERM on.
const READY: &str = "/health/ready";

/// How long an instance goes on serving after SIGTERM with `/health/ready` at 503: more than
/// HAProxy needs to see it (`inter 1s fall 2`: two failed checks, up to about 2 s).
const SHUTDOWN_DELAY_MS: u64 = 3000;

/// The backend's name in `deploy/haproxy/haproxy.cfg`.
const BACKEND: &str = "production_cluster";

/// Three instances of two workers, one Redis for their sessions.
fn fleet(redis: &RedisProcess, extra: &[(&str, &str)]) -> Fleet {
    let url = redis.url();
    let delay = SHUTDOWN_DELAY_MS.to_string();
    let mut env = vec![
        ("WORKERS", "2"),
        ("SESSION_STORE", url.as_str()),
        // The proxy is on loopback: its X-Forwarded-For is believed, nobody else's.
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("SHUTDOWN_DELAY", delay.as_str()),
        ("SHUTDOWN_TIMEOUT", "10000"),
        ("RESTART_DELAY", "50"),
        ("ACCESS_LOG", "off"),
    ];
    env.extend_from_slice(extra);
    Fleet::start(BIN, 3, &env)
}

/// Waits until HAProxy's check says `UP` for instance `i` (server `app{i+1}`).
fn wait_haproxy_up(proxy: &Proxy, i: usize) -> Duration {
    let started = Instant::now();
    let server = format!("{BACKEND}/app{}", i + 1);
    let up = test_support::eventually(Duration::from_secs(15), || {
        proxy.haproxy_status(&server) == "UP"
    });
    assert!(up, "{server}: {}", proxy.haproxy_status(&server));
    started.elapsed()
}

/// After instance `i` is back: until the proxy sends to it again. HAProxy says so on its admin
/// socket; open-source nginx says nothing, and a server it saw fail stays out for `fail_timeout`
/// even once it answers, so the only safe wait is `fail_timeout` itself.
async fn settle(proxy: &Proxy, i: usize) {
    if proxy.kind() == "haproxy" {
        wait_haproxy_up(proxy, i);
    } else {
        tokio::time::sleep(nginx_fail_timeout() + Duration::from_millis(500)).await;
    }
}

async fn session_survives_sigkill_of_its_instance(fleet: &mut Fleet, proxy: &Proxy) {
    let http = Http::new();
    let mut jar = Jar::new(&http);
    let base = proxy.base();
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = jar
        .send("POST", &format!("{base}/data"), &form, "data=survives")
        .await
        .expect("POST /data");
    assert_eq!(r.status, 303, "{}\n{}", r.body, proxy.log());
    let before = jar.get(&format!("{base}/session")).await.json();
    let owner = fleet.owner_of(before["workerPid"].as_u64().expect("workerPid"));

    fleet.kill(owner);

    let after = jar.get(&format!("{base}/session")).await.json();
    assert_eq!(after["session"]["id"], before["session"]["id"], "{after}");
    assert_eq!(after["session"]["data"]["data"], "survives", "{after}");
    let now = fleet.owner_of(after["workerPid"].as_u64().expect("workerPid"));
    assert_ne!(now, owner, "answered by another instance");
    println!(
        "{}: session of instance {owner} served by instance {now} after SIGKILL of {owner}",
        proxy.kind()
    );
    fleet.start_again(owner);
    settle(proxy, owner).await;
}

/// `loops` concurrent POST loops against `url` until `stop`: (answered 2xx/3xx, failed).
fn post_load(
    url: String,
    loops: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut tasks = Vec::new();
        for _ in 0..loops {
            let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let http = Http::new();
                let form = [("content-type", "application/x-www-form-urlencoded")];
                while !stop.load(Ordering::Relaxed) {
                    match http.send("POST", &url, &form, "data=x").await {
                        Ok(r) if r.status < 400 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
    })
}

async fn a_kill_costs_at_most_the_posts_in_flight(fleet: &mut Fleet, proxy: &Proxy) {
    const POST_LOOPS: usize = 4;
    let gets = BackgroundLoad::start(format!("{}/", proxy.base()), 6);
    let stop = Arc::new(AtomicBool::new(false));
    let posts = post_load(format!("{}/data", proxy.base()), POST_LOOPS, stop.clone());
    // Load before and after the kill; the proxy's retries happen within it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.kill(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (get_report, _) = gets.finish().await;
    let (post_ok, post_failed) = posts.await.unwrap();
    println!(
        "{}: instance killed under load: GET {} ok / {} failed, POST {post_ok} ok / {post_failed} failed",
        proxy.kind(),
        get_report.ok,
        get_report.failed
    );
    assert_eq!(
        get_report.failed, 0,
        "a GET is resent: {:?}",
        get_report.failures
    );
    // At most one POST per loop can have been on the killed instance at that instant.
    assert!(
        post_failed <= POST_LOOPS as u64,
        "{post_failed} POSTs lost, more than were in flight\n{}",
        proxy.log()
    );
    assert!(post_ok > 10 && get_report.ok > 10, "the load ran");
    fleet.start_again(1);
    settle(proxy, 1).await;
}

/// SIGTERM instance `i`; with HAProxy, proves it left the rotation before it stopped accepting:
/// the check marks it DOWN (its `/health/ready` is 503) while the process still runs. Returns
/// (SIGTERM → DOWN, SIGTERM → exit); DOWN is zero with nginx, which cannot say.
fn drain_and_stop(fleet: &mut Fleet, proxy: &Proxy, i: usize) -> (Duration, Duration) {
    let mut old = fleet.take(i);
    let sent = Instant::now();
    old.signal(Signal::SIGTERM);
    let mut down = Duration::ZERO;
    if proxy.kind() == "haproxy" {
        let server = format!("{BACKEND}/app{}", i + 1);
        let deadline = sent + Duration::from_millis(SHUTDOWN_DELAY_MS);
        loop {
            assert!(
                old.wait_exit(Duration::ZERO).is_none(),
                "instance {i} stopped before HAProxy marked {server} down"
            );
            if proxy.haproxy_status(&server) == "DOWN" {
                down = sent.elapsed();
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{server} still {} after SHUTDOWN_DELAY",
                proxy.haproxy_status(&server)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = old
        .wait_exit(Duration::from_secs(20))
        .expect("drained and exited");
    assert!(status.success(), "instance {i} exited with {status}");
    (down, sent.elapsed())
}

async fn rolling_restart_loses_nothing(fleet: &mut Fleet, proxy: &Proxy) {
    let load = BackgroundLoad::start(format!("{}/", proxy.base()), 8);
    let started = Instant::now();
    for i in 0..fleet.ports.len() {
        let (down, exited) = drain_and_stop(fleet, proxy, i);
        if proxy.kind() == "haproxy" {
            println!(
                "haproxy: instance {i} marked DOWN {} ms after SIGTERM, exited after {} ms",
                down.as_millis(),
                exited.as_millis()
            );
        }
        fleet.start_again(i);
        // The new instance is back in the proxy's rotation before the next one goes.
        settle(proxy, i).await;
    }
    let (report, worst) = load.finish().await;
    println!(
        "{}: rolling restart of 3 instances in {:.1} s: {} ok, {} failed, slowest {} ms",
        proxy.kind(),
        started.elapsed().as_secs_f64(),
        report.ok,
        report.failed,
        worst.as_millis()
    );
    assert_eq!(report.failed, 0, "{:?}\n{}", report.failures, proxy.log());
    assert!(report.ok > 100, "the load ran: {}", report.ok);
}

/// Which instance answered a fresh `GET /session` through `proxy`.
async fn answered_by(fleet: &Fleet, http: &Http, proxy: &Proxy) -> usize {
    let j = http.get(&format!("{}/session", proxy.base())).await.json();
    fleet.owner_of(j["workerPid"].as_u64().expect("workerPid"))
}

/// A planned drain said on HAProxy's admin socket: no new request reaches the instance.
async fn haproxy_sends_nothing_new_to_a_drained_server(fleet: &Fleet, proxy: &Proxy) {
    let http = Http::new();
    let mut seen = [0u32; 3];
    for _ in 0..30 {
        seen[answered_by(fleet, &http, proxy).await] += 1;
    }
    assert!(seen.iter().all(|n| *n > 0), "all instances serve: {seen:?}");

    let said = proxy.haproxy_admin(&format!("set server {BACKEND}/app1 state drain"));
    assert!(said.trim().is_empty(), "{said}");
    let mut after = [0u32; 3];
    for _ in 0..30 {
        after[answered_by(fleet, &http, proxy).await] += 1;
    }
    println!("haproxy: 30 requests before the drain {seen:?}, while app1 drains {after:?}");
    assert_eq!(
        after[0], 0,
        "a drained server gets no new requests: {after:?}"
    );

    proxy.haproxy_admin(&format!("set server {BACKEND}/app1 state ready"));
    let mut back = false;
    for _ in 0..50 {
        if answered_by(fleet, &http, proxy).await == 0 {
            back = true;
            break;
        }
    }
    assert!(back, "app1 takes requests again once ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_of_three_instances_loses_only_posts_in_flight() {
    let redis = RedisProcess::primary();
    let mut fleet = fleet(&redis, &[]);
    let proxy = Proxy::nginx(&fleet.ports);
    session_survives_sigkill_of_its_instance(&mut fleet, &proxy).await;
    a_kill_costs_at_most_the_posts_in_flight(&mut fleet, &proxy).await;
    rolling_restart_loses_nothing(&mut fleet, &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_of_three_instances_drains_before_a_stop() {
    let redis = RedisProcess::primary();
    let mut fleet = fleet(&redis, &[]);
    let proxy = Proxy::haproxy(&fleet.ports, READY);
    for i in 0..fleet.ports.len() {
        wait_haproxy_up(&proxy, i);
    }
    haproxy_sends_nothing_new_to_a_drained_server(&fleet, &proxy).await;
    session_survives_sigkill_of_its_instance(&mut fleet, &proxy).await;
    a_kill_costs_at_most_the_posts_in_flight(&mut fleet, &proxy).await;
    rolling_restart_loses_nothing(&mut fleet, &proxy).await;
}

/// The per-instance limit in the rate-limit test, per minute.
const LIMIT: u32 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_two_instances_at_n_per_minute_give_a_client_n_each_and_2n_in_all() {
    let limit = format!("{LIMIT}/min");
    let fleet = Fleet::start(
        BIN,
        2,
        &[
            ("WORKERS", "1"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("RATE_LIMIT", &limit),
            ("ACCESS_LOG", "off"),
        ],
    );
    let proxy = Proxy::nginx(&fleet.ports);
    let http = Http::new();
    let started = Instant::now();
    let (mut allowed, mut limited) = ([0u32; 2], 0u32);
    // One client, twice as many requests as the two instances allow together.
    for i in 0..4 * LIMIT {
        let r = http.get(&format!("{}/", proxy.base())).await;
        match r.status {
            200 => {
                let pid = r.json()["workerPid"].as_u64().expect("workerPid");
                allowed[fleet.owner_of(pid)] += 1;
                assert_eq!(r.header("ratelimit-limit"), LIMIT.to_string());
            }
            429 => limited += 1,
            other => panic!("request {i}: {other}: {}\n{}", r.body, proxy.log()),
        }
    }
    let elapsed = started.elapsed();
    println!(
        "nginx, 2 instances at {LIMIT}/min, {} requests from one client in {:.1} s: \
         allowed {:?} ({} in all), {limited} answered 429",
        4 * LIMIT,
        elapsed.as_secs_f64(),
        allowed,
        allowed[0] + allowed[1]
    );
    // GCRA gives one request back every 60 s / LIMIT on each instance: a slow run may earn some.
    let earned = (elapsed.as_millis() / (60_000 / LIMIT as u128)) as u32;
    for (i, n) in allowed.iter().enumerate() {
        assert!(
            (LIMIT..=LIMIT + earned).contains(n),
            "instance {i} allowed {n} in {elapsed:?} (limit {LIMIT}, {earned} earned at most)"
        );
    }
    assert_eq!(allowed[0] + allowed[1] + limited, 4 * LIMIT);
}
