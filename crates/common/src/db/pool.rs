//! The pools and the routing: [`Db::write`] on the primary, [`Db::read`] on a replica or the primary.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::DbSettings;

/// How long a write keeps trying to reach a primary before it fails: long enough to ride out a
/// switchover (stop, promote, first connection to the new primary), short enough that a request
/// gets an answer while its client still waits.
pub const WRITE_RETRY_FOR: Duration = Duration::from_secs(10);
/// How long a replica that refused a connection is left alone before it is tried again.
pub const REPLICA_BACKOFF: Duration = Duration::from_secs(1);
/// Connections per pool: a worker rarely has more statements in flight than this.
const POOL_SIZE: usize = 8;
/// One connection attempt, one wait for a free connection, one liveness check.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause between two write attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Which server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The write side (the primary, wherever `target_session_attrs=read-write` found it).
    Primary,
    /// The replica at this index of `DATABASE_REPLICA_URLS`.
    Replica(usize),
}

/// Why a statement did not give an answer.
#[derive(Debug)]
pub enum DbError {
    /// No server could be reached (or none accepted writes) within the time allowed; nothing was
    /// sent, so nothing happened.
    Unavailable {
        /// What was being done.
        context: &'static str,
        /// The last failure seen.
        source: crate::error::BoxError,
    },
    /// The connection broke after the statement was sent: it may or may not have taken effect.
    Ambiguous {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// The server answered with an error (a constraint, bad SQL …).
    Query {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable { context, source } => {
                write!(f, "database unavailable: cannot {context}: {source}")
            }
            Self::Ambiguous { context, source } => write!(
                f,
                "database connection lost while trying to {context} (outcome unknown): {source}"
            ),
            Self::Query { context, source } => write!(f, "database: cannot {context}: {source}"),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable { source, .. } => Some(&**source),
            Self::Ambiguous { source, .. } | Self::Query { source, .. } => Some(source),
        }
    }
}

/// Whether `e` says the connection, not the statement, failed: closed, reset, or the server
/// going away (`57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect now).
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code),
        // No SQLSTATE: the error came from the socket, not from the server.
        None => e.as_db_error().is_none(),
    }
}

/// What the pools did, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DbCounters {
    /// Reads a replica answered.
    pub reads_replica: u64,
    /// Reads the primary answered (no replica configured, or none answered).
    pub reads_primary: u64,
    /// Times a replica was skipped because it did not answer.
    pub replica_failures: u64,
    /// Writes that succeeded.
    pub writes: u64,
    /// Write attempts repeated because the previous one provably did nothing.
    pub write_retries: u64,
}

#[derive(Default)]
struct Counters {
    reads_replica: AtomicU64,
    reads_primary: AtomicU64,
    replica_failures: AtomicU64,
    writes: AtomicU64,
    write_retries: AtomicU64,
}

struct Replica {
    pool: Pool,
    /// Milliseconds since `Db::epoch` before which this replica is not tried.
    skip_until: AtomicU64,
}

/// A write pool to the primary and a read pool per replica. Cheap to share behind an `Arc`;
/// connections are made on first use, so creating one needs no server.
pub struct Db {
    write: Pool,
    replicas: Vec<Replica>,
    next: AtomicUsize,
    epoch: Instant,
    counters: Counters,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("replicas", &self.replicas.len())
            .finish_non_exhaustive()
    }
}

/// The read or write side's pool for `url`.
fn pool(url: &str, writes: bool) -> Result<Pool, DbError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| DbError::Unavailable {
        context: "parse the database URL",
        source: Box::new(e),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if writes {
        config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A test query before a pooled connection is handed out: a connection to a server that
            // was stopped is found dead here, before any statement of ours is sent on it.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| DbError::Unavailable {
            context: "build a connection pool",
            source: Box::new(e),
        })
}

/// One statement (or several) run on a client; the future borrows it.
pub type Op<'c, T> = BoxFuture<'c, Result<T, tokio_postgres::Error>>;

impl Db {
    /// Pools for `settings`. Connects to nothing yet.
    pub fn new(settings: &DbSettings) -> Result<Self, DbError> {
        let replicas = settings
            .replicas
            .iter()
            .map(|url| {
                Ok(Replica {
                    pool: pool(url, false)?,
                    skip_until: AtomicU64::new(0),
                })
            })
            .collect::<Result<_, DbError>>()?;
        Ok(Self {
            write: pool(&settings.primary, true)?,
            replicas,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            counters: Counters::default(),
        })
    }

    /// Runs `op` on the primary. Retried (with a new connection) only while nothing can have been
    /// written: no connection could be had, or the server refused it as read-only.
    pub async fn write<T>(
        &self,
        context: &'static str,
        op: impl for<'c> Fn(&'c Client) -> Op<'c, T>,
    ) -> Result<T, DbError> {
        let deadline = Instant::now() + WRITE_RETRY_FOR;
        loop {
            let failure: crate::error::BoxError = match self.write.get().await {
                Err(e) => Box::new(e),
                Ok(client) => match op(&client).await {
                    Ok(v) => {
                        self.counters.writes.fetch_add(1, Relaxed);
                        return Ok(v);
                    }
                    Err(e) if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) => {
                        // A standby refused it whole (a pooled connection that outlived a
                        // demotion): never hand this connection out again.
                        drop(Object::take(client));
                        Box::new(e)
                    }
                    Err(e) if is_connection_error(&e) => {
                        return Err(DbError::Ambiguous { context, source: e });
                    }
                    Err(e) => return Err(DbError::Query { context, source: e }),
                },
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(DbError::Unavailable {
                    context,
                    source: failure,
                });
            }
            tracing::debug!(%failure, "database write not sent; retrying");
            self.counters.write_retries.fetch_add(1, Relaxed);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Runs `op` (which must only read) on a replica, trying each in turn from a rotating start,
    /// then on the primary. Returns who answered.
    pub async fn read<T>(
        &self,
        context: &'static str,
        op: impl for<'c> Fn(&'c Client) -> Op<'c, T>,
    ) -> Result<(T, Role), DbError> {
        let n = self.replicas.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Relaxed) % n
        };
        for i in (0..n).map(|k| (start + k) % n) {
            let replica = &self.replicas[i];
            let now = self.epoch.elapsed().as_millis() as u64;
            if replica.skip_until.load(Relaxed) > now {
                continue;
            }
            let why = match replica.pool.get().await {
                Err(e) => e.to_string(),
                Ok(client) => match op(&client).await {
                    Ok(v) => {
                        self.counters.reads_replica.fetch_add(1, Relaxed);
                        return Ok((v, Role::Replica(i)));
                    }
                    // A read is safe to repeat elsewhere, whatever it got to.
                    Err(e) if is_connection_error(&e) => {
                        drop(Object::take(client));
                        e.to_string()
                    }
                    Err(e) => return Err(DbError::Query { context, source: e }),
                },
            };
            tracing::warn!(replica = i, %why, "replica did not answer; skipping it for a while");
            self.counters.replica_failures.fetch_add(1, Relaxed);
            let until = now + REPLICA_BACKOFF.as_millis() as u64;
            replica.skip_until.store(until, Relaxed);
        }
        let client = self.write.get().await.map_err(|e| DbError::Unavailable {
            context,
            source: Box::new(e),
        })?;
        let v = op(&client)
            .await
            .map_err(|e| DbError::Query { context, source: e })?;
        self.counters.reads_primary.fetch_add(1, Relaxed);
        Ok((v, Role::Primary))
    }

    /// How many replicas are configured.
    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// The counters so far.
    pub fn counters(&self) -> DbCounters {
        let c = &self.counters;
        DbCounters {
            reads_replica: c.reads_replica.load(Relaxed),
            reads_primary: c.reads_primary.load(Relaxed),
            replica_failures: c.replica_failures.load(Relaxed),
            writes: c.writes.load(Relaxed),
            write_retries: c.write_retries.load(Relaxed),
        }
    }
}
