//! Several instances of the lesson behind the real nginx and HAProxy, run from the committed
//! `deploy/` files, sharing one real Redis for sessions.
//!
//! Proves: a session made through the proxy survives SIGKILL of the whole instance that held it;
//! a rolling restart of every instance in turn, under load, loses no request; an instance killed
//! under load costs at most the requests in flight on it, and only non-idempotent ones (the
//! proxies resend a GET, never a POST).
//!
//! The lesson is a parameter ([`LESSON`]): these tests move to production-cluster by changing it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{BIN, Jar};
use test_support::services::proxy::Proxy;
use test_support::services::redis::RedisProcess;
use test_support::{BackgroundLoad, ClusterProcess, Http};

/// The binary behind the proxies, and the path that answers 200 when an instance takes traffic.
struct Lesson {
    bin: &'static str,
    ready: &'static str,
}

/// sticky-sessions has only `/health`; production-cluster will use `/health/ready`.
const LESSON: Lesson = Lesson {
    bin: BIN,
    ready: "/health",
};

/// Instances on fixed ports (the proxy's configuration names them), one Redis for all.
struct Fleet {
    redis: RedisProcess,
    ports: Vec<u16>,
    instances: Vec<Option<ClusterProcess>>,
}

impl Fleet {
    fn start(n: usize) -> Self {
        let redis = RedisProcess::primary();
        let mut fleet = Self {
            redis,
            ports: Vec::new(),
            instances: Vec::new(),
        };
        for _ in 0..n {
            let instance = fleet.instance("0");
            fleet.ports.push(instance.addr.port());
            fleet.instances.push(Some(instance));
        }
        fleet
    }

    fn instance(&self, port: &str) -> ClusterProcess {
        ClusterProcess::start(
            LESSON.bin,
            &[
                ("PORT", port),
                ("WORKERS", "2"),
                ("SESSION_STORE", &self.redis.url()),
                // The proxy is on loopback: its X-Forwarded-For is believed, nobody else's.
                ("TRUSTED_PROXIES", "127.0.0.1"),
                ("RESTART_DELAY", "50"),
                ("SHUTDOWN_TIMEOUT", "5000"),
            ],
        )
    }

    /// Which instance runs the worker `pid`.
    fn owner_of(&self, pid: u64) -> usize {
        self.instances
            .iter()
            .position(|i| {
                i.as_ref()
                    .is_some_and(|i| i.children().contains(&(pid as u32)))
            })
            .expect("a worker of one of the instances")
    }

    /// SIGKILL the master of instance `i`; its workers die with it.
    fn kill(&mut self, i: usize) {
        let mut instance = self.instances[i].take().expect("running");
        let workers = instance.children();
        instance.signal(Signal::SIGKILL);
        assert!(instance.wait_exit(Duration::from_secs(10)).is_some());
        let gone = test_support::eventually(Duration::from_secs(10), || {
            workers.iter().all(|w| !test_support::is_alive(*w))
        });
        assert!(gone, "the killed instance's workers outlived it");
    }

    /// SIGTERM instance `i`, wait for its drain to end, start a new one on the same port.
    fn restart(&mut self, i: usize) {
        let mut old = self.instances[i].take().expect("running");
        old.signal(Signal::SIGTERM);
        let status = old
            .wait_exit(Duration::from_secs(20))
            .expect("drained and exited");
        assert!(status.success(), "instance {i} exited with {status}");
        self.instances[i] = Some(self.instance(&self.ports[i].to_string()));
    }
}

fn nginx(ports: &[u16]) -> Proxy {
    Proxy::nginx(ports)
}

fn haproxy(ports: &[u16]) -> Proxy {
    Proxy::haproxy(ports, LESSON.ready)
}

/// How long after an instance is back before the next may go down. nginx has no active checks:
/// a server it saw fail stays out for `fail_timeout` (read from the committed file), even once it
/// answers again. HAProxy's checks (every second, `rise 2`) bring it back within about 2 s.
fn settle_time(proxy: &Proxy) -> Duration {
    if proxy.kind() == "nginx" {
        let conf = std::fs::read_to_string(
            test_support::services::proxy::deploy_dir().join("nginx/nginx.conf"),
        )
        .unwrap();
        let secs: u64 = conf
            .split("fail_timeout=")
            .nth(1)
            .and_then(|r| r.split('s').next())
            .and_then(|n| n.parse().ok())
            .expect("fail_timeout=<N>s in deploy/nginx/nginx.conf");
        Duration::from_secs(secs) + Duration::from_millis(500)
    } else {
        Duration::from_millis(2500)
    }
}

async fn session_survives_sigkill_of_its_instance(proxy: fn(&[u16]) -> Proxy) {
    let mut fleet = Fleet::start(3);
    let proxy = proxy(&fleet.ports);
    let http = Http::new();
    let mut jar = Jar::new(&http);
    let base = proxy.base();
    jar.get(&format!("{base}/")).await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = jar
        .send("POST", &format!("{base}/data"), &form, "data=survives")
        .await
        .expect("POST /data");
    assert_eq!(r.status, 303, "{}\n{}", r.body, proxy.log());
    let before = jar.get(&format!("{base}/session")).await.json();
    let pid = before["workerPid"].as_u64().expect("workerPid");
    let owner = fleet.owner_of(pid);

    fleet.kill(owner);

    let after = jar.get(&format!("{base}/session")).await.json();
    assert_eq!(after["session"]["id"], before["session"]["id"], "{after}");
    assert_eq!(after["session"]["data"]["data"], "survives", "{after}");
    let now = fleet.owner_of(after["workerPid"].as_u64().expect("workerPid"));
    assert_ne!(now, owner, "answered by another instance");
    println!("session of instance {owner} served by instance {now} after the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_a_session_survives_sigkill_of_the_instance_that_held_it() {
    session_survives_sigkill_of_its_instance(nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_a_session_survives_sigkill_of_the_instance_that_held_it() {
    session_survives_sigkill_of_its_instance(haproxy).await;
}

async fn rolling_restart_loses_nothing(proxy: fn(&[u16]) -> Proxy) {
    let mut fleet = Fleet::start(3);
    let proxy = proxy(&fleet.ports);
    let load = BackgroundLoad::start(format!("{}/", proxy.base()), 8);
    let started = Instant::now();
    let settle = settle_time(&proxy);
    for i in 0..fleet.ports.len() {
        fleet.restart(i);
        // The new instance is back in the proxy's rotation before the next one goes.
        tokio::time::sleep(settle).await;
    }
    let (report, worst) = load.finish().await;
    println!(
        "rolling restart of 3 instances in {:?}: {} ok, {} failed, slowest {worst:?}",
        started.elapsed(),
        report.ok,
        report.failed
    );
    assert_eq!(report.failed, 0, "{:?}\n{}", report.failures, proxy.log());
    assert!(report.ok > 100, "the load ran: {}", report.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_a_rolling_restart_under_load_loses_no_request() {
    rolling_restart_loses_nothing(nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_a_rolling_restart_under_load_loses_no_request() {
    rolling_restart_loses_nothing(haproxy).await;
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

async fn a_kill_costs_at_most_the_posts_in_flight(proxy: fn(&[u16]) -> Proxy) {
    const POST_LOOPS: usize = 4;
    let mut fleet = Fleet::start(3);
    let proxy = proxy(&fleet.ports);
    let gets = BackgroundLoad::start(format!("{}/", proxy.base()), 6);
    let stop = Arc::new(AtomicBool::new(false));
    let posts = post_load(format!("{}/data", proxy.base()), POST_LOOPS, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.kill(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (get_report, _) = gets.finish().await;
    let (post_ok, post_failed) = posts.await.unwrap();
    println!(
        "instance killed under load: GET {} ok / {} failed, POST {post_ok} ok / {post_failed} failed",
        get_report.ok, get_report.failed
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_an_instance_killed_under_load_costs_only_posts_in_flight() {
    a_kill_costs_at_most_the_posts_in_flight(nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_an_instance_killed_under_load_costs_only_posts_in_flight() {
    a_kill_costs_at_most_the_posts_in_flight(haproxy).await;
}

/// Which instance answered a fresh `GET /session` through `proxy`.
async fn answered_by(fleet: &Fleet, http: &Http, proxy: &Proxy) -> usize {
    let j = http.get(&format!("{}/session", proxy.base())).await.json();
    fleet.owner_of(j["workerPid"].as_u64().expect("workerPid"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_sends_nothing_new_to_a_drained_instance() {
    let fleet = Fleet::start(2);
    let proxy = haproxy(&fleet.ports);
    let http = Http::new();
    let mut seen = [0u32; 2];
    for _ in 0..20 {
        seen[answered_by(&fleet, &http, &proxy).await] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both instances serve: {seen:?}");

    let said = proxy.haproxy_admin("set server production_cluster/app1 state drain");
    assert!(said.trim().is_empty(), "{said}");
    let mut after = [0u32; 2];
    for _ in 0..20 {
        after[answered_by(&fleet, &http, &proxy).await] += 1;
    }
    println!("before the drain {seen:?}, while app1 drains {after:?}");
    assert_eq!(
        after[0], 0,
        "a drained server gets no new requests: {after:?}"
    );

    proxy.haproxy_admin("set server production_cluster/app1 state ready");
    let mut back = false;
    for _ in 0..50 {
        if answered_by(&fleet, &http, &proxy).await == 0 {
            back = true;
            break;
        }
    }
    assert!(back, "app1 takes requests again once ready");
}
