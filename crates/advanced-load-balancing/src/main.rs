//! Lesson 02: advanced load balancing.
//!
//! Run with `STRATEGY=least-response-time cargo run -p advanced-load-balancing`, then:
//!
//! ```text
//! curl localhost:8000/slow
//! curl -s localhost:8000/lb-stats | jq
//! curl -X POST localhost:8000/lb/strategy -d '{"strategy":"weighted"}'
//! curl -X POST localhost:8000/lb/fault -d '{"worker":2,"delayMs":50}'
//! ```
//!
//! Strategies: round-robin, least-connections (default), weighted (`WORKER_WEIGHTS=3,1`),
//! least-response-time, resource-based, power-of-two-choices (`P2C_SEED`), consistent-hash
//! (`HASH_HEADER`, default x-user-id).

use std::process::ExitCode;

use advanced_load_balancing::Settings;
use common::config::cpu_count;

fn main() -> ExitCode {
    let config = common::cluster::config_with_workers(cpu_count().min(4));
    let settings = Settings::from_env_or_exit();
    advanced_load_balancing::cluster(config, settings).run()
}
