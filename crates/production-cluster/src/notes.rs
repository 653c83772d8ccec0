//! Where `/api/notes` keeps its notes, and the cache in front of them.
//!
//! - No `DATABASE_URL`: each worker keeps its notes in memory (`common::db::notes::MemoryNotes`),
//!   so `cargo run` works on a fresh machine; they are lost with the worker.
//! - `DATABASE_URL` (and `DATABASE_REPLICA_URLS`): PostgreSQL (`PgNotes`): inserts on the
//!   primary, reads on a replica, falling back to the primary. The notes outlive every process.
//! - `DATABASE_URL` and `SESSION_STORE=redis://…`: reads also go through the two-level cache
//!   (`common::cache`: this worker's memory, then that Redis, then the database). An insert
//!   invalidates the list everywhere. The cache needs both: in front of memory notes it would
//!   only add a hop, and without Redis there is nothing to share or to carry invalidations.
//!
//! The master creates the table at start ([`check`]: a wrong `DATABASE_URL` exits 2 there);
//! a worker opens its pools and cache on first use, inside its runtime (the router is built
//! before the runtime runs), and a database briefly away costs a 503 on the requests that need
//! it, not the worker.

use std::sync::Arc;
use std::time::Duration;

use common::cache::{CacheCounters, CacheSettings, TwoLevelCache};
use common::db::notes::{self, Note, NotesError, NotesRepo, PgNotes};
use common::db::{Db, DbSettings};
use tokio::sync::OnceCell;

/// The cache key of the newest notes; a note by id is `note:<id>`.
const LIST_KEY: &str = "list";
/// How long a worker's local copy may live if invalidations stop arriving.
const LOCAL_TTL: Duration = Duration::from_secs(5);
/// How long Redis keeps a copy.
const REDIS_TTL: Duration = Duration::from_secs(60);
/// Entries kept in each worker's memory.
const LOCAL_CAPACITY: u64 = 10_000;

/// How long the master's start-up check waits for the database.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The master's start-up check: connects to the primary and creates the notes table, so a
/// wrong `DATABASE_URL` stops the start (exit 2) instead of every request failing later, and
/// the workers find the table there.
pub fn check(database: &DbSettings) -> Result<(), String> {
    let named = |e: &dyn std::fmt::Display| {
        format!(
            "DATABASE_URL={}: {e}",
            crate::config::mask("DATABASE_URL", &database.primary)
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| named(&e))?;
    rt.block_on(async {
        match tokio::time::timeout(CHECK_TIMEOUT, notes::open(Some(database))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(named(&e)),
            Err(_) => Err(named(&format!("no answer within {CHECK_TIMEOUT:?}"))),
        }
    })
}

fn note_key(id: i64) -> String {
    format!("note:{id}")
}

/// The notes a worker serves: the repository, and the cache when there is one.
pub struct NotesStore {
    database: Option<DbSettings>,
    cache_url: Option<String>,
    ready: OnceCell<Opened>,
}

struct Opened {
    repo: Arc<dyn NotesRepo>,
    // One cache for both reads: the list, and a note by id as a list of zero or one.
    cache: Option<TwoLevelCache<Vec<Note>>>,
}

impl NotesStore {
    /// A store over `database` (memory when `None`), cached in the Redis at `redis` when both
    /// are given.
    pub fn new(database: Option<DbSettings>, redis: Option<String>) -> Self {
        let cache_url = redis.filter(|_| database.is_some());
        Self {
            database,
            cache_url,
            ready: OnceCell::new(),
        }
    }

    /// Whether reads go through the two-level cache.
    pub fn cached(&self) -> bool {
        self.cache_url.is_some()
    }

    async fn opened(&self) -> Result<&Opened, NotesError> {
        self.ready
            .get_or_try_init(|| async {
                // The master created the table before any worker started ([`check`]).
                let repo: Arc<dyn NotesRepo> = match &self.database {
                    None => Arc::new(notes::MemoryNotes::default()),
                    Some(db) => {
                        let db = Db::new(db).map_err(|e| NotesError::Unavailable(Box::new(e)))?;
                        Arc::new(PgNotes::existing(Arc::new(db)))
                    }
                };
                let cache = match &self.cache_url {
                    None => None,
                    Some(url) => {
                        let settings = CacheSettings {
                            name: "notes".into(),
                            local_capacity: LOCAL_CAPACITY,
                            local_ttl: LOCAL_TTL,
                            redis_ttl: REDIS_TTL,
                        };
                        match TwoLevelCache::open(url, settings).await {
                            Ok(c) => Some(c),
                            // The database is the source of truth: serve without the cache.
                            Err(e) => {
                                tracing::warn!(error = %e, "notes cache off");
                                None
                            }
                        }
                    }
                };
                Ok(Opened { repo, cache })
            })
            .await
    }

    /// `"memory"` or `"postgres"` once opened; the configured kind before.
    pub fn name(&self) -> &'static str {
        match self.ready.get() {
            Some(o) => o.repo.name(),
            None if self.database.is_some() => "postgres",
            None => "memory",
        }
    }

    /// Stores `body`; the cached list, and any cached "no such note" for the new id, are
    /// dropped everywhere.
    pub async fn insert(&self, body: &str) -> Result<Note, NotesError> {
        let o = self.opened().await?;
        let note = o.repo.insert(body).await?;
        if let Some(cache) = &o.cache {
            for key in [LIST_KEY.to_string(), note_key(note.id)] {
                if let Err(e) = cache.invalidate(&key).await {
                    // Other workers keep their copy until LOCAL_TTL: stale by at most that.
                    tracing::warn!(error = %e, key, "notes cache: invalidation not published");
                }
            }
        }
        Ok(note)
    }

    /// The newest notes, newest first.
    pub async fn list(&self) -> Result<Vec<Note>, NotesError> {
        let o = self.opened().await?;
        match &o.cache {
            None => o.repo.list(notes::MAX_LIST).await,
            Some(cache) => cache
                .get_with(LIST_KEY, || o.repo.list(notes::MAX_LIST))
                .await
                .map_err(|e| NotesError::Unavailable(Box::new(e))),
        }
    }

    /// One note. A note never changes once written, and an insert drops the cached absence of
    /// its id, so both answers may be cached.
    pub async fn get(&self, id: i64) -> Result<Option<Note>, NotesError> {
        let o = self.opened().await?;
        let Some(cache) = &o.cache else {
            return o.repo.get(id).await;
        };
        let load = || async { o.repo.get(id).await.map(|n| n.into_iter().collect()) };
        match cache.get_with(&note_key(id), load).await {
            Ok(mut found) => Ok(found.pop()),
            Err(e) => Err(NotesError::Unavailable(Box::new(e))),
        }
    }

    /// The cache's counters, when there is a cache and it is open.
    pub fn counters(&self) -> Option<CacheCounters> {
        let cache = self.ready.get()?.cache.as_ref()?;
        Some(cache.counters().clone())
    }
}
