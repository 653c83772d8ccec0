//! The lesson's settings, from the environment; a bad value exits 2 naming the variable.

use std::path::PathBuf;
use std::time::Duration;

use common::ab::AbSettings;
use common::config::{self, ConfigError, Source};
use common::flags::FlagSettings;

use crate::analysis::Rules;

/// Everything the lesson reads besides the runtime's own variables (`PORT`, `WORKERS`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `APP_VERSION`: what the stable pool runs (`v1.0.0`).
    pub stable_version: String,
    /// `CANARY_VERSION`: what the canary pool runs (`v2.0.0`).
    pub canary_version: String,
    /// `CANARY_BIN`: the canary's binary, when it is other code and not only another label.
    pub canary_bin: Option<PathBuf>,
    /// `CANARY_WORKERS`: the canary pool's size (1).
    pub canary_workers: usize,
    /// `CANARY_STEPS`: the percentages of a rollout, rising, the last 100 (`10,25,50,75,100`).
    pub steps: Vec<u8>,
    /// `CANARY_STEP_SECONDS`: the shortest a step lasts (30; decimals allowed).
    pub step: Duration,
    /// `CANARY_MIN_REQUESTS` and the thresholds (`CANARY_ERROR_FLOOR`, `CANARY_P95_FLOOR_MS`).
    pub rules: Rules,
    /// `CANARY_SALT`: the secret users are bucketed with; drawn at start when unset.
    pub salt: Option<String>,
    /// `BLUE_GREEN_KEEP_SECONDS`: how long the old colour stays warm after a switch (60).
    pub keep_warm: Duration,
    /// `ROLLING_PAUSE_MS`: the pause between slots of a rolling deployment (1000).
    pub rolling_pause: Duration,
    /// `FLAGS_FILE` (default [`FLAGS_FILE`], in the directory the cluster runs from) and
    /// `FLAGS_POLL_MS`: where the master keeps the feature flags the workers read.
    pub flags: FlagSettings,
    /// `AB_EXPERIMENT`, `AB_SALT`, `AB_SPLIT`, `AB_MAX_USERS`: the A/B test.
    pub ab: AbSettings,
}

/// The flags file when `FLAGS_FILE` is unset.
pub const FLAGS_FILE: &str = "flags.json";

impl Settings {
    /// Reads the process environment; on a bad value prints the reason and exits with status 2.
    pub fn from_env_or_exit() -> Self {
        Self::from_source(&config::ProcessEnv).unwrap_or_else(|e| config::exit_bad_config(&e))
    }

    /// Reads every variable from `src`.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let version = |name: &str, default: &str| {
            Ok::<_, ConfigError>(
                config::var(
                    src,
                    name,
                    "a version label of 1 to 64 letters, digits, '.', '-' or '_'",
                    |s| valid_version(s).then(|| s.to_string()),
                )?
                .unwrap_or_else(|| default.to_string()),
            )
        };
        let seconds = |name: &str, default: f64| {
            Ok::<_, ConfigError>(Duration::from_secs_f64(
                config::var(src, name, "a number of seconds from 0.1 to 86400", |s| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|n| (0.1..=86_400.0).contains(n))
                })?
                .unwrap_or(default),
            ))
        };
        let fraction = |name: &str, default: f64, max: f64| {
            Ok::<_, ConfigError>(
                config::var(src, name, &format!("a number from 0 to {max}"), |s| {
                    s.parse::<f64>().ok().filter(|n| (0.0..=max).contains(n))
                })?
                .unwrap_or(default),
            )
        };
        let defaults = Rules::default();
        Ok(Self {
            stable_version: version("APP_VERSION", "v1.0.0")?,
            canary_version: version("CANARY_VERSION", "v2.0.0")?,
            canary_bin: config::var(src, "CANARY_BIN", "the path of an existing file", |s| {
                let path = PathBuf::from(s);
                path.is_file().then_some(path)
            })?,
            canary_workers: config::number(src, "CANARY_WORKERS", 1, 0, 64)?,
            steps: config::var(
                src,
                "CANARY_STEPS",
                "rising percentages from 1 to 100 ending with 100, e.g. 10,25,50,75,100",
                parse_steps,
            )?
            .unwrap_or_else(|| vec![10, 25, 50, 75, 100]),
            step: seconds("CANARY_STEP_SECONDS", 30.0)?,
            rules: Rules {
                min_requests: config::number(src, "CANARY_MIN_REQUESTS", 50, 1, 1_000_000)?,
                error_floor: fraction("CANARY_ERROR_FLOOR", defaults.error_floor, 1.0)?,
                p95_floor_ms: fraction("CANARY_P95_FLOOR_MS", defaults.p95_floor_ms, 60_000.0)?,
                ..defaults
            },
            salt: config::var(src, "CANARY_SALT", "8 to 256 characters", |s| {
                (8..=256).contains(&s.len()).then(|| s.to_string())
            })?,
            keep_warm: seconds("BLUE_GREEN_KEEP_SECONDS", 60.0)?,
            rolling_pause: config::duration_ms(
                src,
                "ROLLING_PAUSE_MS",
                Duration::from_millis(1000),
                Duration::ZERO,
            )?,
            flags: FlagSettings::from_source(src, FLAGS_FILE)?,
            ab: AbSettings::from_source(src)?,
        })
    }
}

/// Whether `s` can be a version label (it goes into a response header and a log line).
pub fn valid_version(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn parse_steps(s: &str) -> Option<Vec<u8>> {
    let steps: Vec<u8> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u8>()
                .ok()
                .filter(|n| (1..=100).contains(n))
        })
        .collect::<Option<_>>()?;
    let rising = steps.windows(2).all(|w| w[0] < w[1]);
    (rising && steps.last() == Some(&100) && steps.len() <= 20).then_some(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds_steps_and_versions() {
        let s = Settings::from_source(&[]).expect("defaults are valid");
        assert_eq!(s.steps, [10, 25, 50, 75, 100]);
        assert_eq!(
            (s.stable_version.as_str(), s.canary_version.as_str()),
            ("v1.0.0", "v2.0.0")
        );
        assert_eq!(s.step, Duration::from_secs(30));
    }

    #[test]
    fn steps_must_rise_and_end_at_a_hundred() {
        for bad in ["10,5,100", "10,50", "0,100", "10,,100", "10,101"] {
            let err = Settings::from_source(&[("CANARY_STEPS", bad)]).expect_err(bad);
            assert_eq!(err.var, "CANARY_STEPS");
        }
        let s = Settings::from_source(&[("CANARY_STEPS", "5, 50,100")]).expect("valid");
        assert_eq!(s.steps, [5, 50, 100]);
    }

    #[test]
    fn a_version_label_that_cannot_be_a_header_is_refused() {
        let err = Settings::from_source(&[("CANARY_VERSION", "v2 beta")]).expect_err("space");
        assert_eq!(err.var, "CANARY_VERSION");
    }
}
