//! Lesson 05: canary deployment, and the rolling and blue-green deployments beside it.
//!
//! The cluster runs two version pools (see `common::supervisor::pool`): stable (`APP_VERSION`,
//! `WORKERS` workers) and canary (`CANARY_VERSION`, `CANARY_WORKERS` workers, optionally another
//! binary, `CANARY_BIN`). Each response carries `X-App-Version`. The master splits traffic by
//! user, not by worker count ([`common::balance::split`]), keeps every user on one version, and
//! judges the canary against the stable pool over the same window at every step.
//!
//! The Node original turned workers into canaries (so 10% meant "one worker in six"), divided
//! errors by the wrong count, bounced a user between versions from one request to the next, never
//! reset its figures between steps, and hung requests on a worker it killed.
//!
//! Beside the versions, the two ways to ship to some users without a new process, from
//! `common`: feature flags (`common::flags`: the master keeps them in `FLAGS_FILE`, every worker
//! of both pools reads them and answers `/feature/{key}`) and an A/B test (`common::ab`: each
//! worker serves `/ab/page`, the master counts exposures as it routes it and answers
//! `/ab/status`, `/ab/convert`, `/ab/variant`).
//!
//! Layout:
//! - [`Settings`] (in `settings`): the lesson's variables;
//! - [`analysis`]: the verdict, pure (windows in, verdict with its inputs out);
//! - [`deploy`]: the master's deployment machinery (steps, rollback, promotion, rolling,
//!   blue-green);
//! - [`admin`]: the master's routes;
//! - [`worker`]: what every worker serves, and the fault knob;
//! - [`cluster`]: the whole cluster, ready to `run()`.

pub mod admin;
pub mod analysis;
pub mod deploy;
mod settings;
pub mod worker;

pub use settings::{FLAGS_FILE, Settings, valid_version};

use std::sync::{Arc, Mutex};

use common::ab::{self, AbTest};
use common::balance::split::Salt;
use common::balance::{RoundRobin, TrafficSplit};
use common::flags;
use common::metrics::PoolWindows;
use common::supervisor::PoolSpec;
use common::{Cluster, Config};

use crate::deploy::Deployment;
use crate::worker::Faults;

/// The file in the master's run directory that holds a drawn salt.
pub const SALT_FILE: &str = "canary-salt";

/// The salt users are bucketed with, and whether it was drawn now: `CANARY_SALT`, or a random
/// one, which the master then keeps in its run directory ([`SALT_FILE`]) for as long as it runs,
/// so an operator can read it and give it to a second instance as `CANARY_SALT`.
pub fn salt(settings: &Settings) -> (Salt, bool) {
    match &settings.salt {
        Some(secret) => (Salt::from_secret(secret), false),
        None => (Salt::random(), true),
    }
}

/// The whole cluster: the two pools, the split, the per-pool windows, the flags, the A/B test,
/// the routes.
///
/// `DISPATCH=handoff` is refused (exit 2): it hands whole connections to workers, so the master
/// never sees the requests it would split between versions. An unreadable or corrupt
/// `FLAGS_FILE` exits 2 too, before anything is bound, rather than flags silently lost.
pub fn cluster(config: Config, settings: Settings) -> Cluster {
    if config.dispatch == common::config::Dispatch::Handoff {
        common::config::exit_bad_config(&common::config::ConfigError {
            var: "DISPATCH".into(),
            value: "handoff".into(),
            expected: "proxy: a canary splits requests, which needs the master to see each one"
                .into(),
        });
    }
    // Only the master keeps the store; a worker reads the file through its client.
    let store = (!common::is_worker()).then(|| {
        settings
            .flags
            .open_store()
            .unwrap_or_else(|e| common::config::exit_bad_config(&e))
    });
    let flag_settings = settings.flags.clone();
    let ab = Arc::new(AbTest::new(settings.ab.clone()));
    let (worker_ab, master_ab) = (ab.clone(), ab.clone());
    let (salt, drawn) = salt(&settings);
    let kept_salt = drawn.then(|| salt.secret().to_string());
    let split = Arc::new(TrafficSplit::new(salt, 0, 1));
    let windows = Arc::new(PoolWindows::default());
    let faults = Arc::new(Faults::default());
    let router_faults = faults.clone();
    let stable = PoolSpec::new("stable", settings.stable_version.clone(), config.workers);
    let mut canary = PoolSpec::new(
        "canary",
        settings.canary_version.clone(),
        settings.canary_workers,
    );
    if let Some(bin) = &settings.canary_bin {
        canary = canary.exe(bin.clone());
    }
    let flags_banner = format!(
        "{} (workers reload it every {:?})",
        flag_settings.path.display(),
        flag_settings.poll
    );
    let banner = format!(
        "stable {} x{}, canary {} x{}{}",
        settings.stable_version,
        config.workers,
        settings.canary_version,
        settings.canary_workers,
        settings
            .canary_bin
            .as_ref()
            .map(|b| format!(" ({})", b.display()))
            .unwrap_or_default()
    );
    let steps = settings
        .steps
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // The deployment needs the handle, which exists once the cluster runs: the master's routes
    // build it, and the start hook runs its analysis loop.
    let deployment: Arc<Mutex<Option<Arc<Deployment>>>> = Arc::default();
    let for_start = deployment.clone();
    let (split_for_master, windows_for_master) = (split.clone(), windows.clone());
    Cluster::new("canary-deployment", config)
        .pool(stable)
        .pool(canary)
        .split(split)
        // The split chooses the pool, then this selector a worker in it: every request of
        // `/ab/page` passes here once whatever its pool, and the test counts each user once.
        .selector(ab::Exposing::new(ab, ab::PAGE_PATH, RoundRobin::default()))
        .observe(windows)
        .worker(move |ctx| {
            // Inside the worker's runtime, which the client's reload task needs.
            let client = flag_settings
                .client()
                .unwrap_or_else(|e| common::config::exit_bad_config(&e));
            worker::router(ctx, router_faults.clone())
                .merge(flags::worker_routes(client, ctx.id))
                .merge(ab::page_routes(worker_ab.clone(), ctx.id))
        })
        .on_request(move |_ctx, question| worker::answer(&faults, &question))
        .master(move |handle| {
            if let Some(secret) = kept_salt {
                let path = handle.run_dir().join(SALT_FILE);
                if let Err(e) = std::fs::write(&path, secret) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot keep the drawn salt");
                }
            }
            let d = Deployment::new(handle, settings, split_for_master, windows_for_master);
            *deployment.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.clone());
            let store = store.expect("the master opened its store");
            admin::routes(d)
                .merge(flags::routes(store))
                .merge(ab::routes(master_ab))
        })
        .on_start(move |_handle| {
            if let Some(d) = for_start.lock().unwrap_or_else(|p| p.into_inner()).take() {
                tokio::spawn(d.run());
            }
        })
        .banner_line("pools", banner)
        .banner_line("steps", format!("{steps} (%)"))
        .banner_line("flags", flags_banner)
        .hint("curl -si {url}/ | grep -i x-app-version")
        .hint("curl -s {url}/canary/status | jq .deployment")
        .hint("curl -X POST {url}/canary/increase")
        .hint("curl -X POST {url}/canary/rollout")
        .hint(r#"curl -X POST {url}/faults/canary -H 'content-type: application/json' -d '{"errorRate":0.2}'"#)
}
