//! The master's flag store: the flags in memory, and on disk in a JSON file so they survive a
//! restart.
//!
//! Memory and disk never disagree: a change is applied to a copy, the copy is written to the file
//! atomically (a temporary file in the same directory, flushed to disk, then renamed over the old
//! one, so a crash leaves the old file or the new one, never half of one), and only then does the
//! copy become the store's. A change the disk refused is an error and changes nothing.
//!
//! The file is also how workers learn about changes (see [`super::client`]): every write gives it a
//! new inode and a `version` one higher.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::eval::Evaluation;
use super::flag::{Flag, FlagUpdate, Invalid, MAX_FLAGS, MAX_LISTED_USERS, check_key};

/// Every flag at one moment, and which change that moment is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagSet {
    /// One more at every change, kept across restarts: a worker shows which change it has seen.
    pub version: u64,
    flags: BTreeMap<String, Flag>,
}

/// The file's shape: `{"version": 3, "flags": [{…}, …]}`, flags sorted by key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u64,
    flags: Vec<Flag>,
}

impl FlagSet {
    /// The flag named `key`.
    pub fn get(&self, key: &str) -> Option<&Flag> {
        self.flags.get(key)
    }

    /// Every flag, by key.
    pub fn iter(&self) -> impl Iterator<Item = &Flag> {
        self.flags.values()
    }

    /// How many flags there are.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Flag `key` for `user`; a missing flag is off with `ERROR`/`FLAG_NOT_FOUND`.
    pub fn evaluate(&self, key: &str, user: &str) -> Evaluation {
        match self.flags.get(key) {
            Some(flag) => flag.evaluate(user),
            None => Evaluation::not_found(key),
        }
    }

    /// Reads the file at `path`; a missing file is an empty set at version 0. Every flag is
    /// checked as if it had been posted, so a hand-edited file cannot smuggle in what the routes
    /// refuse.
    pub fn load(path: &Path) -> Result<FlagSet, StoreError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FlagSet::default()),
            Err(e) => return Err(StoreError::io(path, "read", e)),
        };
        let file: FileFormat = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let corrupt = |why: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        if file.flags.len() > MAX_FLAGS {
            return Err(corrupt(format!(
                "{} flags; at most {MAX_FLAGS}",
                file.flags.len()
            )));
        }
        let mut flags = BTreeMap::new();
        for flag in file.flags {
            flag.check().map_err(|e| corrupt(e.to_string()))?;
            let key = flag.key.clone();
            if flags.insert(key.clone(), flag).is_some() {
                return Err(corrupt(format!("flag {key:?} is there twice")));
            }
        }
        Ok(FlagSet {
            version: file.version,
            flags,
        })
    }

    /// Writes the set to `path` atomically: temporary file, fsync, rename, fsync of the directory.
    fn save(&self, path: &Path) -> Result<(), StoreError> {
        let file = FileFormat {
            version: self.version,
            flags: self.flags.values().cloned().collect(),
        };
        let mut text = serde_json::to_vec_pretty(&file)
            .map_err(|e| StoreError::io(path, "encode", e.into()))?;
        text.push(b'\n');
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            // On disk before it gets the real name: a crash after the rename must not find an
            // empty file there.
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // The rename itself is durable once the directory is; best effort (not every
            // filesystem lets a directory be synced).
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            StoreError::io(path, "write", e)
        })
    }
}

/// Why the store refused a change or could not open its file.
#[derive(Debug)]
pub enum StoreError {
    /// The change breaks a rule (a bad key, a percentage over 100, a list too long…).
    Invalid(Invalid),
    /// There are already [`MAX_FLAGS`] flags.
    Full,
    /// The file could not be read or written.
    Io {
        /// The flags file.
        path: PathBuf,
        /// What we were doing.
        doing: &'static str,
        /// What the system said.
        error: std::io::Error,
    },
    /// The file is not a flags file we wrote (or it was edited into something the routes refuse).
    Corrupt {
        /// The flags file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl StoreError {
    fn io(path: &Path, doing: &'static str, error: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            doing,
            error,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Invalid(e) => write!(f, "{e}"),
            StoreError::Full => write!(
                f,
                "the store already holds {MAX_FLAGS} flags, its limit; delete one first"
            ),
            StoreError::Io { path, doing, error } => {
                write!(
                    f,
                    "cannot {doing} the flags file {}: {error}",
                    path.display()
                )
            }
            StoreError::Corrupt { path, why } => {
                write!(f, "the flags file {} is not valid: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {}

impl From<Invalid> for StoreError {
    fn from(e: Invalid) -> Self {
        StoreError::Invalid(e)
    }
}

/// The master's flags, shared by its routes. Cheap to clone.
#[derive(Clone)]
pub struct FlagStore {
    path: Arc<PathBuf>,
    /// The current set. Readers clone the `Arc` and let go of the lock at once; writers hold it
    /// across the file write, so changes reach the disk in the order they were made.
    current: Arc<Mutex<Arc<FlagSet>>>,
}

impl fmt::Debug for FlagStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagStore")
            .field("path", &self.path)
            .finish()
    }
}

impl FlagStore {
    /// Opens the store kept in `path`, reading what a previous run left there.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let set = FlagSet::load(&path)?;
        Ok(Self {
            path: Arc::new(path),
            current: Arc::new(Mutex::new(Arc::new(set))),
        })
    }

    /// The file the flags are kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every flag as of now.
    pub fn snapshot(&self) -> Arc<FlagSet> {
        self.lock().clone()
    }

    /// Flag `key` for `user`.
    pub fn evaluate(&self, key: &str, user: &str) -> Evaluation {
        self.snapshot().evaluate(key, user)
    }

    /// Creates flag `key` or changes it; the flag as saved, and whether it is new. Blocks on the
    /// file write: call it from a blocking task.
    pub fn upsert(&self, key: &str, update: FlagUpdate) -> Result<(Flag, bool), StoreError> {
        check_key(key)?;
        let mut current = self.lock();
        let (flag, created) = match current.get(key) {
            Some(old) => (old.updated(update)?, false),
            None if current.len() >= MAX_FLAGS => return Err(StoreError::Full),
            None => (Flag::new(key).updated(update)?, true),
        };
        let listed = |f: &Flag| f.allow.len() + f.deny.len();
        let others: usize = current.iter().filter(|f| f.key != key).map(listed).sum();
        if others + listed(&flag) > MAX_LISTED_USERS {
            return Err(StoreError::Invalid(Invalid(format!(
                "the flags would list {} users in all; at most {MAX_LISTED_USERS} across every flag",
                others + listed(&flag)
            ))));
        }
        let mut next = FlagSet::clone(&current);
        next.version += 1;
        next.flags.insert(key.to_string(), flag.clone());
        next.save(&self.path)?;
        *current = Arc::new(next);
        Ok((flag, created))
    }

    /// Deletes flag `key`; whether there was one. Blocks on the file write.
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut current = self.lock();
        if current.get(key).is_none() {
            return Ok(false);
        }
        let mut next = FlagSet::clone(&current);
        next.version += 1;
        next.flags.remove(key);
        next.save(&self.path)?;
        *current = Arc::new(next);
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<FlagSet>> {
        // A panic while holding the lock cannot leave a half-made set: the set is replaced whole.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Property tests: the file loader on arbitrary bytes.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn flagish() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            // Near-misses of the real shape, where a loader is likeliest to trust too much.
            (
                any::<u64>(),
                ".{0,12}",
                any::<u16>(),
                proptest::collection::vec(".{0,6}", 0..4)
            )
                .prop_map(|(version, key, pct, users)| {
                    serde_json::json!({
                        "version": version,
                        "flags": [{
                            "key": key, "enabled": true, "percentage": pct, "salt": key,
                            "allow": users, "deny": []
                        }]
                    })
                    .to_string()
                    .into_bytes()
                }),
        ]
    }

    proptest! {
        #![proptest_config(crate::prop::config())]

        /// Whatever is in the file, loading it gives a set whose every flag passes the checks a
        /// posted flag does, or an error: never a panic, never a flag the routes would refuse.
        #[test]
        fn prop_flag_file_loader_survives_arbitrary_bytes(raw in flagish()) {
            let dir = std::env::temp_dir().join(format!(
                "flags-prop-{}-{:08x}", std::process::id(), rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir).expect("dir");
            let path = dir.join("flags.json");
            std::fs::write(&path, &raw).expect("write");
            let loaded = FlagSet::load(&path);
            let _ = std::fs::remove_dir_all(&dir);
            if let Ok(set) = loaded {
                prop_assert!(set.len() <= MAX_FLAGS);
                for flag in set.iter() {
                    prop_assert!(flag.check().is_ok(), "{flag:?}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "flags-test-{}-{name}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("flags.json")
    }

    fn on(pct: u8) -> FlagUpdate {
        FlagUpdate {
            enabled: Some(true),
            percentage: Some(pct),
            ..FlagUpdate::default()
        }
    }

    #[test]
    fn changes_survive_reopening_and_versions_count_them() {
        let path = temp_path("reopen");
        let store = FlagStore::open(&path).expect("open");
        assert_eq!(store.snapshot().version, 0);
        let (_, created) = store.upsert("a", on(10)).expect("create");
        assert!(created);
        let (_, created) = store.upsert("a", on(20)).expect("update");
        assert!(!created);
        store.upsert("b", on(5)).expect("create b");
        assert!(store.delete("b").expect("delete"));
        assert!(!store.delete("b").expect("delete again"));
        let again = FlagStore::open(&path).expect("reopen");
        let set = again.snapshot();
        assert_eq!(set.version, 4);
        assert_eq!(set.len(), 1);
        assert_eq!(set.get("a").map(|f| f.percentage), Some(20));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temporary file is left: {leftovers:?}"
        );
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn a_refused_change_changes_nothing_and_the_store_is_bounded() {
        let path = temp_path("bounded");
        let store = FlagStore::open(&path).expect("open");
        store.upsert("a", on(10)).expect("create");
        assert!(matches!(
            store.upsert("a", on(101)),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.upsert("bad key", on(1)),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.snapshot().get("a").map(|f| f.percentage), Some(10));
        assert_eq!(store.snapshot().version, 1);
        for i in 1..MAX_FLAGS {
            store.upsert(&format!("f{i}"), on(1)).expect("room");
        }
        assert!(matches!(
            store.upsert("one-more", on(1)),
            Err(StoreError::Full)
        ));
        assert!(store.upsert("a", on(30)).is_ok(), "updating needs no room");
        let users = |from: usize| -> std::collections::BTreeSet<String> {
            (from..from + 1_000).map(|i| format!("u{i}")).collect()
        };
        for i in 0..10 {
            let update = FlagUpdate {
                allow: Some(users(i * 1_000)),
                ..FlagUpdate::default()
            };
            store
                .upsert(&format!("f{}", i + 1), update)
                .expect("within the total");
        }
        let one_more = FlagUpdate {
            deny: Some(["x".to_string()].into()),
            ..FlagUpdate::default()
        };
        let err = store.upsert("f20", one_more).expect_err("over the total");
        assert!(err.to_string().contains("across every flag"), "{err}");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn a_corrupt_file_is_refused_with_its_path() {
        let path = temp_path("corrupt");
        std::fs::write(&path, br#"{"version": 1, "flags": [{"key": "x y"}]}"#).expect("write");
        let err = FlagStore::open(&path).expect_err("corrupt");
        assert!(err.to_string().contains("flags.json"), "{err}");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}
