//! The canary rollout: steps moved by hand or by the analysis, the verdict at every look,
//! the rollback and the promotion.

use std::sync::Arc;
use std::time::Duration;

use super::{Deployment, Mode, Refused, refused};
use crate::analysis::{self, Outcome};
use crate::worker::FaultKnob;
use serde_json::json;

impl Deployment {
    /// `POST /canary/increase`: the next step of `CANARY_STEPS`.
    pub async fn increase(&self) -> Result<u8, Refused> {
        let _busy = self.begin()?;
        self.check_canary_possible()?;
        self.ensure_canary().await?;
        let mut s = self.state();
        let next = s.step.map_or(0, |i| i + 1);
        if next >= self.settings.steps.len() {
            return Err(refused(
                409,
                "the canary is at 100%: promote it (POST /canary/promote)",
            ));
        }
        self.record(&mut s, "manual");
        s.mode = Mode::Manual;
        self.enter_step(&mut s, next);
        Ok(self.settings.steps[next])
    }

    /// `POST /canary/rollout`: the steps from here on, moved by the analysis.
    pub async fn rollout(&self) -> Result<u8, Refused> {
        let _busy = self.begin()?;
        self.check_canary_possible()?;
        self.ensure_canary().await?;
        let mut s = self.state();
        s.mode = Mode::RollingOut;
        if s.step.is_none() {
            self.enter_step(&mut s, 0);
        }
        Ok(self.split.state().percent)
    }

    fn check_canary_possible(&self) -> Result<(), Refused> {
        let s = self.state();
        match s.mode {
            Mode::Promoting => Err(refused(409, "a promotion is running")),
            Mode::Promoted => Err(refused(
                409,
                "the canary version was promoted: it is the stable version now",
            )),
            _ => Ok(()),
        }
    }

    /// `POST /canary/pause`.
    pub fn pause(&self) -> Result<(), Refused> {
        let mut s = self.state();
        match s.mode {
            Mode::RollingOut | Mode::Manual => {
                s.mode = Mode::Paused;
                Ok(())
            }
            _ => Err(refused(409, "no canary rollout is running")),
        }
    }

    /// `POST /canary/rollback`, or an unhealthy verdict: everyone to stable at once, then the
    /// canary workers drain (their in-flight requests finish).
    pub async fn rollback(&self, why: &'static str) -> Result<(), Refused> {
        {
            let mut s = self.state();
            if s.mode == Mode::Promoting {
                return Err(refused(409, "a promotion is running"));
            }
            self.record(&mut s, why);
            self.split.set_percent(0);
            s.step = None;
            s.mode = Mode::RolledBack;
        }
        tracing::warn!(
            reason = why,
            "canary rolled back: every user is on the stable pool"
        );
        let (_, canary) = self.roles();
        self.handle
            .scale_pool(canary, 0)
            .await
            .map_err(|e| refused(500, e.to_string()))
    }

    /// `POST /canary/promote` (or the rollout's last step): the stable pool is replaced by the
    /// canary version with a readiness-gated rolling restart while the canary serves everyone;
    /// then everyone moves to the new stable workers and the canary pool drains.
    pub async fn promote(&self) -> Result<(), Refused> {
        let _busy = self.begin()?;
        let (stable, canary) = self.roles();
        {
            let mut s = self.state();
            if !matches!(s.mode, Mode::Manual | Mode::RollingOut | Mode::Paused) {
                return Err(refused(
                    409,
                    "no canary is rolling out (POST /canary/increase or /canary/rollout first)",
                ));
            }
            if self.ready_in(canary).is_empty() {
                return Err(refused(409, "no canary is running"));
            }
            self.record(&mut s, "promoted");
            s.mode = Mode::Promoting;
            // All traffic on the canary while the stable pool's workers are replaced.
            self.split.set_percent(100);
        }
        let io = |e: common::BoxError| refused(500, e.to_string());
        self.handle
            .set_pool(stable, self.canary_spec("stable"))
            .await
            .map_err(io)?;
        let rolled = self
            .handle
            .rolling_restart_pool(Some(stable), self.settings.rolling_pause)
            .await;
        if let Err(e) = rolled {
            // The canary keeps serving everyone; the operator decides.
            let mut s = self.state();
            s.mode = Mode::Paused;
            s.last_deploy =
                Some(json!({ "strategy": "promotion", "ok": false, "error": e.to_string() }));
            return Err(refused(500, format!("promotion stopped: {e}")));
        }
        {
            let mut s = self.state();
            self.split.set_percent(0);
            s.versions[stable] = self.settings.canary_version.clone();
            s.step = None;
            s.mode = Mode::Promoted;
            s.last_verdict = None;
            self.windows.reset();
            s.last_deploy = Some(json!({ "strategy": "promotion", "ok": true }));
        }
        tracing::info!(version = %self.settings.canary_version, "canary promoted");
        self.handle.scale_pool(canary, 0).await.map_err(io)
    }

    /// `POST /faults/canary`.
    pub async fn set_faults(&self, knob: FaultKnob) {
        self.state().faults = knob;
        self.push_faults(knob).await;
    }

    /// One look at the running step: judge it, then hold, advance, roll back or promote.
    pub async fn evaluate(&self) {
        enum Next {
            Nothing,
            Rollback,
            Promote,
        }
        let next = {
            let mut s = self.state();
            if !matches!(s.mode, Mode::RollingOut | Mode::Manual) || s.busy {
                return;
            }
            let Some(index) = s.step else {
                return;
            };
            let (stable_pool, canary_pool) = self.roles();
            let percent = self.settings.steps[index];
            let canary = self.windows.stats(canary_pool);
            let mut stable = self.windows.stats(stable_pool);
            if stable.requests >= self.settings.rules.min_requests {
                s.baseline = Some(stable);
            } else if percent == 100
                && let Some(baseline) = s.baseline
            {
                // At 100% the stable pool gets no traffic: judge against its last full window.
                stable = baseline;
            }
            let verdict = analysis::judge(&stable, &canary, &self.settings.rules);
            let outcome = verdict.outcome;
            s.last_verdict = Some(verdict);
            let step_over = s.step_started.elapsed() >= self.settings.step;
            match outcome {
                Outcome::Unhealthy => Next::Rollback,
                Outcome::Healthy if step_over && s.mode == Mode::RollingOut => {
                    if index + 1 < self.settings.steps.len() {
                        self.record(&mut s, "passed");
                        self.enter_step(&mut s, index + 1);
                        Next::Nothing
                    } else {
                        Next::Promote
                    }
                }
                _ => Next::Nothing,
            }
        };
        match next {
            Next::Nothing => {}
            Next::Rollback => {
                let _ = self.rollback("rolledBack").await;
            }
            Next::Promote => {
                if let Err(e) = self.promote().await {
                    tracing::error!(error = %e.message, "promotion failed");
                }
            }
        }
    }

    /// Runs the analysis every 100 ms, for the life of the master.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.evaluate().await;
        }
    }
}
