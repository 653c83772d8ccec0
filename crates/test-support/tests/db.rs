//! `common::db` against real PostgreSQL: a primary and a streaming replica started by the test
//! (two `initdb` clusters, `pg_basebackup -R`), on free loopback ports.
//!
//! Proves the routing rules: writes land on the primary and reads on the replica; with the
//! replica stopped reads are served by the primary; with the primary stopped and the replica
//! promoted, writes resume on the new primary through the same pools.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db::notes::{NotesRepo, PgNotes};
use common::db::{Db, DbSettings, Role};
use futures_util::FutureExt;
use test_support::services::pg::PgServer;

/// The port of the server that ran a statement, and whether it is a standby.
async fn who_reads(db: &Db) -> ((i32, bool), Role) {
    db.read("ask who answers", |c| {
        async move {
            let row = c
                .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
                .await?;
            Ok((row.get::<_, i32>(0), row.get::<_, bool>(1)))
        }
        .boxed()
    })
    .await
    .expect("a read is answered")
}

async fn direct(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect directly");
    tokio::spawn(conn);
    client
}

/// How many notes on the server at `url` have `body`; `None` while it has no notes table yet
/// (a replica that has not replayed the `CREATE TABLE`).
async fn try_count_on(url: &str, body: &str) -> Option<i64> {
    direct(url)
        .await
        .query_one("SELECT count(*) FROM notes WHERE body = $1", &[&body])
        .await
        .ok()
        .map(|row| row.get(0))
}

async fn count_on(url: &str, body: &str) -> i64 {
    try_count_on(url, body).await.expect("a notes table")
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
async fn until<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut cond: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_to_the_primary_reads_to_the_replica_then_to_the_primary_when_it_stops() {
    let primary = PgServer::primary();
    let mut replica = primary.replica();
    let db = Arc::new(
        Db::new(&DbSettings {
            primary: primary.url(),
            replicas: vec![replica.url()],
        })
        .unwrap(),
    );
    let notes = PgNotes::start(db.clone()).await.expect("schema created");
    let chosen = common::db::notes::open(Some(&DbSettings {
        primary: primary.url(),
        replicas: vec![],
    }))
    .await
    .unwrap();
    assert_eq!(chosen.name(), "postgres");
    let embedded = common::db::notes::open(None).await.unwrap();
    assert_eq!(embedded.name(), "memory");

    let note = notes.insert("written through the pool").await.unwrap();
    assert_eq!(
        count_on(&primary.url(), "written through the pool").await,
        1,
        "the insert is on the primary"
    );
    let ((port, standby), role) = who_reads(&db).await;
    assert_eq!(
        (port, standby, role),
        (replica.port as i32, true, Role::Replica(0))
    );

    // Replication is asynchronous: the replica has the note a moment later.
    let start = Instant::now();
    let replicated = until(Duration::from_secs(10), || async {
        notes.get(note.id).await.is_ok_and(|n| n.is_some())
    })
    .await;
    assert!(replicated, "the note never reached the replica");
    println!("replica caught up after {:?}", start.elapsed());
    let before = db.counters();
    let listed = notes.list(10).await.unwrap();
    assert_eq!(listed[0], note);
    assert_eq!(db.counters().reads_replica, before.reads_replica + 1);

    replica.stop();
    let ((port, standby), role) = who_reads(&db).await;
    assert_eq!(
        (port, standby, role),
        (primary.port as i32, false, Role::Primary)
    );
    assert_eq!(notes.get(note.id).await.unwrap().as_ref(), Some(&note));
    let after = db.counters();
    assert!(after.replica_failures >= 1, "{after:?}");
    assert!(after.reads_primary >= 2, "{after:?}");
    println!("after the replica stopped: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_on_the_promoted_replica_without_new_pools() {
    let mut primary = PgServer::primary();
    let replica = primary.replica();
    // Both hosts in one URL: the write pool keeps whichever accepts writes.
    let both = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
        primary.port, replica.port
    );
    let db = Arc::new(
        Db::new(&DbSettings {
            primary: both,
            replicas: vec![],
        })
        .unwrap(),
    );
    let notes = PgNotes::start(db.clone()).await.expect("schema created");
    notes.insert("before the switchover").await.unwrap();
    assert_eq!(count_on(&primary.url(), "before the switchover").await, 1);
    let on_replica = until(Duration::from_secs(10), || async {
        try_count_on(&replica.url(), "before the switchover").await == Some(1)
    })
    .await;
    assert!(on_replica, "never replicated");

    primary.stop();
    // A write while there is no primary: not sent anywhere, retried.
    let stopped = Instant::now();
    let writer = {
        let notes = notes.clone();
        tokio::spawn(async move { notes.insert("during the switchover").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "a write succeeded with no primary");
    let promoting = Instant::now();
    replica.promote();
    let written = writer
        .await
        .unwrap()
        .expect("the write went through after the promotion");
    println!(
        "write done {:?} after the primary stopped, {:?} after promotion began",
        stopped.elapsed(),
        promoting.elapsed()
    );
    assert_eq!(count_on(&replica.url(), "during the switchover").await, 1);
    assert_eq!(count_on(&replica.url(), "before the switchover").await, 1);

    let next = notes.insert("after the switchover").await.unwrap();
    assert!(next.id > written.id);
    let ((port, standby), role) = who_reads(&db).await;
    assert_eq!(
        (port, standby, role),
        (replica.port as i32, false, Role::Primary)
    );
    let counters = db.counters();
    assert!(counters.write_retries >= 1, "{counters:?}");
    println!("pools after the switchover: {counters:?}");
}
