//! [`Deployment`]: the master's side of every strategy. It owns the traffic split, the per-pool
//! windows and the rollout's state, and drives the pools through the cluster handle.
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
use common::balance::split::SplitState;
use common::metrics::{PoolStats, PoolWindows};
use common::supervisor::PoolSpec;
use common::{ClusterEvent, ClusterHandle, SlotState};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Settings;
use crate::analysis::{self, Outcome, Verdict};
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

    /// Scales `pool` to `n` and waits for `n` Ready workers. A worker of the pool that exits
    /// on the way fails it at once (a build that cannot start is not waited on until
    /// `START_TIMEOUT`), and the pool is scaled back to 0.
    async fn start_pool(&self, pool: usize, n: usize, name: &str) -> Result<(), Refused> {
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

    /// `POST /deploy/rolling`: replaces `pool`'s workers one by one, `ROLLING_PAUSE_MS` apart;
    /// with `build: "canary"` they run the canary's build (`CANARY_BIN`, `CANARY_VERSION`). A
    /// worker that fails its readiness aborts the roll, and the slots not reached keep serving.
    pub async fn rolling(&self, pool: usize, canary_build: bool) -> Result<Value, Refused> {
        let _busy = self.begin()?;
        if pool > 1 {
            return Err(refused(400, "pool must be stable or canary"));
        }
        let name = if pool == self.roles().0 {
            "stable"
        } else {
            "canary"
        };
        if canary_build {
            self.handle
                .set_pool(pool, self.canary_spec(name))
                .await
                .map_err(|e| refused(500, e.to_string()))?;
        }
        let started = Instant::now();
        let result = self
            .handle
            .rolling_restart_pool(Some(pool), self.settings.rolling_pause)
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let report = match &result {
            Ok(replaced) => {
                if canary_build {
                    self.state().versions[pool] = self.settings.canary_version.clone();
                }
                json!({ "strategy": "rolling", "pool": name, "ok": true, "replaced": replaced, "seconds": seconds })
            }
            Err(e) => json!({ "strategy": "rolling", "pool": name, "ok": false, "aborted": true,
                              "error": e.to_string(), "seconds": seconds }),
        };
        self.state().last_deploy = Some(report.clone());
        match result {
            Ok(_) => Ok(report),
            Err(e) => Err(refused(
                502,
                format!("rolling deployment aborted: {e}; the old workers keep serving"),
            )),
        }
    }

    /// `POST /deploy/blue-green`: starts the idle colour with as many workers as the live one,
    /// running the canary's build; checks `/health` of every one of them; then switches all
    /// traffic in one atomic store. The old colour stays warm `BLUE_GREEN_KEEP_SECONDS`.
    pub async fn blue_green(self: &Arc<Self>) -> Result<Value, Refused> {
        let _busy = self.begin()?;
        if self.split.state().percent != 0
            || matches!(
                self.state().mode,
                Mode::Manual | Mode::RollingOut | Mode::Paused
            )
        {
            return Err(refused(
                409,
                "a canary rollout is running: roll it back first",
            ));
        }
        let (live, idle) = self.roles();
        let size = self.ready_in(live).len().max(1);
        let colour = colour(idle);
        let io = |e: common::BoxError| refused(500, e.to_string());
        let started = Instant::now();
        self.handle
            .set_pool(idle, self.canary_spec(colour))
            .await
            .map_err(io)?;
        // Fresh processes of the new build: whatever ran in the idle pool before goes.
        self.handle.scale_pool(idle, 0).await.map_err(io)?;
        let drained = self
            .wait(|| self.handle.pool_workers(idle).is_empty(), START_TIMEOUT)
            .await;
        if !drained {
            return Err(refused(503, "the idle pool's old workers did not stop"));
        }
        self.start_pool(idle, size, colour).await?;
        for slot in self.ready_in(idle) {
            match self.handle.probe(slot, "/health", ASK_TIMEOUT).await {
                Ok((200, _)) => {}
                other => {
                    let _ = self.handle.scale_pool(idle, 0).await;
                    let why = match other {
                        Ok((status, _)) => format!("answered {status}"),
                        Err(e) => e.to_string(),
                    };
                    return Err(refused(
                        502,
                        format!(
                            "{colour} worker {slot} failed its health check ({why}); nothing was switched"
                        ),
                    ));
                }
            }
        }
        self.state().versions[idle] = self.settings.canary_version.clone();
        let report = self.switch(idle, live, started);
        Ok(report)
    }

    /// `POST /deploy/switch-back`: back to the previous colour, at once, while it is warm.
    pub fn switch_back(self: &Arc<Self>) -> Result<Value, Refused> {
        let (live, old) = self.roles();
        if self.ready_in(old).is_empty() {
            return Err(refused(409, "the previous colour is no longer running"));
        }
        if self.split.state().percent != 0 {
            return Err(refused(409, "a canary rollout is running"));
        }
        Ok(self.switch(old, live, Instant::now()))
    }

    /// Makes `to` primary in one store; stops `from` after `BLUE_GREEN_KEEP_SECONDS` unless
    /// another switch came first.
    fn switch(self: &Arc<Self>, to: usize, from: usize, started: Instant) -> Value {
        self.split.set(SplitState {
            percent: 0,
            primary: to,
            secondary: from,
        });
        let switches = {
            let mut s = self.state();
            s.switches += 1;
            s.switches
        };
        tracing::info!(live = colour(to), "blue-green switch");
        let me = self.clone();
        let keep = self.settings.keep_warm;
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            let current = me.state().switches == switches;
            if current && me.split.state().primary == to {
                tracing::info!(pool = colour(from), "blue-green: stopping the old colour");
                let _ = me.handle.scale_pool(from, 0).await;
            }
        });
        let report = json!({
            "strategy": "blue-green",
            "ok": true,
            "live": colour(to),
            "liveVersion": self.state().versions[to],
            "previous": colour(from),
            "keptWarmSeconds": keep.as_secs_f64(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        self.state().last_deploy = Some(report.clone());
        report
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
