//! Feature flags: switch a feature on for some users without a deploy.
//!
//! The master keeps the flags ([`FlagStore`]) and serves them ([`routes()`]); workers read them
//! through a [`FlagClient`]. Each flag is on or off, rolled out to a percentage of users by a
//! stable hash of (salt, user), and has allow and deny lists; an evaluation answers the value and
//! why, in OpenFeature's words ([`Reason`]).
//!
//! Layout:
//! - [`bucket`]: the stable hash of (salt, user) into 0..100, the rule every rollout uses;
//! - [`flag`]: one flag, its changes, its limits and its evaluation;
//! - [`eval`]: the answer, [`Evaluation`], and its [`Reason`];
//! - [`store`]: the master's store, persisted to a JSON file by atomic rename;
//! - [`client`]: the workers' view, reloaded when the file changes (why the file and not the
//!   control channel is said there);
//! - [`mod@routes`]: `GET /flags`, `GET|POST /flags/{key}`, `POST /flags/{key}/delete`,
//!   `GET /flags/{key}/evaluate?user=U` on the master, and [`worker_routes`]'
//!   `GET /feature/{key}?user=U` on each worker;
//! - [`FlagSettings`]: `FLAGS_FILE` and `FLAGS_POLL_MS`.
//!
//! Layer 4: depends on `config` and `http::routes` below it, and on nothing at its own layer.

pub mod bucket;
pub mod client;
pub mod eval;
pub mod flag;
pub mod routes;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

pub use client::FlagClient;
pub use eval::{Evaluation, Reason};
pub use flag::{Flag, FlagUpdate};
pub use routes::{routes, worker_routes};
pub use store::{FlagSet, FlagStore, StoreError};

use crate::config::{self, ConfigError, Source};

/// Where the flags live and how often workers look for changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagSettings {
    /// `FLAGS_FILE`: the JSON file the master keeps the flags in, and the workers read.
    pub path: PathBuf,
    /// `FLAGS_POLL_MS` (default 100, at least 10): how often a worker checks the file.
    pub poll: Duration,
}

impl FlagSettings {
    /// Reads `FLAGS_FILE` (default `default_path`, chosen by the lesson) and `FLAGS_POLL_MS`.
    /// The file may not exist yet; its directory must.
    pub fn from_source(src: &impl Source, default_path: &str) -> Result<Self, ConfigError> {
        let raw = src
            .get("FLAGS_FILE")
            .unwrap_or_else(|| default_path.to_string());
        let path = PathBuf::from(&raw);
        let dir_exists = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.is_dir(),
            _ => true,
        };
        if !dir_exists || path.is_dir() || path.file_name().is_none() {
            return Err(ConfigError {
                var: "FLAGS_FILE".into(),
                value: raw,
                expected: "a file path in an existing directory (the file itself may be missing)"
                    .into(),
            });
        }
        let poll = config::duration_ms(
            src,
            "FLAGS_POLL_MS",
            Duration::from_millis(100),
            Duration::from_millis(10),
        )?;
        Ok(Self { path, poll })
    }

    /// The master's store, with what a previous run saved. An unreadable or corrupt file is a
    /// bad `FLAGS_FILE` (so a lesson exits 2 with [`config::exit_bad_config`]) rather than
    /// flags silently lost.
    pub fn open_store(&self) -> Result<FlagStore, ConfigError> {
        FlagStore::open(&self.path).map_err(|e| self.bad_file(e))
    }

    /// A worker's client, reloading every [`poll`](Self::poll). Call it inside the runtime (a
    /// worker's router builder is).
    pub fn client(&self) -> Result<FlagClient, ConfigError> {
        FlagClient::watch(&self.path, self.poll).map_err(|e| self.bad_file(e))
    }

    fn bad_file(&self, e: StoreError) -> ConfigError {
        ConfigError {
            var: "FLAGS_FILE".into(),
            value: self.path.display().to_string(),
            expected: format!("a readable flags file ({e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_refuse_a_missing_directory() {
        let s = FlagSettings::from_source(&[], "flags.json").expect("default");
        assert_eq!(s.path, PathBuf::from("flags.json"));
        assert_eq!(s.poll, Duration::from_millis(100));
        let err = FlagSettings::from_source(&[("FLAGS_FILE", "/no/such/dir/f.json")], "x")
            .expect_err("missing dir");
        assert_eq!(err.var, "FLAGS_FILE");
        let err = FlagSettings::from_source(&[("FLAGS_POLL_MS", "5")], "x").expect_err("too fast");
        assert_eq!(err.var, "FLAGS_POLL_MS");
    }

    /// The seed guide's flags all hash the user alone, so two 25% flags pick the same quarter.
    /// With a salt per flag, the overlap is a quarter of a quarter: 6.25% of users.
    #[test]
    fn two_flags_at_25_percent_share_about_a_sixteenth_of_users() {
        let users = 20_000;
        let (mut a, mut b, mut both) = (0, 0, 0);
        for i in 0..users {
            let user = format!("user-{i}");
            let in_a = bucket::in_rollout("new-ui", &user, 25);
            let in_b = bucket::in_rollout("fast-checkout", &user, 25);
            a += u32::from(in_a);
            b += u32::from(in_b);
            both += u32::from(in_a && in_b);
        }
        let pct = |n: u32| 100.0 * f64::from(n) / f64::from(users);
        // 20,000 users: one standard deviation of the overlap is about 0.17 points.
        assert!((23.5..26.5).contains(&pct(a)), "flag a: {}%", pct(a));
        assert!((23.5..26.5).contains(&pct(b)), "flag b: {}%", pct(b));
        assert!(
            (5.5..7.0).contains(&pct(both)),
            "both flags: {}% of users, expected about 6.25%",
            pct(both)
        );
    }
}
