//! A small persistent resource for a lesson's `/api/notes`: insert, list, get.
//!
//! [`NotesRepo`] is what the handlers see. [`MemoryNotes`] is the embedded default (no server
//! needed: `cargo run` works on a fresh machine; each process has its own notes and loses them
//! when it stops). `PgNotes` (feature `db`) keeps them in PostgreSQL through [`Db`](super::Db):
//! inserts on the primary, lists and gets on a replica.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use futures_util::future::{BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};

/// The longest note body accepted, in bytes.
pub const MAX_BODY: usize = 4096;
/// The most notes one `list` returns.
pub const MAX_LIST: usize = 100;

/// One note. `Deserialize` too, so a cache can keep it as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    /// Assigned by the repository, increasing.
    pub id: i64,
    /// What the client sent.
    pub body: String,
    /// When it was stored, in Unix milliseconds.
    pub created: i64,
}

/// Why a repository call failed.
#[derive(Debug)]
pub enum NotesError {
    /// The input is not a note we keep (empty, too long): the client's mistake, a 400.
    Invalid(&'static str),
    /// The store could not answer: a 503.
    Unavailable(crate::error::BoxError),
}

impl fmt::Display for NotesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(why) => write!(f, "invalid note: {why}"),
            Self::Unavailable(e) => write!(f, "notes unavailable: {e}"),
        }
    }
}

impl std::error::Error for NotesError {}

/// What a repository call returns.
pub type NotesFuture<'a, T> = BoxFuture<'a, Result<T, NotesError>>;

/// Where notes are kept.
pub trait NotesRepo: Send + Sync + 'static {
    /// `"memory"` or `"postgres"`, for logs and `/api/notes` answers.
    fn name(&self) -> &'static str;
    /// Stores `body` and returns the note with its id.
    fn insert(&self, body: &str) -> NotesFuture<'_, Note>;
    /// The newest notes, at most `limit` (capped at [`MAX_LIST`]), newest first.
    fn list(&self, limit: usize) -> NotesFuture<'_, Vec<Note>>;
    /// One note by id.
    fn get(&self, id: i64) -> NotesFuture<'_, Option<Note>>;
}

/// Refuses what no repository keeps.
pub fn validate(body: &str) -> Result<(), NotesError> {
    if body.trim().is_empty() {
        return Err(NotesError::Invalid("the body is empty"));
    }
    if body.len() > MAX_BODY {
        return Err(NotesError::Invalid("the body is longer than 4096 bytes"));
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Notes in this process's memory, the newest `cap` kept (oldest dropped first), so a client
/// posting forever cannot grow it without bound.
#[derive(Debug)]
pub struct MemoryNotes {
    cap: usize,
    inner: Mutex<(i64, VecDeque<Note>)>,
}

impl MemoryNotes {
    /// An empty store keeping at most `cap` notes.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            inner: Mutex::new((0, VecDeque::new())),
        }
    }
}

impl Default for MemoryNotes {
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl NotesRepo for MemoryNotes {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn insert(&self, body: &str) -> NotesFuture<'_, Note> {
        let result = validate(body).map(|()| {
            let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let (last, notes) = &mut *guard;
            *last += 1;
            let note = Note {
                id: *last,
                body: body.to_string(),
                created: now_ms(),
            };
            if notes.len() == self.cap {
                notes.pop_front();
            }
            notes.push_back(note.clone());
            note
        });
        async move { result }.boxed()
    }

    fn list(&self, limit: usize) -> NotesFuture<'_, Vec<Note>> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let notes = guard
            .1
            .iter()
            .rev()
            .take(limit.min(MAX_LIST))
            .cloned()
            .collect();
        async move { Ok(notes) }.boxed()
    }

    fn get(&self, id: i64) -> NotesFuture<'_, Option<Note>> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Ids increase along the deque: a binary search, not a scan.
        let found = guard
            .1
            .binary_search_by_key(&id, |n| n.id)
            .ok()
            .map(|i| guard.1[i].clone());
        async move { Ok(found) }.boxed()
    }
}

#[cfg(feature = "db")]
pub use pg::PgNotes;

/// The repository a process should use: PostgreSQL when `settings` name a database (the table is
/// created if missing), else [`MemoryNotes`]. For a worker's startup.
#[cfg(feature = "db")]
pub async fn open(
    settings: Option<&super::DbSettings>,
) -> Result<std::sync::Arc<dyn NotesRepo>, super::DbError> {
    use std::sync::Arc;
    match settings {
        None => Ok(Arc::new(MemoryNotes::default())),
        Some(settings) => {
            let db = Arc::new(super::Db::new(settings)?);
            Ok(Arc::new(PgNotes::start(db).await?))
        }
    }
}

#[cfg(feature = "db")]
mod pg {
    use std::sync::Arc;

    use futures_util::future::FutureExt;
    use tokio_postgres::Row;

    use super::{MAX_LIST, Note, NotesError, NotesFuture, NotesRepo, validate};
    use crate::db::{Db, DbError};

    const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS notes (
        id BIGSERIAL PRIMARY KEY,
        body TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now())";
    const COLUMNS: &str = "id, body, (extract(epoch FROM created_at) * 1000)::int8";

    /// Notes in PostgreSQL: inserts on the primary, reads on a replica (which may lag the primary
    /// by the replication delay).
    #[derive(Debug, Clone)]
    pub struct PgNotes {
        db: Arc<Db>,
    }

    fn note(row: &Row) -> Note {
        Note {
            id: row.get(0),
            body: row.get(1),
            created: row.get(2),
        }
    }

    fn unavailable(e: DbError) -> NotesError {
        NotesError::Unavailable(Box::new(e))
    }

    impl PgNotes {
        /// Creates the table if it is missing (on the primary; replicas get it through
        /// replication) and returns the repository.
        pub async fn start(db: Arc<Db>) -> Result<Self, DbError> {
            db.write("create the notes table", |c| {
                async move { c.batch_execute(SCHEMA).await }.boxed()
            })
            .await?;
            Ok(Self { db })
        }

        /// The repository over a table another process created (a cluster's master, before its
        /// workers start): no statement is sent, so it works while only a replica answers.
        pub fn existing(db: Arc<Db>) -> Self {
            Self { db }
        }

        /// The pools underneath, for their counters.
        pub fn db(&self) -> &Arc<Db> {
            &self.db
        }
    }

    impl NotesRepo for PgNotes {
        fn name(&self) -> &'static str {
            "postgres"
        }

        fn insert(&self, body: &str) -> NotesFuture<'_, Note> {
            let body = body.to_string();
            async move {
                validate(&body)?;
                let sql = format!("INSERT INTO notes (body) VALUES ($1) RETURNING {COLUMNS}");
                let row = self
                    .db
                    .write("insert a note", |c| {
                        let (sql, body) = (sql.clone(), body.clone());
                        async move { c.query_one(&sql, &[&body]).await }.boxed()
                    })
                    .await
                    .map_err(unavailable)?;
                Ok(note(&row))
            }
            .boxed()
        }

        fn list(&self, limit: usize) -> NotesFuture<'_, Vec<Note>> {
            let limit = limit.min(MAX_LIST) as i64;
            async move {
                let sql = format!("SELECT {COLUMNS} FROM notes ORDER BY id DESC LIMIT $1");
                let (rows, _) = self
                    .db
                    .read("list notes", |c| {
                        let sql = sql.clone();
                        async move { c.query(&sql, &[&limit]).await }.boxed()
                    })
                    .await
                    .map_err(unavailable)?;
                Ok(rows.iter().map(note).collect())
            }
            .boxed()
        }

        fn get(&self, id: i64) -> NotesFuture<'_, Option<Note>> {
            async move {
                let sql = format!("SELECT {COLUMNS} FROM notes WHERE id = $1");
                let (row, _) = self
                    .db
                    .read("get a note", |c| {
                        let sql = sql.clone();
                        async move { c.query_opt(&sql, &[&id]).await }.boxed()
                    })
                    .await
                    .map_err(unavailable)?;
                Ok(row.as_ref().map(note))
            }
            .boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_keeps_the_newest_and_finds_by_id() {
        let notes = MemoryNotes::new(2);
        for body in ["a", "b", "c"] {
            notes.insert(body).await.unwrap();
        }
        let list = notes.list(10).await.unwrap();
        assert_eq!(
            list.iter().map(|n| n.body.as_str()).collect::<Vec<_>>(),
            ["c", "b"]
        );
        assert_eq!(notes.get(1).await.unwrap(), None, "the oldest was dropped");
        assert_eq!(notes.get(3).await.unwrap().unwrap().body, "c");
        assert!(matches!(
            notes.insert(" ").await,
            Err(NotesError::Invalid(_))
        ));
        let long = "x".repeat(MAX_BODY + 1);
        assert!(matches!(
            notes.insert(&long).await,
            Err(NotesError::Invalid(_))
        ));
    }
}
