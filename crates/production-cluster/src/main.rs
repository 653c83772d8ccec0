//! Run with `cargo run -p production-cluster`, then:
//!
//! ```text
//! curl localhost:8000/health/ready
//! curl -c jar -b jar localhost:8000/session
//! curl localhost:8000/metrics/prometheus
//! ADMIN_TOKEN=… RATE_LIMIT=100/min cargo run -p production-cluster
//! cargo run -p production-cluster -- --print-config
//! ```
//!
//! Settings come from the environment over an optional TOML file (`CONFIG=cluster.toml`); a bad
//! value exits 2 naming it.

use std::process::ExitCode;

use production_cluster::Loaded;

fn main() -> ExitCode {
    // Settings first: a bad value exits 2 before anything is bound.
    let loaded = Loaded::from_env_or_exit();
    if std::env::args().any(|a| a == "--print-config") {
        print!("{}", loaded.print_config());
        return ExitCode::SUCCESS;
    }
    // Only the master checks the store: a worker re-run in a crash loop must not hammer Redis.
    if !common::is_worker()
        && let Err(e) = loaded.settings.sessions.check_store()
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if !common::is_worker()
        && let Some(db) = &loaded.settings.database
        && let Err(e) = production_cluster::notes::check(db)
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    production_cluster::cluster(loaded).run()
}
