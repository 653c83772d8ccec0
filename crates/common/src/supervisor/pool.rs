//! Version pools: groups of slots that run one version of the application each.
//!
//! A one-pool cluster (every lesson before 05) has pool 0 only, with no version, and starts its
//! workers exactly as before. A cluster of several pools (stable and canary, blue and green) tags
//! every slot with its pool: the supervisor starts the slot's processes from its pool's
//! [`PoolSpec`] (another binary, more environment, the version's label in `wire::env`), the edge
//! groups its ready set by pool, and a [`Split`](crate::balance::split::Split) chooses the pool of
//! each request before the selector chooses a worker inside it.
//!
//! Slot ids stay unique across pools (1, 2, … whichever pool takes them), so `X-Worker-Id`, the
//! counters and the logs name a slot without naming its pool.

use std::path::PathBuf;

/// What one pool runs and how many workers it starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Shown in logs and `/health`, and given to its workers (`stable`, `canary`, `blue`, …).
    pub name: String,
    /// The version its workers run, given to them (`wire::env::APP_VERSION`) and put on every
    /// response as `X-App-Version`. `None` in a one-pool cluster: nothing is set or added.
    pub version: Option<String>,
    /// Another binary to run, for the deploy of new code rather than a new label; `None` runs
    /// the master's own binary. It must be a cluster binary built on this crate.
    pub exe: Option<PathBuf>,
    /// More environment for this pool's workers only, after the cluster's own `worker_env`.
    pub env: Vec<(String, String)>,
    /// Workers at start.
    pub workers: usize,
}

impl PoolSpec {
    /// A pool named `name` running `version` of our own binary with `workers` workers.
    pub fn new(name: impl Into<String>, version: impl Into<String>, workers: usize) -> Self {
        Self {
            name: name.into(),
            version: Some(version.into()),
            exe: None,
            env: Vec::new(),
            workers,
        }
    }

    /// The only pool of a one-pool cluster: no version, our own binary.
    pub(crate) fn single(workers: usize) -> Self {
        Self {
            name: "main".into(),
            version: None,
            exe: None,
            env: Vec::new(),
            workers,
        }
    }

    /// Runs `exe` instead of the master's own binary.
    pub fn exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.exe = Some(exe.into());
        self
    }

    /// Sets `key=value` in this pool's workers only.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The environment a worker of this pool is started with, after the cluster's `base`.
    pub(crate) fn worker_env(&self, base: &[(String, String)]) -> Vec<(String, String)> {
        let mut env = base.to_vec();
        env.extend(self.env.iter().cloned());
        if let Some(version) = &self.version {
            env.push((crate::wire::env::APP_VERSION.into(), version.clone()));
            env.push((crate::wire::env::POOL.into(), self.name.clone()));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_pool_adds_nothing_to_the_workers_environment() {
        let base = vec![("A".to_string(), "1".to_string())];
        assert_eq!(PoolSpec::single(2).worker_env(&base), base);
    }

    #[test]
    fn a_version_pool_names_its_version_and_pool_after_the_clusters_own_variables() {
        let spec = PoolSpec::new("canary", "v2.0.0", 1).env("B", "2");
        let env = spec.worker_env(&[("A".into(), "1".into())]);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "A",
                "B",
                crate::wire::env::APP_VERSION,
                crate::wire::env::POOL
            ]
        );
        assert_eq!(env[2].1, "v2.0.0");
        assert_eq!(env[3].1, "canary");
    }
}
