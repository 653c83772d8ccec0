//! Rolling and blue-green deployments, through the same pools.

use std::sync::Arc;
use std::time::Instant;

use common::balance::split::SplitState;
use serde_json::{Value, json};

use super::{ASK_TIMEOUT, Deployment, Mode, Refused, START_TIMEOUT, colour, refused};

impl Deployment {
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
}
