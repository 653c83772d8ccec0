//! `common::cache::TwoLevelCache` against a real Redis: one loader for 100 concurrent misses, and
//! an invalidation published by one process reaching another process's local cache.
//!
//! The second process is this test binary run again (`cache_peer`, ignored unless started that
//! way) with its own cache; it answers `get KEY` lines on stdin with `value V` lines.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cache::{CacheSettings, TwoLevelCache};
use test_support::services::redis::{RedisProcess, cli};

fn settings() -> CacheSettings {
    CacheSettings {
        name: "notes".to_string(),
        local_capacity: 1000,
        local_ttl: Duration::from_secs(60),
        redis_ttl: Duration::from_secs(60),
    }
}

/// The source of truth for the cross-process test: a Redis key outside the cache's names.
fn truth(port: u16, key: &str) -> String {
    cli(port, &["GET", &format!("truth:{key}")])
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_run_one_load() {
    let redis = RedisProcess::primary();
    let cache: TwoLevelCache<String> = TwoLevelCache::open(&redis.url(), settings()).await.unwrap();
    let queries = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, queries) = (cache.clone(), queries.clone());
            tokio::spawn(async move {
                cache
                    .get_with("hot", || async move {
                        queries.fetch_add(1, Ordering::SeqCst);
                        // A query that takes a while: every other caller arrives meanwhile.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, std::io::Error>("from the database".to_string())
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "from the database");
    }
    assert_eq!(queries.load(Ordering::SeqCst), 1, "one load for 100 misses");
    let c = cache.counters();
    println!(
        "100 concurrent misses: {} load, then local hits {}, redis hits {}",
        c.loads.get(),
        c.local_hits.get(),
        c.redis_hits.get()
    );
    assert_eq!(c.loads.get(), 1);
    let again = cache
        .get_with("hot", || async {
            Err::<String, _>(std::io::Error::other("not called"))
        })
        .await
        .unwrap();
    assert_eq!(again, "from the database");

    // What a lesson's /metrics shows.
    let mut registry = prometheus_client::registry::Registry::default();
    cache.register(&mut registry, "notes");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "notes_cache_loads_total 1",
        "notes_cache_local_hits_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }

    // A second process's view: a fresh cache misses locally and finds the value in Redis.
    let other: TwoLevelCache<String> = TwoLevelCache::open(&redis.url(), settings()).await.unwrap();
    let v = other
        .get_with("hot", || async {
            Err::<String, _>(std::io::Error::other("not called"))
        })
        .await
        .unwrap();
    assert_eq!(v, "from the database");
    assert_eq!(
        (
            other.counters().redis_hits.get(),
            other.counters().loads.get()
        ),
        (1, 0)
    );
}

/// The other process, killed on drop.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    /// Its stdout lines, read by a thread so that every wait has a deadline.
    lines: std::sync::mpsc::Receiver<String>,
}

/// How long the peer may take to answer one line.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

impl Peer {
    fn start(redis_port: u16) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "cache_peer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CACHE_PEER_REDIS_PORT", redis_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the peer process");
        let stdin = child.stdin.take().unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = Self {
            child,
            stdin,
            lines,
        };
        // The test harness prints its own words on the same line first.
        peer.wait_for(|l| l.ends_with("peer-ready").then_some(()));
        peer
    }

    fn wait_for<T>(&mut self, pick: impl Fn(&str) -> Option<T>) -> T {
        loop {
            let line = self
                .lines
                .recv_timeout(PEER_TIMEOUT)
                .expect("the peer answers in time");
            if let Some(v) = pick(&line) {
                return v;
            }
        }
    }

    fn get(&mut self, key: &str) -> String {
        writeln!(self.stdin, "get {key}").unwrap();
        self.wait_for(|l| l.split_once("value=").map(|(_, v)| v.trim().to_string()))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_one_process_is_not_served_stale_by_another() {
    let redis = RedisProcess::primary();
    cli(redis.port, &["SET", "truth:note:1", "v1"]);
    let mut peer = Peer::start(redis.port);
    let writer: TwoLevelCache<String> =
        TwoLevelCache::open(&redis.url(), settings()).await.unwrap();

    assert_eq!(peer.get("note:1"), "v1");
    // The source changes behind the cache's back: the peer keeps serving its local copy.
    cli(redis.port, &["SET", "truth:note:1", "v2"]);
    assert_eq!(peer.get("note:1"), "v1", "served from the peer's memory");

    // Now the write path as it should be: write the source, then invalidate.
    cli(redis.port, &["SET", "truth:note:1", "v3"]);
    let published = Instant::now();
    writer.invalidate("note:1").await.unwrap();
    let mut asks = 0;
    let fresh = loop {
        asks += 1;
        if peer.get("note:1") == "v3" {
            break published.elapsed();
        }
        assert!(published.elapsed() < Duration::from_secs(5), "still stale");
    };
    println!("the peer served the new value {fresh:?} after the invalidation ({asks} asks)");
    assert!(fresh < Duration::from_secs(1), "{fresh:?}");
}

/// The peer process of the test above; does nothing unless started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started by a_write_in_one_process_is_not_served_stale_by_another"]
async fn cache_peer() {
    let Ok(port) = std::env::var("CACHE_PEER_REDIS_PORT") else {
        return;
    };
    let port: u16 = port.parse().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let cache: TwoLevelCache<String> = TwoLevelCache::open(&url, settings()).await.unwrap();
    println!("peer-ready");
    let mut lines = BufReader::new(std::io::stdin()).lines();
    while let Some(Ok(line)) = tokio::task::block_in_place(|| lines.next()) {
        let Some(key) = line.strip_prefix("get ") else {
            continue;
        };
        let key = key.to_string();
        let v = cache
            .get_with(&key, || {
                let key = key.clone();
                async move { Ok::<_, std::io::Error>(truth(port, &key)) }
            })
            .await
            .unwrap();
        println!("value={v}");
    }
}
