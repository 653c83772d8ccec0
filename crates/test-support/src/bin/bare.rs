//! A cluster whose workers have no routes of their own: what every lesson's workers get from
//! `common` alone (`/ping`, `/download`, `/echo`, `/slow`, `/ws`). The tests of those routes and
//! the benchmarks' body, stream and WebSocket workloads run against it.

use std::process::ExitCode;

use axum::Router;
use common::Cluster;
use common::config::{Config, Defaults};

fn main() -> ExitCode {
    let config = Config::from_env_or_exit(Defaults {
        workers: 2,
        port: 8000,
    });
    Cluster::new("bare", config).worker(|_| Router::new()).run()
}
