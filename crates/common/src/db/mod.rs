//! Where a lesson keeps data that must outlive every process: PostgreSQL, one primary and its
//! streaming replicas, or an embedded default when no database is configured.
//!
//! Layout:
//! - this file: [`DbSettings`] (`DATABASE_URL`, `DATABASE_REPLICA_URLS`);
//! - `pool` (feature `db`): [`Db`], a write pool to the primary and one read pool per replica,
//!   with the routing and retry rules below;
//! - [`notes`]: the [`NotesRepo`](notes::NotesRepo) trait a lesson serves `/api/notes` from, kept
//!   in memory ([`MemoryNotes`](notes::MemoryNotes)) or in PostgreSQL (`PgNotes`, feature `db`).
//!
//! The rules, and why:
//! - **Reads go to a replica, writes to the primary.** Replicas are read-only copies fed by the
//!   primary's WAL; spreading reads over them is what lets reads scale. A read may therefore see
//!   data a few milliseconds old (replication is asynchronous): a caller that must read its own
//!   write reads it back from the write side ([`Db::write`]).
//! - **Reads fall back to the primary.** A replica that refuses a connection is skipped for a
//!   second ([`REPLICA_BACKOFF`]) and the read goes to the next replica, then to the primary: a
//!   stopped replica costs capacity, never an error.
//! - **Writes are retried only when that cannot write twice.** A write that failed before its
//!   statement left this process (no connection could be had) or that the server refused as a whole
//!   (SQLSTATE 25006, "read-only transaction": we reached a standby) is retried until
//!   [`WRITE_RETRY_FOR`] runs out. A write whose connection broke after the statement was sent may
//!   or may not have committed; it is reported as [`DbError::Ambiguous`], never resent.
//! - **The primary is found, not named.** `DATABASE_URL` may list several hosts
//!   (`postgresql://app@db1:5432,db2:5432/app`); the write pool connects with
//!   `target_session_attrs=read-write`, so each new connection goes to whichever of them accepts
//!   writes. After a switchover the old connections die, the pool makes new ones, and they land on
//!   the promoted server: no restart.
//!
//! Depends on `config` only.

// The docs' links to the `db` feature's items (here and in `notes`) resolve when it is on, as on
// docs.rs; without it they name nothing, which is expected and not worth a warning per link.
#![cfg_attr(not(feature = "db"), allow(rustdoc::broken_intra_doc_links))]

pub mod notes;
#[cfg(feature = "db")]
mod pool;

#[cfg(feature = "db")]
pub use pool::{
    Db, DbCounters, DbError, Op, REPLICA_BACKOFF, Role, WRITE_RETRY_FOR, is_connection_error,
};

use crate::config::{ConfigError, Source};

/// The database the process was told to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSettings {
    /// `DATABASE_URL`: the primary, or several hosts one of which is the primary.
    pub primary: String,
    /// `DATABASE_REPLICA_URLS`: comma-separated, each one replica; may be empty.
    pub replicas: Vec<String>,
}

/// What a database URL must look like, for the error message.
const URL_EXPECTED: &str =
    "a PostgreSQL URL such as postgresql://user@127.0.0.1:5432/db (hosts may be comma-separated)";

impl DbSettings {
    /// Reads `DATABASE_URL` and `DATABASE_REPLICA_URLS`; `Ok(None)` when `DATABASE_URL` is unset
    /// (the embedded default). Replica URLs without `DATABASE_URL` are an error: they would be
    /// silently ignored otherwise.
    pub fn from_source(src: &impl Source) -> Result<Option<Self>, ConfigError> {
        let primary = crate::config::var(src, "DATABASE_URL", URL_EXPECTED, |s| {
            valid_url(s).then(|| s.to_string())
        })?;
        let replicas = crate::config::var(
            src,
            "DATABASE_REPLICA_URLS",
            "comma-separated PostgreSQL URLs (postgresql://user@host:port/db,...)",
            |s| {
                let urls: Vec<String> = s.split(',').map(|u| u.trim().to_string()).collect();
                urls.iter().all(|u| valid_url(u)).then_some(urls)
            },
        )?
        .unwrap_or_default();
        match primary {
            Some(primary) => Ok(Some(Self { primary, replicas })),
            None if replicas.is_empty() => Ok(None),
            None => Err(ConfigError {
                var: "DATABASE_URL".to_string(),
                value: String::new(),
                expected: "set as well when DATABASE_REPLICA_URLS is".to_string(),
            }),
        }
    }
}

/// Whether `s` is a URL the driver accepts. Without the driver compiled in, only the scheme is
/// checked (the setting is then refused later, at connect time).
fn valid_url(s: &str) -> bool {
    let scheme = s.starts_with("postgresql://") || s.starts_with("postgres://");
    #[cfg(feature = "db")]
    {
        scheme && s.parse::<tokio_postgres::Config>().is_ok()
    }
    #[cfg(not(feature = "db"))]
    {
        scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_means_embedded() {
        assert_eq!(DbSettings::from_source(&[("X", "1")]), Ok(None));
    }

    #[test]
    fn primary_and_replicas() {
        let got = DbSettings::from_source(&[
            (
                "DATABASE_URL",
                "postgresql://app@127.0.0.1:5432,127.0.0.1:5433/app",
            ),
            (
                "DATABASE_REPLICA_URLS",
                "postgresql://app@127.0.0.1:5434/app, postgres://app@127.0.0.1:5435/app",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(got.replicas.len(), 2);
        assert_eq!(got.replicas[1], "postgres://app@127.0.0.1:5435/app");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = DbSettings::from_source(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        let err = DbSettings::from_source(&[
            ("DATABASE_URL", "postgresql://a@127.0.0.1/a"),
            (
                "DATABASE_REPLICA_URLS",
                "postgresql://a@127.0.0.1/a,nonsense",
            ),
        ])
        .unwrap_err();
        assert_eq!(err.var, "DATABASE_REPLICA_URLS");
        let err =
            DbSettings::from_source(&[("DATABASE_REPLICA_URLS", "postgresql://a@127.0.0.1/a")])
                .unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
    }
}
