//! Lesson 04: circuit breakers, one per downstream service.
//!
//! The master runs three real HTTP services (see [`services`]); each worker calls them over a
//! pooled HTTP client, each through its own [`CircuitBreakerLayer`], so a failing payments
//! service opens the payments circuit and nothing else. The Node original keyed its breaker by
//! worker: ten failures on `/api/fail` opened it and even `/` answered 503. Here `/` touches no
//! dependency and always answers.
//!
//! Layout:
//! - [`Settings`]: `BREAKER_*` through [`BreakerConfig::from_env`], and `BREAKER_SCOPE`;
//! - [`cluster`]: the whole cluster, ready to `run()`;
//! - [`worker`]: what each worker serves (`/`, `/api/external`, `/api/database`,
//!   `/api/payments`, `/api/fail`) and how it answers the master's questions about its breakers;
//! - [`admin`]: the master's routes (`/circuit-status`, `/circuit-reset`, `/circuit/{name}…`,
//!   `/faults/{service}`);
//! - [`services`]: the downstream services and their fault knobs.

pub mod admin;
pub mod services;
pub mod worker;

use std::sync::Arc;

use common::breaker::{BreakerConfig, CircuitBreaker, Scope};
use common::config::{self, ConfigError, Source};
use common::{Cluster, Config};

use crate::services::{Addresses, Services};

/// Every circuit a worker has: one per service, and one for `/api/fail`.
pub const CIRCUITS: [&str; 4] = ["external", "database", "payments", "fail"];

/// The lesson's own settings; the runtime's (`PORT`, `WORKERS`, …) are in [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// `BREAKER_WAIT_IN_OPEN`, `BREAKER_HALF_OPEN_CALLS`, `BREAKER_MIN_CALLS`,
    /// `BREAKER_FAILURE_RATE`, `BREAKER_WINDOW`, `BREAKER_SLOW_CALL_MS`, `BREAKER_SCOPE`.
    pub breaker: BreakerConfig,
}

impl Settings {
    /// Reads the process environment; on a bad value prints the reason and exits with status 2.
    pub fn from_env_or_exit() -> Self {
        Self::from_source(&config::ProcessEnv).unwrap_or_else(|e| config::exit_bad_config(&e))
    }

    /// Reads every variable from `src`.
    ///
    /// `BREAKER_SCOPE` defaults to `worker` here, not to the runtime's `cluster`: this lesson
    /// implements each worker's own breakers only, and `cluster` is refused rather than quietly
    /// run as `worker`, which would teach the wrong thing.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let mut breaker = BreakerConfig::from_env(src)?;
        match src.get("BREAKER_SCOPE") {
            None => breaker.scope = Scope::Worker,
            Some(value) if breaker.scope == Scope::Cluster => {
                return Err(ConfigError {
                    var: "BREAKER_SCOPE".into(),
                    value,
                    expected: "worker (cluster scope is not implemented yet in this lesson)".into(),
                });
            }
            Some(_) => {}
        }
        Ok(Self { breaker })
    }
}

/// One worker process's breakers, one per circuit, shared by its router and its answers to the
/// master.
#[derive(Debug)]
pub struct Breakers {
    all: Vec<CircuitBreaker>,
}

impl Breakers {
    /// A closed breaker for each of [`CIRCUITS`].
    pub fn new(config: &BreakerConfig) -> Self {
        Self {
            all: CIRCUITS
                .iter()
                .map(|name| CircuitBreaker::new(*name, config.clone()))
                .collect(),
        }
    }

    /// The breaker of circuit `name`.
    pub fn get(&self, name: &str) -> Option<&CircuitBreaker> {
        self.all.iter().find(|b| b.name() == name)
    }

    /// Every breaker, in [`CIRCUITS`] order.
    pub fn all(&self) -> &[CircuitBreaker] {
        &self.all
    }
}

/// Which process this is, with what it needs: the master runs the services, a worker only
/// knows where they are.
pub enum Role {
    /// The master, with its running services.
    Master(Services),
    /// A worker, with the addresses it inherited.
    Worker(Addresses),
}

/// The whole cluster: workers serving [`worker::router`], the master answering
/// [`admin::routes`] and running the services.
pub fn cluster(config: Config, settings: Settings, role: Role) -> Cluster {
    let (addresses, services) = match role {
        Role::Master(s) => (s.addresses(), s),
        Role::Worker(a) => (a, Services::default()),
    };
    let (env_key, env_value) = services.worker_env();
    let services_line = addresses.to_string().replace(',', "  ");
    // One set of breakers per process: the router and the control-channel handler share it.
    let breakers = Arc::new(Breakers::new(&settings.breaker));
    let router_breakers = breakers.clone();
    Cluster::new("circuit-breaker", config)
        .worker(move |ctx| worker::router(ctx, router_breakers.clone(), addresses.clone()))
        .on_request(move |ctx, question| worker::answer(ctx, &breakers, &question))
        .master(move |handle| admin::routes(admin::Admin::new(handle, services)))
        .worker_env(env_key, env_value)
        .banner_line("deps", services_line)
        .banner_line("scope", "worker: each worker has a breaker per service")
        .hint("for i in $(seq 10); do curl -s {url}/api/fail; done; curl {url}/")
        .hint("curl -s {url}/circuit-status | jq")
        .hint("curl -X POST {url}/circuit-reset")
        .hint(r#"curl -X POST {url}/faults/payments -H 'content-type: application/json' -d '{"down":true}'"#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn scope_defaults_to_worker_and_cluster_is_refused_as_not_implemented() {
        let s = Settings::from_source(&[]).expect("defaults are valid");
        assert_eq!(s.breaker.scope, Scope::Worker);
        let s = Settings::from_source(&[("BREAKER_SCOPE", "worker")]).expect("valid");
        assert_eq!(s.breaker.scope, Scope::Worker);
        let err = Settings::from_source(&[("BREAKER_SCOPE", "cluster")]).expect_err("cluster");
        assert_eq!(err.var, "BREAKER_SCOPE");
        assert!(err.to_string().contains("not implemented yet"), "{err}");
    }

    #[test]
    fn breaker_variables_are_read_and_bad_ones_name_themselves() {
        let s = Settings::from_source(&[
            ("BREAKER_WAIT_IN_OPEN", "200"),
            ("BREAKER_HALF_OPEN_CALLS", "2"),
        ])
        .expect("valid");
        assert_eq!(s.breaker.wait_in_open, Duration::from_millis(200));
        assert_eq!(s.breaker.half_open_calls, 2);
        let err = Settings::from_source(&[("BREAKER_HALF_OPEN_CALLS", "0")]).expect_err("0");
        assert_eq!(err.var, "BREAKER_HALF_OPEN_CALLS");
    }

    #[test]
    fn every_circuit_has_its_own_breaker() {
        let b = Breakers::new(&BreakerConfig::default());
        b.get("fail").expect("fail circuit").force_open();
        assert_eq!(
            b.get("external").map(|b| b.state()),
            Some(common::breaker::State::Closed),
            "opening one circuit leaves the others closed"
        );
        assert!(b.get("nope").is_none());
    }
}
