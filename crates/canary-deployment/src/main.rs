//! Run with `cargo run -p canary-deployment`, then:
//!
//! ```text
//! for i in $(seq 20); do curl -s -H "X-User-Id: user-$i" localhost:8000/ | jq -c .; done
//! curl -X POST localhost:8000/canary/increase        # 0 → 10%
//! curl -s localhost:8000/canary/status | jq .deployment
//! curl -X POST localhost:8000/canary/rollout         # the rest of CANARY_STEPS, by the analysis
//! curl -X POST localhost:8000/faults/canary -H 'content-type: application/json' -d '{"errorRate":0.2}'
//! curl -X POST localhost:8000/deploy/blue-green; curl -X POST localhost:8000/deploy/switch-back
//! curl -s -X POST localhost:8000/flags/new-ui -d '{"enabled": true, "percentage": 25}'
//! curl -s "localhost:8000/feature/new-ui?user=alice"
//! curl -s -H "X-User-Id: alice" localhost:8000/ab/page; curl -s localhost:8000/ab/status
//! ```
//!
//! `APP_VERSION`, `CANARY_VERSION`, `CANARY_BIN`, `CANARY_WORKERS`, `CANARY_STEPS`,
//! `CANARY_STEP_SECONDS`, `CANARY_MIN_REQUESTS`, `CANARY_ERROR_FLOOR`, `CANARY_P95_FLOOR_MS`,
//! `CANARY_SALT`, `BLUE_GREEN_KEEP_SECONDS`, `ROLLING_PAUSE_MS`; for the feature flags
//! `FLAGS_FILE` (default `flags.json`, in the directory the cluster runs from) and
//! `FLAGS_POLL_MS`; for the A/B test `AB_EXPERIMENT`, `AB_SALT`, `AB_SPLIT`, `AB_MAX_USERS`.

use std::process::ExitCode;

use canary_deployment::Settings;
use common::config::cpu_count;

fn main() -> ExitCode {
    // Settings first: a bad value exits 2 before anything is bound.
    let config = common::cluster::config_with_workers(cpu_count().min(4));
    let settings = Settings::from_env_or_exit();
    canary_deployment::cluster(config, settings).run()
}
