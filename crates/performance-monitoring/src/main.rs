//! Lesson 03: performance monitoring.
//!
//! Run with `cargo run -p performance-monitoring`, then:
//!
//! ```text
//! open http://localhost:8000/dashboard
//! curl localhost:8000/metrics
//! curl localhost:8000/metrics/prometheus
//! curl localhost:8000/alerts
//! curl 'localhost:8000/history?seconds=60'
//! ```
//!
//! Give it traffic with `ab -n 2000 -c 20 localhost:8000/work` and watch the dashboard move.

use std::process::ExitCode;

use common::config::cpu_count;

fn main() -> ExitCode {
    // The course runs min(4, CPUs) workers.
    let config = common::cluster::config_with_workers(cpu_count().min(4));
    let settings = performance_monitoring::Settings::from_env_or_exit();
    performance_monitoring::cluster(config, settings).run()
}
