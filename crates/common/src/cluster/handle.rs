//! [`ClusterHandle`]: steers a running cluster from any task: events, worker info, scaling,
//! signals, IPC questions, rolling restarts, shutdown. Every method talks to the supervisor by
//! message, so a handle holds no lock of the supervisor's.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::health::{Health, HealthScorer};
use super::notify;
use crate::edge::Ready;
use crate::error::BoxError;
use crate::metrics::ClusterView;
use crate::shutdown;
use crate::slot::{ClusterEvent, SlotState, WorkerInfo};
use crate::supervisor::autoscale::AutoscaleStatus;
use crate::supervisor::{Command, PoolSpec, Shared};

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

    /// The master's private run directory (mode 0700, removed when the master exits).
    pub fn run_dir(&self) -> &std::path::Path {
        &self.shared.run_dir
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
        self.rolling_restart_pool(None, Duration::ZERO)
            .await
            .map(|_| ())
    }

    /// As [`ClusterHandle::rolling_restart`], for the slots of version pool `pool` only (all
    /// pools when `None`), waiting `pause` after each replacement so a bad version shows itself
    /// before the next slot goes. A replacement that fails its readiness (exits, or is not Ready
    /// within `READY_TIMEOUT`) aborts the roll: the slots not yet replaced keep their old
    /// workers. Returns how many slots were replaced.
    pub async fn rolling_restart_pool(
        &self,
        pool: Option<usize>,
        pause: Duration,
    ) -> Result<usize, BoxError> {
        let Ok(_guard) = self.rolling.try_lock() else {
            return Err("a rolling restart is already running".into());
        };
        let slots: Vec<usize> = self
            .workers()
            .iter()
            .filter(|w| w.state == SlotState::Ready && pool.is_none_or(|p| w.pool == p))
            .map(|w| w.id)
            .collect();
        tracing::info!(?slots, ?pool, "rolling restart started");
        notify::reloading();
        for (done, slot) in slots.iter().copied().enumerate() {
            if done > 0 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if let Err(e) = self.replace(slot).await {
                tracing::error!(slot, error = %e, "rolling restart aborted; the old worker keeps serving");
                notify::reloaded();
                return Err(format!("slot {slot} (after {done} replaced): {e}").into());
            }
        }
        tracing::info!("rolling restart finished");
        notify::reloaded();
        Ok(slots.len())
    }

    /// Runs `n` slots in version pool `pool` (0 to 256; 0 drains the pool away).
    pub async fn scale_pool(&self, pool: usize, n: usize) -> Result<(), BoxError> {
        if n > 256 {
            return Err(format!("cannot scale to {n} workers: expected 0 to 256").into());
        }
        self.command(Command::ScalePool(pool, n)).await
    }

    /// What version pool `pool`'s processes started from now on run (a new pool when `pool` is
    /// one past the last). Running workers keep their version until replaced: follow with
    /// [`ClusterHandle::rolling_restart_pool`] to deploy it.
    pub async fn set_pool(&self, pool: usize, spec: PoolSpec) -> Result<(), BoxError> {
        self.command(Command::SetPool(pool, spec)).await
    }

    /// The slots of version pool `pool`.
    pub fn pool_workers(&self, pool: usize) -> Vec<WorkerInfo> {
        let mut workers = self.workers();
        workers.retain(|w| w.pool == pool);
        workers
    }

    /// Waits up to `timeout` until version pool `pool` has `n` Ready slots and none starting;
    /// whether it did.
    pub async fn wait_pool_ready(&self, pool: usize, n: usize, timeout: Duration) -> bool {
        let mut workers = self.shared.workers.subscribe();
        let ready = workers.wait_for(|w| {
            let mine = || w.iter().filter(|w| w.pool == pool);
            mine().filter(|w| w.state == SlotState::Ready).count() >= n
                && mine().all(|w| w.state != SlotState::Starting)
        });
        matches!(tokio::time::timeout(timeout, ready).await, Ok(Ok(_)))
    }

    /// `GET path` on the worker serving `slot`, straight over its socket (not through the edge
    /// and its balancing): its status and body. How a deployment checks every new worker's
    /// `/health` before it takes traffic.
    pub async fn probe(
        &self,
        slot: usize,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, bytes::Bytes), BoxError> {
        use http_body_util::BodyExt as _;
        let backend = self
            .upstreams()
            .backend_of_slot(slot)
            .ok_or_else(|| format!("slot {slot} has no ready worker"))?;
        let socket = backend.socket().to_path_buf();
        let path = path.to_string();
        let exchange = async move {
            let stream = tokio::net::UnixStream::connect(&socket).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = http::Request::get(path)
                .header(http::header::HOST, "localhost")
                .body(http_body_util::Empty::<bytes::Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("slot {slot} did not answer within {timeout:?}"))?
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
