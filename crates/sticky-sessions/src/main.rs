//! Lesson 01: sticky sessions.
//!
//! Run with `cargo run -p sticky-sessions`, then:
//!
//! ```text
//! curl -c cookies.txt localhost:8000/
//! curl -b cookies.txt localhost:8000/session
//! curl localhost:8000/sticky-stats
//! ```
//!
//! `SESSION_STORE=redis://127.0.0.1:6379` keeps sessions in Redis instead of worker memory.

use std::process::ExitCode;

use common::config::cpu_count;
use sticky_sessions::Settings;

fn main() -> ExitCode {
    // The course runs min(4, CPUs) workers.
    let config = common::cluster::config_with_workers(cpu_count().min(4));
    let settings = Settings::from_env_or_exit();
    // Only the master checks the store: a worker re-run in a crash loop must not hammer Redis, and a
    // worker that finds Redis down answers 503 until it is back rather than dying.
    if !common::is_worker()
        && let Err(e) = settings.check_store()
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    sticky_sessions::cluster(config, settings).run()
}
