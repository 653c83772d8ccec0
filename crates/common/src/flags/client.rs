//! [`FlagClient`]: how a worker reads the flags, with the reason for each answer.
//!
//! Workers do not ask the master per request and the master does not push: the flags file the
//! master keeps (see [`super::store`]) is the channel. The client loads it at start, then looks at
//! the file every `FLAGS_POLL_MS` (100 ms by default) and reloads it when it changed. Why the file
//! and not a new control-channel message:
//!
//! - the file already is the truth (it is what survives a restart), so there is one source, not a
//!   second copy to keep in step; a worker started or restarted later reads it at boot, with no
//!   "send the current set to the newcomer" step in the supervisor;
//! - the master's writes are atomic renames, so a reader sees the old file or the new one whole,
//!   and each write makes a new inode, so "did it change" is one `stat` (inode, size, mtime), not
//!   a read;
//! - evaluation stays local and lock-free for the request: the current set is an `Arc` behind a
//!   `tokio::sync::watch`, so a lookup never waits for the master, and a master that is busy or
//!   restarting does not slow a worker's requests;
//! - the runtime's control channel stays as it is (a change there touches the supervisor and
//!   every worker's message loop).
//!
//! The cost is a bounded delay: a worker sees a change within one poll interval plus the read,
//! and workers may disagree for that long. A flag is a release switch, not a lock, so that is
//! the right trade; the integration tests measure it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::eval::Evaluation;
use super::store::{FlagSet, StoreError};

/// A worker's read-only view of the flags, kept up to date from the flags file. Cheap to clone:
/// every clone sees the same updates.
#[derive(Clone, Debug)]
pub struct FlagClient {
    current: watch::Receiver<Arc<FlagSet>>,
}

/// What identifies one version of the file without reading it: a write is a rename of a new file,
/// so the inode changes even when the size and the mtime's granularity would not show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

impl FlagClient {
    /// Loads `path` and spawns, on the current tokio runtime, the task that reloads it when it
    /// changes (checked every `poll`). The task ends when the last clone is dropped. A file that
    /// cannot be read at start is an error; later, a bad read keeps the last good set and is
    /// logged.
    pub fn watch(path: impl Into<PathBuf>, poll: Duration) -> Result<Self, StoreError> {
        let path = path.into();
        let mut seen = fingerprint(&path);
        let (tx, current) = watch::channel(Arc::new(FlagSet::load(&path)?));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tx.is_closed() {
                    break;
                }
                // One stat per tick: microseconds, so it runs inline rather than on a blocking
                // thread; the read below only happens after a write.
                let now = fingerprint(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match FlagSet::load(&path) {
                    Ok(set) => {
                        tracing::debug!(version = set.version, "flags reloaded");
                        tx.send_replace(Arc::new(set));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "flags file changed but cannot be read; keeping the last good flags")
                    }
                }
            }
        });
        Ok(Self { current })
    }

    /// Flag `key` for `user`, with the reason. A flag that does not exist is off, with
    /// `ERROR`/`FLAG_NOT_FOUND`.
    pub fn evaluate(&self, key: &str, user: &str) -> Evaluation {
        self.current.borrow().evaluate(key, user)
    }

    /// Whether flag `key` is on for `user`.
    pub fn is_enabled(&self, key: &str, user: &str) -> bool {
        self.evaluate(key, user).value
    }

    /// The version of the flags this worker has: the master's `version` once it has seen it.
    pub fn version(&self) -> u64 {
        self.current.borrow().version
    }

    /// Every flag as this worker sees them now.
    pub fn snapshot(&self) -> Arc<FlagSet> {
        self.current.borrow().clone()
    }

    /// Waits until the flags change (for code that caches something derived from them).
    pub async fn changed(&mut self) {
        // An error means the reloading task ended, which only happens when every client is gone.
        let _ = self.current.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{FlagStore, FlagUpdate};

    #[tokio::test]
    async fn a_change_written_by_the_store_reaches_the_client() {
        let dir = std::env::temp_dir().join(format!(
            "flags-client-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("flags.json");
        let store = FlagStore::open(&path).expect("open");
        let mut client = FlagClient::watch(&path, Duration::from_millis(10)).expect("watch");
        assert_eq!(
            client.evaluate("x", "u").error_code.as_deref(),
            Some("FLAG_NOT_FOUND")
        );
        let update = FlagUpdate {
            enabled: Some(true),
            ..FlagUpdate::default()
        };
        store.upsert("x", update).expect("create");
        tokio::time::timeout(Duration::from_secs(5), client.changed())
            .await
            .expect("the client sees the change");
        assert_eq!(client.version(), 1);
        assert!(client.is_enabled("x", "u"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
