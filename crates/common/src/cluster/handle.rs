//! [`ClusterHandle`]: steers a running cluster from any task: events, worker info, scaling,
//! signals, IPC questions, rolling restarts, shutdown. Every method talks to the supervisor by
//! message, so a handle holds no lock of the supervisor's.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::health::{Health, HealthScorer};
use super::scaling::AutoscaleStatus;
use crate::edge::Ready;
use crate::error::BoxError;
use crate::metrics::ClusterView;
use crate::shutdown;
use crate::slot::{ClusterEvent, SlotState, WorkerInfo};
use crate::supervisor::{Command, Shared};

/// Steers a running cluster. Cheap to clone; every method works from any task.
#[derive(Clone)]
pub struct ClusterHandle {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    rolling: Arc<tokio::sync::Mutex<()>>,
    stop: shutdown::Trigger,
    /// Optional per-slot health scores for `/health`.
    scorer: Option<HealthScorer>,
    /// The autoscaler's state, when `AUTOSCALE` is set.
    autoscale: Arc<std::sync::Mutex<Option<AutoscaleStatus>>>,
}

impl ClusterHandle {
    pub(super) fn new(
        shared: Arc<Shared>,
        commands: mpsc::Sender<Command>,
        stop: shutdown::Trigger,
        scorer: Option<HealthScorer>,
    ) -> Self {
        Self {
            shared,
            commands,
            rolling: Arc::default(),
            stop,
            scorer,
            autoscale: Arc::default(),
        }
    }

    /// What the supervisor publishes (for the master's own loop).
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Sends `cmd` to the supervisor.
    pub(super) async fn command(&self, cmd: Command) -> Result<(), BoxError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| "the supervisor has stopped".into())
    }
    /// A stream of [`ClusterEvent`]s from now on. A receiver that falls more than 1024 events
    /// behind is told it lagged (`RecvError::Lagged`) and skips ahead.
    pub fn events(&self) -> broadcast::Receiver<ClusterEvent> {
        self.shared.events.subscribe()
    }

    /// Every slot: id, pid, state, restarts, uptime.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let mut workers = self.shared.workers.borrow().clone();
        workers.iter_mut().for_each(WorkerInfo::refresh);
        workers
    }

    /// The ready workers as the edge sees them.
    pub fn upstreams(&self) -> Arc<Ready> {
        self.shared.upstreams.snapshot()
    }

    /// Seconds since the master started.
    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// The cluster's health, as `/health` reports it.
    pub fn health(&self) -> Health {
        Health::of(
            self.workers(),
            self.scorer.as_ref(),
            self.shared.shutting_down.load(Ordering::Relaxed),
            self.uptime(),
        )
    }

    /// Runs `n` worker slots: new slots take the lowest free ids; scaling down drains the highest.
    pub async fn scale_to(&self, n: usize) -> Result<(), BoxError> {
        if !(1..=256).contains(&n) {
            return Err(format!("cannot scale to {n} workers: expected 1 to 256").into());
        }
        self.command(Command::ScaleTo(n)).await
    }

    /// The autoscaler's bounds, last measurement and recent decisions; `None` when `AUTOSCALE`
    /// is unset.
    pub fn autoscale(&self) -> Option<AutoscaleStatus> {
        self.autoscale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_autoscale(&self, status: AutoscaleStatus) {
        *self.autoscale.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }

    pub(super) fn update_autoscale(&self, f: impl FnOnce(&mut AutoscaleStatus)) {
        if let Some(s) = self
            .autoscale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            f(s);
        }
    }

    /// Announces `ev` to every [`events`](Self::events) receiver.
    pub(super) fn emit(&self, ev: ClusterEvent) {
        // No subscribers is fine.
        let _ = self.shared.events.send(ev);
    }

    /// Sends `signal` to the worker in `slot`, or to every worker when `slot` is `None`.
    pub async fn signal(&self, slot: Option<usize>, signal: Signal) -> Result<(), BoxError> {
        self.command(Command::Signal(slot, signal)).await
    }

    /// Asks every worker to reload its configuration.
    pub async fn reload(&self) -> Result<(), BoxError> {
        self.command(Command::Reload).await
    }

    /// Asks the worker in `slot` a question over IPC; it answers within `timeout` or this fails.
    pub async fn request(
        &self,
        slot: usize,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, BoxError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Request(slot, body, tx)).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r.map_err(Into::into),
            Ok(Err(_)) => Err("the supervisor dropped the request".into()),
            Err(_) => Err(format!("worker {slot} did not answer within {timeout:?}").into()),
        }
    }

    /// Replaces one worker: starts a new process in the slot, switches traffic to it once it is
    /// Ready, then drains the old one. If the new one fails to start, the old one keeps serving.
    pub async fn replace(&self, slot: usize) -> Result<(), BoxError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Replace(slot, tx)).await?;
        rx.await
            .map_err(|_| BoxError::from("the supervisor dropped the replacement"))?
            .map_err(Into::into)
    }

    /// Replaces every worker, one slot at a time, without dropping a request. Stops at the first
    /// replacement that fails, leaving that slot's old worker serving. One roll at a time.
    pub async fn rolling_restart(&self) -> Result<(), BoxError> {
        let Ok(_guard) = self.rolling.try_lock() else {
            return Err("a rolling restart is already running".into());
        };
        let slots: Vec<usize> = self
            .workers()
            .iter()
            .filter(|w| w.state == SlotState::Ready)
            .map(|w| w.id)
            .collect();
        tracing::info!(?slots, "rolling restart started");
        super::systemd::reloading();
        for slot in slots {
            if let Err(e) = self.replace(slot).await {
                tracing::error!(slot, error = %e, "rolling restart aborted; the old worker keeps serving");
                super::systemd::reloaded();
                return Err(e);
            }
        }
        tracing::info!("rolling restart finished");
        super::systemd::reloaded();
        Ok(())
    }

    /// Starts a graceful shutdown (as SIGTERM does).
    pub fn shutdown(&self) {
        self.stop.trigger();
    }
}

impl ClusterView for ClusterHandle {
    fn workers(&self) -> Vec<WorkerInfo> {
        ClusterHandle::workers(self)
    }

    fn uptime(&self) -> Duration {
        ClusterHandle::uptime(self)
    }
}
