//! What trips the breaker and how long it stays open, with defaults set against resilience4j's and
//! the Node original's, and the `BREAKER_*` variables that change them.

use std::time::Duration;

use crate::config::{self, ConfigError, Source};

/// What the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last N calls (resilience4j's `COUNT_BASED`).
    Count(u32),
    /// The calls of the last N seconds, kept in one-second buckets (resilience4j's `TIME_BASED`).
    Time(u32),
}

/// Who owns the breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each worker trips on its own traffic: the original's behaviour, and its bug (a breaker
    /// keyed per worker opened for healthy routes too).
    Worker,
    /// The master holds one breaker per service for the whole cluster; workers report outcomes
    /// and obey its state.
    Cluster,
    /// No breaker trips: every breaker is `DISABLED`, so calls go straight through. For
    /// measuring what the breakers cost, and for showing what happens without them.
    Off,
}

/// A breaker's rules. Each trip rule is an `Option`: `None` turns it off.
///
/// | field | default | resilience4j | Node original |
/// |---|---|---|---|
/// | `failure_rate_threshold` | 50 % | 50 % | — |
/// | `consecutive_failures` | 5 | — | `failureThreshold` 5 |
/// | `slow_call_rate_threshold` | 100 % | 100 % | — |
/// | `slow_call_duration` | off | 60 s | — |
/// | `window` | last 100 calls | last 100 calls | — |
/// | `minimum_calls` | 10 | 100 | — |
/// | `wait_in_open` | 10 s, doubling to 60 s | 60 s, fixed | `timeout` 10 s, fixed |
/// | `half_open_calls` | 3 | 10 | `halfOpenMaxAttempts` 3 (never enforced) |
/// | `half_open_success_ratio` | 1.0 (3 of 3) | below the failure-rate threshold | `successThreshold` 3 |
/// | `max_wait_in_half_open` | 30 s | 0 (wait forever) | — |
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// `BREAKER_FAILURE_RATE` (percent; 0 turns it off): open when at least this share of the
    /// window's calls failed, once `minimum_calls` were seen.
    pub failure_rate_threshold: Option<f64>,
    /// Open after this many failures in a row, whatever the window says. Catches a service that
    /// just died faster than a rate over 100 calls would, which is what the original did.
    pub consecutive_failures: Option<u32>,
    /// Open when at least this share (percent) of the window's calls were slow. A service that
    /// answers in 20 s is as unavailable as one that refuses, and worse for the caller's threads.
    pub slow_call_rate_threshold: Option<f64>,
    /// `BREAKER_SLOW_CALL_MS` (unset or 0: off): a call slower than this counts as slow. Off by
    /// default because timing every call costs two clock reads, more than the rest of the
    /// breaker together (measured in `benches/breaker.rs`), and the edge's `UPSTREAM_TIMEOUT`
    /// already turns a hung call into a failure. Turn it on for services that slow down before
    /// they fail.
    pub slow_call_duration: Option<Duration>,
    /// `BREAKER_WINDOW`: `100` for the last 100 calls, `60s` for the last 60 seconds.
    pub window: SlidingWindow,
    /// `BREAKER_MIN_CALLS`: rates are not judged on fewer calls than this (two failures out of
    /// three calls is no evidence). Capped at a count window's size.
    pub minimum_calls: u32,
    /// `BREAKER_WAIT_IN_OPEN` (ms): how long the first open lasts before probes are let through.
    pub wait_in_open: Duration,
    /// Each open that follows a failed half-open round waits this many times longer than the one
    /// before, so a service that is still down is probed less and less often.
    pub wait_in_open_multiplier: f64,
    /// No open lasts longer than this, so recovery is noticed within a bounded time.
    pub max_wait_in_open: Duration,
    /// `BREAKER_HALF_OPEN_CALLS`: probes let through in half-open; other calls are refused as if
    /// open, so a recovering service is not flooded.
    pub half_open_calls: u32,
    /// Share of the probes that must succeed to close; a probe that is slow counts as failed
    /// when the slow-call rule is on. One lucky probe must not close a flapping service.
    pub half_open_success_ratio: f64,
    /// Reopen when the probes have not all finished by then: a hung probe must not keep the
    /// breaker half-open, refusing everything else, forever (resilience4j's "stuck" bug).
    pub max_wait_in_half_open: Duration,
    /// `BREAKER_SCOPE` = `worker`, `cluster` (default) or `off`: who owns the state.
    pub scope: Scope,
    /// Transitions kept for `/circuit-status`; older ones are dropped.
    pub history: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: Some(50.0),
            consecutive_failures: Some(5),
            slow_call_rate_threshold: Some(100.0),
            slow_call_duration: None,
            window: SlidingWindow::Count(100),
            minimum_calls: 10,
            wait_in_open: Duration::from_secs(10),
            wait_in_open_multiplier: 2.0,
            max_wait_in_open: Duration::from_secs(60),
            half_open_calls: 3,
            half_open_success_ratio: 1.0,
            max_wait_in_half_open: Duration::from_secs(30),
            scope: Scope::Cluster,
            history: 50,
        }
    }
}

impl BreakerConfig {
    /// Reads the `BREAKER_*` variables from `src`; unset ones keep their default.
    pub fn from_env(src: &impl Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let failure_rate_threshold = config::var(
            src,
            "BREAKER_FAILURE_RATE",
            "a percent from 1 to 100, or 0 to turn the rule off",
            parse_percent,
        )?
        .unwrap_or(d.failure_rate_threshold);
        let slow_call_duration = config::var(
            src,
            "BREAKER_SLOW_CALL_MS",
            "a duration in milliseconds (e.g. 60000), or 0 to turn the rule off",
            |s| {
                let ms = s.parse::<u64>().ok()?;
                Some((ms > 0).then(|| Duration::from_millis(ms)))
            },
        )?
        .unwrap_or(d.slow_call_duration);
        let window = config::var(
            src,
            "BREAKER_WINDOW",
            "a number of calls from 1 to 100000 (e.g. 100), or seconds from 1 to 3600 with an s (e.g. 60s)",
            parse_window,
        )?
        .unwrap_or(d.window);
        let scope = config::choice(
            src,
            "BREAKER_SCOPE",
            &[
                ("worker", Scope::Worker),
                ("cluster", Scope::Cluster),
                ("off", Scope::Off),
            ],
            d.scope,
        )?;
        let wait_in_open = config::duration_ms(
            src,
            "BREAKER_WAIT_IN_OPEN",
            d.wait_in_open,
            Duration::from_millis(1),
        )?;
        Ok(Self {
            failure_rate_threshold,
            slow_call_duration,
            window,
            scope,
            // A longer first wait than the cap would make the cap a lie.
            max_wait_in_open: d.max_wait_in_open.max(wait_in_open),
            wait_in_open,
            half_open_calls: config::number(
                src,
                "BREAKER_HALF_OPEN_CALLS",
                d.half_open_calls,
                1,
                1000,
            )?,
            minimum_calls: config::number(src, "BREAKER_MIN_CALLS", d.minimum_calls, 1, 1_000_000)?,
            ..d
        })
    }

    /// Calls a rate needs before it is judged: `minimum_calls`, but never more than a count
    /// window can hold (else the rate rule could never fire).
    pub(crate) fn effective_minimum_calls(&self) -> u32 {
        match self.window {
            SlidingWindow::Count(n) => self.minimum_calls.min(n.max(1)),
            SlidingWindow::Time(_) => self.minimum_calls,
        }
        .max(1)
    }

    /// Probe successes needed to close: the ratio of `half_open_calls`, rounded up, at least 1.
    pub(crate) fn probes_to_close(&self) -> u32 {
        let n = self.half_open_calls.max(1);
        let ratio = self.half_open_success_ratio.clamp(0.0, 1.0);
        // The epsilon keeps 2/3 of 3 at 2: the product is not always exact in binary.
        ((f64::from(n) * ratio - 1e-9).ceil() as u32).clamp(1, n)
    }

    /// How long the `opens`-th open in a row lasts (1 is the first).
    pub(crate) fn wait_for(&self, opens: u32) -> Duration {
        let exp = opens.saturating_sub(1).min(64) as i32;
        let factor = self.wait_in_open_multiplier.max(1.0).powi(exp);
        let max = self.max_wait_in_open.max(self.wait_in_open);
        let wait = self.wait_in_open.as_secs_f64() * factor;
        if wait.is_finite() && wait < max.as_secs_f64() {
            Duration::from_secs_f64(wait)
        } else {
            max
        }
    }
}

fn parse_percent(s: &str) -> Option<Option<f64>> {
    let p = s.trim_end_matches('%').parse::<f64>().ok()?;
    if p == 0.0 {
        Some(None)
    } else if p.is_finite() && (1.0..=100.0).contains(&p) {
        Some(Some(p))
    } else {
        None
    }
}

fn parse_window(s: &str) -> Option<SlidingWindow> {
    match s.strip_suffix('s') {
        Some(secs) => secs
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=3600).contains(n))
            .map(SlidingWindow::Time),
        None => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .map(SlidingWindow::Count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_give_the_documented_defaults() {
        let cfg = BreakerConfig::from_env(&[]).expect("no variables set");
        assert_eq!(cfg, BreakerConfig::default());
        assert_eq!(cfg.scope, Scope::Cluster);
    }

    #[test]
    fn every_variable_is_read() {
        let cfg = BreakerConfig::from_env(&[
            ("BREAKER_WAIT_IN_OPEN", "2500"),
            ("BREAKER_HALF_OPEN_CALLS", "5"),
            ("BREAKER_MIN_CALLS", "20"),
            ("BREAKER_FAILURE_RATE", "25"),
            ("BREAKER_WINDOW", "30s"),
            ("BREAKER_SLOW_CALL_MS", "1500"),
            ("BREAKER_SCOPE", "worker"),
        ])
        .expect("all valid");
        assert_eq!(cfg.wait_in_open, Duration::from_millis(2500));
        assert_eq!(cfg.half_open_calls, 5);
        assert_eq!(cfg.minimum_calls, 20);
        assert_eq!(cfg.failure_rate_threshold, Some(25.0));
        assert_eq!(cfg.window, SlidingWindow::Time(30));
        assert_eq!(cfg.slow_call_duration, Some(Duration::from_millis(1500)));
        assert_eq!(cfg.scope, Scope::Worker);
        let cfg =
            BreakerConfig::from_env(&[("BREAKER_WINDOW", "50"), ("BREAKER_FAILURE_RATE", "0")])
                .expect("valid");
        assert_eq!(cfg.window, SlidingWindow::Count(50));
        assert_eq!(cfg.failure_rate_threshold, None);
        let cfg = BreakerConfig::from_env(&[("BREAKER_SLOW_CALL_MS", "0")]).expect("valid");
        assert_eq!(
            cfg.slow_call_duration, None,
            "0 turns the slow-call rule off"
        );
    }

    #[test]
    fn a_bad_value_names_the_variable_and_what_it_accepts() {
        let cases = [
            ("BREAKER_WAIT_IN_OPEN", "10s"),
            ("BREAKER_HALF_OPEN_CALLS", "0"),
            ("BREAKER_MIN_CALLS", "many"),
            ("BREAKER_FAILURE_RATE", "150"),
            ("BREAKER_WINDOW", "0s"),
            ("BREAKER_SLOW_CALL_MS", "-1"),
            ("BREAKER_SCOPE", "global"),
        ];
        for (var, value) in cases {
            let err = BreakerConfig::from_env(&[(var, value)])
                .expect_err(&format!("{var}={value} must be refused"));
            assert_eq!(err.var, var, "{var}={value}");
            assert_eq!(err.value, value, "{var}={value}");
        }
        let err = BreakerConfig::from_env(&[("BREAKER_SCOPE", "global")]).expect_err("bad scope");
        assert_eq!(
            err.to_string(),
            "invalid BREAKER_SCOPE=\"global\": expected worker, cluster or off"
        );
    }

    #[test]
    fn the_wait_in_open_doubles_up_to_its_cap() {
        let cfg = BreakerConfig::default();
        let secs: Vec<u64> = (1..=5).map(|n| cfg.wait_for(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 60, 60], "10 s doubling, capped at 60 s");
        assert_eq!(cfg.wait_for(u32::MAX), cfg.max_wait_in_open, "no overflow");
    }

    #[test]
    fn the_success_ratio_rounds_up_to_whole_probes() {
        let mut cfg = BreakerConfig {
            half_open_calls: 5,
            half_open_success_ratio: 0.5,
            ..Default::default()
        };
        assert_eq!(cfg.probes_to_close(), 3, "half of 5 probes, rounded up");
        cfg.half_open_success_ratio = 0.0;
        assert_eq!(cfg.probes_to_close(), 1, "at least one success");
        cfg.half_open_success_ratio = 1.0;
        assert_eq!(cfg.probes_to_close(), 5);
    }
}
