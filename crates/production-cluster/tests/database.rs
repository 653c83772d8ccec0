//! Checklist: a replicated database behind `/api/notes`. With `DATABASE_URL` and
//! `DATABASE_REPLICA_URLS` pointing at a real PostgreSQL primary and its streaming replica
//! (started by the test), a note posted through the cluster lands on the primary, is read back
//! from the replica (still answering with the primary stopped), and outlives the cluster.

mod support;

use std::time::{Duration, Instant};

use support::{BIN, send};
use test_support::services::free_port;
use test_support::services::pg::PgServer;
use test_support::{ClusterProcess, Http, assert_bad_settings_exit_2};

/// How many notes on the server at `url` have `body`.
async fn count_on(url: &str, body: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect directly");
    tokio::spawn(conn);
    client
        .query_one("SELECT count(*) FROM notes WHERE body = $1", &[&body])
        .await
        .map(|row| row.get(0))
        .unwrap_or(0)
}

/// Whether `GET /api/notes` on `cluster` lists `text`, from a PostgreSQL store.
async fn listed(http: &Http, cluster: &ClusterProcess, text: &str) -> bool {
    let r = http.get(&cluster.url("/api/notes")).await;
    if r.status != 200 {
        return false;
    }
    let list = r.json();
    assert_eq!(list["store"], "postgres", "{list}");
    list["notes"]
        .as_array()
        .is_some_and(|n| n.iter().any(|n| n["text"] == text))
}

/// Polls `GET /api/notes` until it lists `text` or `timeout` passes.
async fn until_listed(
    http: &Http,
    cluster: &ClusterProcess,
    text: &str,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if listed(http, cluster, text).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn start(primary: &str, replica: &str) -> ClusterProcess {
    ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "2"),
            ("DATABASE_URL", primary),
            ("DATABASE_REPLICA_URLS", replica),
            ("ACCESS_LOG", "off"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_are_written_on_the_primary_read_from_the_replica_and_outlive_the_cluster() {
    let mut primary = PgServer::primary();
    let replica = primary.replica();
    let (primary_url, replica_url) = (primary.url(), replica.url());
    let http = Http::new();
    let json = [("content-type", "application/json")];

    let cluster = start(&primary_url, &replica_url);
    let r = send(
        &http,
        "POST",
        &cluster.url("/api/notes"),
        &json,
        r#"{"text": "kept in postgres"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let note = r.json();
    assert_eq!(note["text"], "kept in postgres");
    assert_eq!(note["store"], "postgres");
    let id = note["id"].as_i64().expect("an id");
    assert_eq!(
        count_on(&primary_url, "kept in postgres").await,
        1,
        "the write is on the primary"
    );
    assert!(
        until_listed(&http, &cluster, "kept in postgres", Duration::from_secs(10)).await,
        "GET lists the note once replicated"
    );

    // With the primary stopped, only the replica can answer the reads.
    primary.stop();
    for _ in 0..4 {
        assert!(
            listed(&http, &cluster, "kept in postgres").await,
            "the replica serves the list while the primary is down"
        );
        let r = http.get(&cluster.url(&format!("/api/notes/{id}"))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["text"], "kept in postgres");
    }
    assert_eq!(count_on(&replica_url, "kept in postgres").await, 1);
    primary.start();
    drop(cluster);

    // A new cluster, the same database: the note is still there, and writes work again.
    let cluster = start(&primary_url, &replica_url);
    assert!(
        until_listed(&http, &cluster, "kept in postgres", Duration::from_secs(10)).await,
        "the note survived the cluster's restart"
    );
    let r = send(
        &http,
        "POST",
        &cluster.url("/api/notes"),
        &json,
        r#"{"text": "after the restart"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.json()["id"].as_i64().expect("an id") > id, "{}", r.body);
    assert_eq!(count_on(&primary_url, "after the restart").await, 1);
}

#[test]
fn a_bad_or_unreachable_database_url_exits_2_naming_it() {
    let nobody = format!("postgresql://postgres@127.0.0.1:{}/postgres", free_port());
    assert_bad_settings_exit_2(
        BIN,
        &[("WORKERS", "1")],
        &[
            ("DATABASE_URL", "mysql://app@127.0.0.1/app"),
            ("DATABASE_URL", "postgresql://app@127.0.0.1:notaport/app"),
            ("DATABASE_URL", &nobody),
        ],
    );
}

#[test]
fn print_config_masks_the_database_password() {
    let out = std::process::Command::new(BIN)
        .arg("--print-config")
        .env("DATABASE_URL", "postgresql://app:s3cret@127.0.0.1:5432/app")
        .env(
            "DATABASE_REPLICA_URLS",
            "postgresql://app:s3cret2@127.0.0.1:5433/app",
        )
        .output()
        .expect("run --print-config");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        text.contains(r#"DATABASE_URL = "postgresql://app:****@127.0.0.1:5432/app""#),
        "{text}"
    );
    assert!(text.contains("DATABASE_REPLICA_URLS"), "{text}");
}

/// The value of the sample `name` on a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_redis_session_store_reads_go_through_the_cache_and_its_counters_are_scraped() {
    let primary = PgServer::primary();
    let redis = test_support::redis::RedisServer::start();
    let http = Http::new();
    let json = [("content-type", "application/json")];
    let cluster = ClusterProcess::start(
        BIN,
        &[
            ("WORKERS", "1"),
            ("DATABASE_URL", &primary.url()),
            ("SESSION_STORE", &redis.url()),
            ("ACCESS_LOG", "off"),
        ],
    );
    let r = send(
        &http,
        "POST",
        &cluster.url("/api/notes"),
        &json,
        r#"{"text": "one"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    for _ in 0..5 {
        assert!(listed(&http, &cluster, "one").await);
    }
    let page = http.get(&cluster.url("/metrics/prometheus")).await.body;
    let loads = sample(&page, "production_cluster_notes_cache_loads_total");
    let local = sample(&page, "production_cluster_notes_cache_local_hits_total");
    assert_eq!(loads, Some(1), "one database query for five reads:\n{page}");
    assert_eq!(local, Some(4), "the other four from memory:\n{page}");

    // A write invalidates the list: the next read queries the database again and sees it.
    let r = send(
        &http,
        "POST",
        &cluster.url("/api/notes"),
        &json,
        r#"{"text": "two"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(listed(&http, &cluster, "two").await, "not served stale");
    let page = http.get(&cluster.url("/metrics/prometheus")).await.body;
    assert_eq!(
        sample(&page, "production_cluster_notes_cache_loads_total"),
        Some(2),
        "{page}"
    );
}
