//! Run with `cargo run -p circuit-breaker`, then:
//!
//! ```text
//! for i in $(seq 10); do curl -s localhost:8000/api/fail; done; curl localhost:8000/
//! curl localhost:8000/circuit-status | jq
//! curl -X POST localhost:8000/circuit-reset
//! curl -X POST localhost:8000/faults/payments -H 'content-type: application/json' -d '{"down":true}'
//! ```
//!
//! `BREAKER_WAIT_IN_OPEN` (ms), `BREAKER_HALF_OPEN_CALLS`, `BREAKER_MIN_CALLS`,
//! `BREAKER_FAILURE_RATE`, `BREAKER_WINDOW`, `BREAKER_SLOW_CALL_MS`; `BREAKER_SCOPE=cluster`
//! (the default: one breaker per service in the master, obeyed by every worker) or `worker`
//! (each worker trips on its own calls).

use std::process::ExitCode;

use circuit_breaker::{Role, Settings, services};
use common::config::{self, cpu_count};

fn main() -> ExitCode {
    // Settings first: a bad value exits 2 before anything is bound.
    let config = common::cluster::config_with_workers(cpu_count().min(4));
    let settings = Settings::from_env_or_exit();
    let role = if common::is_worker() {
        let addrs = services::Addresses::from_source(&config::ProcessEnv);
        Role::Worker(addrs.unwrap_or_else(|e| config::exit_bad_config(&e)))
    } else {
        match services::start() {
            Ok(s) => Role::Master(s),
            Err(e) => {
                eprintln!("error: cannot start the downstream services: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    circuit_breaker::cluster(config, settings, role).run()
}
