//! [`Deployment`]: the master's side of every strategy. It owns the traffic split, the per-pool
//! windows and the rollout's state, and drives the pools through the cluster handle.
//!
//! Layout: this file holds the state, the helpers every strategy uses and `/canary/status`;
//! `canary` the rollout (steps, verdicts, rollback, promotion); `strategies` rolling and
//! blue-green.
//!
//! Pools: 0 and 1. The split's primary pool is "stable" (everyone outside the percentage), its
//! secondary "canary". Blue-green reuses the two as the live and the idle colour and switches
//! which is primary.
//!
//! ```text
//!  canary:  idle ─increase/rollout─▶ step 10% ─healthy, step over─▶ 25% … 100% ─▶ promoting ─▶ promoted
//!                       │  not enough data: hold the step          │
//!                       └──── unhealthy (any step) ─▶ rolled back: 0%, canary workers drain
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::balance::TrafficSplit;
use common::metrics::{PoolStats, PoolWindows};
use common::supervisor::PoolSpec;
use common::{ClusterEvent, ClusterHandle, SlotState};
use serde::Serialize;
use serde_json::{Value, json};

mod canary;
mod strategies;

use crate::Settings;
use crate::analysis::{Outcome, Verdict};
use crate::worker::FaultKnob;

/// How many finished steps `/canary/status` keeps.
const HISTORY_KEPT: usize = 50;
/// How long starting a pool's workers may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a worker may take to answer the master's fault knob or health probe.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a canary rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// No canary traffic and nothing running.
    Idle,
    /// Steps moved by hand (`/canary/increase`); still rolled back when unhealthy.
    Manual,
    /// Steps moved by the analysis (`/canary/rollout`).
    RollingOut,
    /// Held by `/canary/pause`: the percentage stays, nothing advances, nothing rolls back.
    Paused,
    /// Back to 0% (by hand or by an unhealthy verdict).
    RolledBack,
    /// The stable pool is being replaced by the canary version.
    Promoting,
    /// The canary version is the stable one.
    Promoted,
}

/// One finished (or cut short) step, for the history.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub percent: u8,
    pub seconds: f64,
    /// What ended it: `passed`, `rolledBack`, `manual`, `promoted`…
    pub ended_by: &'static str,
    pub verdict: Option<Verdict>,
}

struct State {
    mode: Mode,
    /// The index in `CANARY_STEPS` of the current percentage, if any.
    step: Option<usize>,
    step_started: Instant,
    last_verdict: Option<Verdict>,
    /// The stable pool's figures from the last window it had enough traffic in: the baseline of
    /// the 100% step, where the stable pool gets none.
    baseline: Option<PoolStats>,
    history: VecDeque<StepRecord>,
    faults: FaultKnob,
    /// What each pool runs now (pool 0, pool 1).
    versions: [String; 2],
    /// Bumped by every blue-green switch, so a stale keep-warm timer does nothing.
    switches: u64,
    /// The last deploy (rolling, blue-green) and how it went.
    last_deploy: Option<Value>,
    busy: bool,
}

/// The deployment machinery of the master; cheap to share.
pub struct Deployment {
    handle: ClusterHandle,
    settings: Settings,
    split: Arc<TrafficSplit>,
    windows: Arc<PoolWindows>,
    state: Mutex<State>,
}

/// Why a deployment action was refused, with the HTTP status it maps to.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

fn refused(status: u16, message: impl Into<String>) -> Refused {
    Refused {
        status,
        message: message.into(),
    }
}

impl Deployment {
    /// The state at start: everyone on pool 0 (`APP_VERSION`), pool 1 warm with `CANARY_VERSION`.
    pub fn new(
        handle: ClusterHandle,
        settings: Settings,
        split: Arc<TrafficSplit>,
        windows: Arc<PoolWindows>,
    ) -> Arc<Self> {
        let versions = [
            settings.stable_version.clone(),
            settings.canary_version.clone(),
        ];
        Arc::new(Self {
            handle,
            settings,
            split,
            windows,
            state: Mutex::new(State {
                mode: Mode::Idle,
                step: None,
                step_started: Instant::now(),
                last_verdict: None,
                baseline: None,
                history: VecDeque::new(),
                faults: FaultKnob::default(),
                versions,
                switches: 0,
                last_deploy: None,
                busy: false,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pools' roles now: (stable, canary).
    fn roles(&self) -> (usize, usize) {
        let s = self.split.state();
        (s.primary, s.secondary)
    }

    /// The canary pool's spec: `CANARY_VERSION`, of `CANARY_BIN` if set.
    fn canary_spec(&self, name: &str) -> PoolSpec {
        let spec = PoolSpec::new(name, self.settings.canary_version.clone(), 0);
        match &self.settings.canary_bin {
            Some(bin) => spec.exe(bin.clone()),
            None => spec,
        }
    }

    fn ready_in(&self, pool: usize) -> Vec<usize> {
        self.handle
            .pool_workers(pool)
            .iter()
            .filter(|w| w.state == SlotState::Ready)
            .map(|w| w.id)
            .collect()
    }

    /// Takes the busy flag for a long action, refusing while another runs.
    fn begin(&self) -> Result<Busy<'_>, Refused> {
        let mut s = self.state();
        if s.busy {
            return Err(refused(409, "another deployment action is running"));
        }
        s.busy = true;
        Ok(Busy(self))
    }

    /// Makes sure the canary pool runs `CANARY_WORKERS` Ready workers of the canary version, with
    /// the current fault knob.
    async fn ensure_canary(&self) -> Result<(), Refused> {
        let (_, canary) = self.roles();
        let want = self.settings.canary_workers.max(1);
        let other_version = {
            let mut s = self.state();
            // A canary takes the secondary pool over: a blue-green keep-warm timer must not stop it.
            s.switches += 1;
            s.versions[canary] != self.settings.canary_version
        };
        if other_version || self.ready_in(canary).len() < want {
            let io = |e: common::BoxError| refused(500, e.to_string());
            if other_version {
                // The old colour of a blue-green switch, still warm: not the canary's version.
                self.handle.scale_pool(canary, 0).await.map_err(io)?;
                let drained = self
                    .wait(
                        || self.handle.pool_workers(canary).is_empty(),
                        START_TIMEOUT,
                    )
                    .await;
                if !drained {
                    return Err(refused(
                        503,
                        "the secondary pool's old workers did not stop",
                    ));
                }
            }
            self.handle
                .set_pool(canary, self.canary_spec("canary"))
                .await
                .map_err(io)?;
            self.start_pool(canary, want, "canary").await?;
            self.state().versions[canary] = self.settings.canary_version.clone();
        }
        let knob = self.state().faults;
        self.push_faults(knob).await;
        Ok(())
    }

    /// Scales `pool` to `n` and waits for `n` Ready workers, bringing the first one up alone.
    ///
    /// The first worker is a probe of the build: one that cannot start fails on one process
    /// rather than `n`, and the failure always names the pool's first slot. With `n` started
    /// together, which of several crashing processes is reaped first is a race.
    async fn start_pool(&self, pool: usize, n: usize, name: &str) -> Result<(), Refused> {
        self.grow_pool(pool, n.min(1), name).await?;
        if n > 1 {
            self.grow_pool(pool, n, name).await?;
        }
        Ok(())
    }

    /// Scales `pool` to `n` and waits for `n` Ready workers. A worker of the pool that exits
    /// on the way fails it at once (a build that cannot start is not waited on until
    /// `START_TIMEOUT`), and the pool is scaled back to 0.
    async fn grow_pool(&self, pool: usize, n: usize, name: &str) -> Result<(), Refused> {
        let mut events = self.handle.events();
        self.handle
            .scale_pool(pool, n)
            .await
            .map_err(|e| refused(500, e.to_string()))?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let failure = loop {
            if self.ready_in(pool).len() >= n {
                return Ok(());
            }
            let tick = tokio::time::sleep(Duration::from_millis(50));
            tokio::select! {
                ev = events.recv() => {
                    if let Ok(ClusterEvent::Exited { slot, code, signal, .. }) = ev
                        && self.handle.pool_workers(pool).iter().any(|w| w.id == slot)
                    {
                        break format!(
                            "a {name} worker (slot {slot}) exited before it was ready \
                             (code {code:?}, signal {signal:?})"
                        );
                    }
                }
                _ = tick => {}
            }
            if tokio::time::Instant::now() >= deadline {
                break format!("the {name} workers were not ready within {START_TIMEOUT:?}");
            }
        };
        let _ = self.handle.scale_pool(pool, 0).await;
        Err(refused(503, failure))
    }

    /// Sends the fault knob to every canary worker.
    async fn push_faults(&self, knob: FaultKnob) {
        let (_, canary) = self.roles();
        for slot in self.ready_in(canary) {
            let asked = self
                .handle
                .request(slot, json!({ "faults": knob }), ASK_TIMEOUT)
                .await;
            if let Err(e) = asked {
                tracing::warn!(slot, error = %e, "a canary worker did not take the fault knob");
            }
        }
    }

    /// Moves to step `index` of `CANARY_STEPS`: a fresh window, the new percentage.
    fn enter_step(&self, s: &mut State, index: usize) {
        s.step = Some(index);
        s.step_started = Instant::now();
        s.last_verdict = None;
        self.windows.reset();
        self.split.set_percent(self.settings.steps[index]);
        tracing::info!(percent = self.settings.steps[index], "canary step");
    }

    fn record(&self, s: &mut State, ended_by: &'static str) {
        let percent = self.split.state().percent;
        if percent == 0 && s.step.is_none() {
            return;
        }
        let seconds = s.step_started.elapsed().as_secs_f64();
        let verdict = s.last_verdict.clone();
        if s.history.len() == HISTORY_KEPT {
            s.history.pop_front();
        }
        s.history.push_back(StepRecord {
            percent,
            seconds,
            ended_by,
            verdict,
        });
    }

    async fn wait(&self, mut done: impl FnMut() -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done()
    }

    /// `GET /canary/status`: the original's fields, and what every verdict was made from.
    pub fn status(&self) -> Value {
        let s = self.state();
        let split = self.split.state();
        let (stable, canary) = (split.primary, split.secondary);
        let pool_stats = |pool: usize| {
            let st = self.windows.stats(pool);
            json!({
                "version": s.versions[pool],
                "requests": st.requests,
                "errors": st.errors,
                "errorRate": st.error_rate,
                "avgResponseTime": st.mean_ms,
                "p50": st.p50_ms,
                "p95": st.p95_ms,
                "p99": st.p99_ms,
                "requestsPerSecond": st.requests_per_second,
            })
        };
        let (st, ca) = (self.windows.stats(stable), self.windows.stats(canary));
        let step = s.step.map(|i| {
            json!({
                "index": i,
                "percent": self.settings.steps[i],
                "elapsedSeconds": s.step_started.elapsed().as_secs_f64(),
                "stepSeconds": self.settings.step.as_secs_f64(),
                "minRequests": self.settings.rules.min_requests,
            })
        });
        json!({
            "deployment": {
                "canaryPercentage": split.percent,
                "stableWorkers": self.ready_in(stable).len(),
                "canaryWorkers": self.ready_in(canary).len(),
                "isRollingOut": s.mode == Mode::RollingOut,
                // Rolled back, and the canary's workers are still draining their requests.
                "isRollingBack": s.mode == Mode::RolledBack
                    && !self.handle.pool_workers(canary).is_empty(),
                "autoRollbackEnabled": true,
                "mode": s.mode,
                "steps": self.settings.steps,
                "step": step,
            },
            "versions": { "stable": s.versions[stable], "canary": s.versions[canary] },
            "pools": { "stable": stable, "canary": canary, "live": colour(stable) },
            "metrics": { "stable": pool_stats(stable), "canary": pool_stats(canary) },
            "comparison": {
                "errorRateDiff": ca.error_rate - st.error_rate,
                "responseTimeDiff": ca.mean_ms - st.mean_ms,
                "p95Diff": ca.p95_ms - st.p95_ms,
                "canaryHealthy": s.last_verdict.as_ref().map(|v| v.outcome != Outcome::Unhealthy),
            },
            "rules": self.settings.rules,
            "verdict": s.last_verdict,
            "history": s.history,
            "faults": s.faults,
            "lastDeploy": s.last_deploy,
        })
    }
}

/// Pool 0 is blue, pool 1 green.
fn colour(pool: usize) -> &'static str {
    if pool == 0 { "blue" } else { "green" }
}

/// Held while a long action runs; gives the busy flag back on drop.
struct Busy<'a>(&'a Deployment);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.state().busy = false;
    }
}
