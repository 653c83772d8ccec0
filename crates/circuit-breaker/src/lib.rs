//! Lesson 04: circuit breakers, one per downstream service.
//!
//! The master runs three real HTTP services (see [`services`]); each worker calls them over a
//! pooled HTTP client, each through its own [`CircuitBreakerLayer`](common::breaker::CircuitBreakerLayer), so a failing payments
//! service opens the payments circuit and nothing else. The Node original keyed its breaker by
//! worker: ten failures on `/api/fail` opened it and even `/` answered 503. Here `/` touches no
//! dependency and always answers.
//!
//! Cluster scope (the default, `BREAKER_SCOPE=cluster`): the master holds one breaker per
//! circuit for every worker ([`MasterBreakers`]), the workers' breakers follow it
//! ([`WorkerLink`]), so a dead service costs one window's minimum calls in all, not one per
//! worker. `BREAKER_SCOPE=worker` gives each worker its own, to compare; `off` disables them.
//! Beside the breakers, lesson 02's outlier ejection takes out a worker that fails on its own
//! ([`OwnFailures`]).
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
use std::sync::atomic::AtomicBool;

use common::balance::{Outlier, OutlierConfig, RoundRobin};
use common::breaker::{BreakerConfig, CircuitBreaker, MasterBreakers, Scope, WorkerLink};
use common::config::{self, ConfigError, Source};
use common::slot::{Completion, Observer, Outcome};
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
    /// Lesson 02's passive outlier ejection of workers: `OUTLIER_CONSECUTIVE_ERRORS`,
    /// `OUTLIER_BASE_EJECTION_MS`, `OUTLIER_MAX_EJECTION_MS`, `OUTLIER_MAX_EJECTION_PERCENT`.
    pub outlier: OutlierConfig,
}

impl Settings {
    /// Reads the process environment; on a bad value prints the reason and exits with status 2.
    pub fn from_env_or_exit() -> Self {
        Self::from_source(&config::ProcessEnv).unwrap_or_else(|e| config::exit_bad_config(&e))
    }

    /// Reads every variable from `src`; `BREAKER_SCOPE` is `cluster` unless set to `worker` or
    /// `off`.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        Ok(Self {
            breaker: BreakerConfig::from_env(src)?,
            outlier: OutlierConfig::from_source(src)?,
        })
    }
}

/// One worker process's breakers, one per circuit, shared by its router and its answers to the
/// master.
#[derive(Debug)]
pub struct Breakers {
    all: Vec<CircuitBreaker>,
}

impl Breakers {
    /// A closed breaker for each of [`CIRCUITS`], judging on this worker's calls alone
    /// (worker scope).
    pub fn new(config: &BreakerConfig) -> Self {
        Self {
            all: CIRCUITS
                .iter()
                .map(|name| CircuitBreaker::new(*name, config.clone()))
                .collect(),
        }
    }

    /// A follower of the master's breaker for each of [`CIRCUITS`] (cluster scope).
    pub fn following(link: &WorkerLink, config: &BreakerConfig) -> Self {
        Self {
            all: CIRCUITS
                .iter()
                .map(|name| link.follower(name, config.clone()))
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

/// The master's outlier ejection, told only about a worker's *own* failures: requests it gave
/// no answer to (it crashed, reset the connection, or said nothing within `UPSTREAM_TIMEOUT`).
///
/// A worker that answered is alive, whatever the status. In this lesson its 502s and 503s are
/// its dependencies' failures (a failed call, an open circuit), which every worker answers
/// alike while a service is down, and `/api/fail`'s 500 is on purpose: ejecting workers for
/// those would take healthy ones out of rotation for nothing. The breakers handle them.
pub struct OwnFailures(pub Arc<Outlier<RoundRobin>>);

impl Observer for OwnFailures {
    fn on_complete(&self, c: &Completion) {
        // An answer resets the worker's run of errors, whatever its status; only a missing
        // answer adds to it.
        let own = Completion {
            status: c.status.filter(|_| c.outcome == Outcome::Failed),
            ..*c
        };
        self.0.on_complete(&own);
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
    let config_b = &settings.breaker;
    // Cluster scope: the master's breakers own the state, each worker's follow them. Both are
    // built in every process; each uses its own (they are a few hundred bytes).
    let (master, link, breakers, scope_line) = match config_b.scope {
        Scope::Cluster => {
            let link = WorkerLink::new();
            let breakers = Breakers::following(&link, config_b);
            let master = MasterBreakers::new(&CIRCUITS, config_b);
            let line = "cluster: the master holds one breaker per service for every worker";
            (Some(master), Some(link), breakers, line)
        }
        Scope::Worker => {
            let line = "worker: each worker has a breaker per service";
            (None, None, Breakers::new(config_b), line)
        }
        Scope::Off => {
            let breakers = Breakers::new(config_b);
            for b in breakers.all() {
                b.force_state(common::breaker::State::Disabled);
            }
            let line = "off: every breaker is disabled, calls go straight through";
            (None, None, breakers, line)
        }
    };
    // One set of breakers per process: the router and the control-channel handler share it.
    let breakers = Arc::new(breakers);
    let router_breakers = breakers.clone();
    let failing = Arc::new(AtomicBool::new(false));
    let router_failing = failing.clone();
    let admin_master = master.clone();
    let outlier = Arc::new(Outlier::new(RoundRobin::default(), settings.outlier));
    let admin_outlier = outlier.clone();
    Cluster::new("circuit-breaker", config)
        .worker(move |ctx| {
            let b = router_breakers.clone();
            worker::router(ctx, b, addresses.clone(), router_failing.clone())
        })
        .on_request(move |ctx, question| worker::answer(ctx, &breakers, &failing, &question))
        .master(move |handle| {
            admin::routes(admin::Admin::new(handle, services, admin_master, admin_outlier))
        })
        .selector(outlier.clone())
        .observe(OwnFailures(outlier))
        .cluster_breakers(master, link)
        .worker_env(env_key, env_value)
        .banner_line("deps", services_line)
        .banner_line("scope", scope_line)
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
    fn scope_defaults_to_cluster_and_worker_can_be_chosen() {
        let s = Settings::from_source(&[]).expect("defaults are valid");
        assert_eq!(s.breaker.scope, Scope::Cluster);
        let s = Settings::from_source(&[("BREAKER_SCOPE", "worker")]).expect("valid");
        assert_eq!(s.breaker.scope, Scope::Worker);
        let err = Settings::from_source(&[("BREAKER_SCOPE", "global")]).expect_err("global");
        assert_eq!(err.var, "BREAKER_SCOPE");
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
