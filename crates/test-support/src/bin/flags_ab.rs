//! A cluster that mounts the feature-flag and A/B-test routes exactly as a lesson does, for their
//! integration tests (`tests/flags.rs`, `tests/ab.rs`).
//!
//! Run with `cargo run -p test-support --bin flags_ab`. Settings besides the runtime's:
//! `FLAGS_FILE` (default: `flags-ab-flags.json` in the system's temporary directory),
//! `FLAGS_POLL_MS`, `AB_EXPERIMENT`, `AB_SALT`, `AB_SPLIT`, `AB_MAX_USERS`.
//!
//! The master answers `/flags…` and `/ab/status|convert|variant`; each worker serves
//! `GET /feature/{key}?user=U` (the flag through its `FlagClient`) and `GET /ab/page` (the variant
//! of the user in `X-User-Id`), and the master counts the page's exposures as it routes them
//! (`ab::Exposing`). A lesson mounts them with these same lines.

use std::process::ExitCode;
use std::sync::Arc;

use common::Cluster;
use common::ab::{self, AbSettings, AbTest};
use common::balance::RoundRobin;
use common::config::{self, Config, Defaults, ProcessEnv};
use common::flags::{self, FlagSettings};

fn main() -> ExitCode {
    let config = Config::from_env_or_exit(Defaults {
        workers: 2,
        port: 8000,
    });
    let default_file = std::env::temp_dir().join("flags-ab-flags.json");
    let flag_settings = FlagSettings::from_source(&ProcessEnv, &default_file.to_string_lossy())
        .unwrap_or_else(|e| config::exit_bad_config(&e));
    let ab_settings =
        AbSettings::from_source(&ProcessEnv).unwrap_or_else(|e| config::exit_bad_config(&e));
    // The master's store is opened before anything is bound: a corrupt file exits 2.
    let store = (!common::is_worker()).then(|| {
        flag_settings
            .open_store()
            .unwrap_or_else(|e| config::exit_bad_config(&e))
    });
    let ab = Arc::new(AbTest::new(ab_settings));
    let worker_ab = ab.clone();
    let banner = format!(
        "{} (workers reload it every {:?})",
        flag_settings.path.display(),
        flag_settings.poll
    );
    Cluster::new("flags-ab", config)
        .worker(move |ctx| {
            let client = flag_settings
                .client()
                .unwrap_or_else(|e| config::exit_bad_config(&e));
            flags::worker_routes(client, ctx.id).merge(ab::page_routes(worker_ab.clone(), ctx.id))
        })
        .selector(ab::Exposing::new(
            ab.clone(),
            ab::PAGE_PATH,
            RoundRobin::default(),
        ))
        .master(move |_| {
            let store = store.expect("the master opened its store");
            flags::routes(store).merge(ab::routes(ab))
        })
        .banner_line("flags", banner)
        .run()
}
