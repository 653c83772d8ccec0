//! The supervisor: owns every worker process and every slot's state.
//!
//! One task runs the state machine below; everything else talks to it by message, so no lock is
//! held across a state change. Per worker process three small tasks run: a waiter (owns the
//! `Child`, reaps it, and delivers signals to it while it is unreaped, so a recycled pid is never
//! signalled), a reader (IPC frames in) and a writer (IPC frames out).
//!
//! ```text
//!            spawn            Ready over IPC          Shutdown sent           exit
//!   (slot) ────────▶ Starting ──────────────▶ Ready ───────────────▶ Draining ──────▶ Stopped
//!                       │  exit / no Ready in time      │ exit, hang, garbage on IPC
//!                       └──────────────┬────────────────┘
//!                                      ▼
//!                      restart policy: killed or stable: respawn at once ─▶ Starting
//!                                      unstable: respawn after backoff ─▶ Starting
//!                                      or, past the limit ─────────────▶ Failed
//! ```
//!
//! Which rule applies is decided in [`backoff`]: by how the process ended and how long it had been
//! Ready, so only crash loops back off and count toward `MAX_RESTARTS`.
//!
//! Rolling replacement (USR2, `MAX_MEMORY`): a second process is started in the same slot; only when
//! it says Ready does traffic switch to it and the old one drain. If it fails to become Ready the old
//! one keeps serving and the roll stops.
//!
//! Layout: this file is the supervisor's loop; [`backoff`] the restart policy, [`autoscale`] the
//! rule that sizes the cluster to its load (`AUTOSCALE`), `slot` one slot's
//! state, `spawn` starting a worker process, `sample` its CPU and memory, `shared` what it
//! publishes, `error` why a command failed. Depends on `edge` (it adds Ready workers to the
//! upstreams), `wire`, `slot` and `config`.

pub mod autoscale;
pub mod backoff;
mod error;
pub mod pool;
mod sample;
mod shared;
mod slot;
pub(crate) mod spawn;

pub use error::CommandError;
pub use pool::PoolSpec;
pub(crate) use shared::Shared;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

use crate::breaker::MasterBreakers;
use crate::config::Config;
use crate::edge::Backend;
use crate::edge::pool::PoolShape;
use crate::slot::{ClusterEvent, WorkerInfo};
use crate::slot::{LastExit, LastRestart};
use crate::wire::handoff::HandoffChannel;
use crate::wire::ipc::{self, MasterMessage, WorkerMessage};
use backoff::{Cause, Death, Decision};
use sample::Sampler;
use slot::{ReplaceReply, Slot};

/// What the cluster handle asks of the supervisor.
pub(crate) enum Command {
    ScaleTo(usize),
    /// Runs `n` slots in pool `pool`.
    ScalePool(usize, usize),
    /// What pool `pool`'s processes started from now on run (a new pool when it is one past the
    /// last); running ones are replaced by a rolling restart, not by this.
    SetPool(usize, PoolSpec),
    Replace(usize, ReplaceReply),
    Signal(Option<usize>, Signal),
    Reload,
    Request(
        usize,
        serde_json::Value,
        oneshot::Sender<Result<serde_json::Value, CommandError>>,
    ),
    Shutdown(Duration, oneshot::Sender<bool>),
}

/// What the per-process tasks report.
enum Event {
    Message(Key, WorkerMessage),
    Broken(Key, ipc::IpcError),
    Exited(Key, ExitStatus),
}

/// A process: its slot and generation.
type Key = (usize, u64);

#[derive(Debug, PartialEq, Eq)]
enum Role {
    Current,
    Replacement,
    Draining,
}

struct Instance {
    pid: u32,
    started: Instant,
    last_seen: Instant,
    ready: bool,
    /// When it said Ready: the restart policy judges a death by how long it had been serving.
    ready_at: Option<Instant>,
    role: Role,
    backend: Arc<Backend>,
    to_worker: mpsc::UnboundedSender<MasterMessage>,
    signals: mpsc::UnboundedSender<Signal>,
    /// Set when the supervisor killed it (hang, garbage, no Ready), for the log.
    killed_for: Option<&'static str>,
    /// When it was taken out of rotation, if it was.
    drain_started: Option<Instant>,
    /// Whether it was sent `Shutdown` (after the master's own requests to it finished).
    told_to_stop: bool,
}

pub(crate) struct Supervisor {
    config: Config,
    exe: PathBuf,
    run_dir: PathBuf,
    shared: Arc<Shared>,
    slots: BTreeMap<usize, Slot>,
    procs: HashMap<Key, Instance>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    /// IPC requests awaiting a reply, with the process asked. Pruned when the asker gives up or the
    /// process exits, so a worker that never answers cannot grow it.
    pending: HashMap<
        u64,
        (
            Key,
            oneshot::Sender<Result<serde_json::Value, CommandError>>,
        ),
    >,
    next_request: u64,
    shutdown: Option<(Instant, oneshot::Sender<bool>)>,
    killed_at_shutdown: bool,
    sampler: Sampler,
    /// Variables the lesson set for its workers (see `Cluster::worker_env`).
    worker_env: Vec<(String, String)>,
    /// What each version pool runs; one pool, without a version, unless the lesson set more.
    pools: Vec<PoolSpec>,
    /// Cluster-scope circuit breakers: fed the workers' reports, told who is Ready.
    breakers: Option<MasterBreakers>,
}

impl Supervisor {
    pub(crate) fn new(config: Config, exe: PathBuf, run_dir: PathBuf, shared: Arc<Shared>) -> Self {
        // Bounded: a worker flooding its channel slows only its own reader task.
        let (events_tx, events_rx) = mpsc::channel(1024);
        Self {
            exe,
            run_dir,
            shared,
            slots: BTreeMap::new(),
            procs: HashMap::new(),
            events_tx,
            events_rx,
            pending: HashMap::new(),
            next_request: 0,
            shutdown: None,
            killed_at_shutdown: false,
            sampler: Sampler::default(),
            worker_env: Vec::new(),
            pools: vec![PoolSpec::single(config.workers)],
            config,
            breakers: None,
        }
    }

    /// Carries the workers' breaker reports to `breakers` and their state to the workers.
    pub(crate) fn with_breakers(mut self, breakers: Option<MasterBreakers>) -> Self {
        self.breakers = breakers;
        self
    }

    /// Sets more environment variables for every worker it starts.
    pub(crate) fn with_worker_env(mut self, env: Vec<(String, String)>) -> Self {
        self.worker_env = env;
        self
    }

    /// Runs these version pools instead of the one pool of `WORKERS` workers.
    pub(crate) fn with_pools(mut self, pools: Vec<PoolSpec>) -> Self {
        if !pools.is_empty() {
            self.pools = pools;
        }
        self
    }

    /// Runs until a shutdown completes.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        if let Some(b) = &self.breakers {
            b.start();
        }
        for pool in 0..self.pools.len() {
            self.scale_pool(pool, self.pools[pool].workers);
        }
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sample = tokio::time::interval(self.config.metrics_interval);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(ev) = self.events_rx.recv() => self.on_event(ev),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    // Every handle is gone: nobody can ask for a clean shutdown, so do one now.
                    None if self.shutdown.is_none() => {
                        let (tx, _rx) = oneshot::channel();
                        self.begin_shutdown(self.config.shutdown_timeout, tx);
                    }
                    None => {}
                },
                _ = tick.tick() => self.on_tick(),
                _ = sample.tick() => self.sample(),
            }
            self.publish();
            if self.shutdown.is_some() && self.procs.is_empty() {
                if let Some((_, reply)) = self.shutdown.take() {
                    let _ = reply.send(!self.killed_at_shutdown);
                }
                return;
            }
        }
    }

    fn emit(&self, ev: ClusterEvent) {
        // No subscribers is fine.
        let _ = self.shared.events.send(ev);
    }

    fn scale_to(&mut self, n: usize) {
        self.scale_pool(0, n);
    }

    /// Runs `n` slots in `pool`: new slots take the lowest ids free in any pool, and scaling down
    /// drains the pool's highest.
    fn scale_pool(&mut self, pool: usize, n: usize) {
        if pool >= self.pools.len() {
            return;
        }
        let active: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.removed && s.pool == pool)
            .map(|(id, _)| *id)
            .collect();
        if n > active.len() {
            let mut add = n - active.len();
            let mut id = 1;
            while add > 0 {
                let free = self
                    .slots
                    .get(&id)
                    .is_none_or(|s| s.removed && s.current.is_none());
                if free && !active.contains(&id) {
                    // A slot id once used by another pool starts its counts afresh. Its
                    // generations go on either way: a process of the removed slot may still be
                    // draining, and a new one numbered like it would take its key and socket.
                    let old = self.slots.remove(&id);
                    let next_generation = old.as_ref().map_or(0, |s| s.next_generation);
                    let counters = old
                        .filter(|s| s.pool == pool)
                        .map(|s| s.counters)
                        .unwrap_or_default();
                    let mut slot = Slot::new(counters);
                    slot.pool = pool;
                    slot.next_generation = next_generation;
                    self.slots.insert(id, slot);
                    self.start(id, Role::Current);
                    add -= 1;
                }
                id += 1;
            }
        } else {
            let surplus = active.len().saturating_sub(n);
            for id in active.into_iter().rev().take(surplus) {
                self.remove_slot(id);
            }
        }
        if pool == 0 {
            self.emit(ClusterEvent::Scaled { workers: n });
        }
    }

    fn remove_slot(&mut self, id: usize) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.removed = true;
        slot.respawn_at = None;
        let gens: Vec<u64> = slot.current.take().into_iter().collect();
        if let Some((gen_, reply)) = slot.replacement.take() {
            if let Some(reply) = reply {
                let _ = reply.send(Err(CommandError::ScaledAway { slot: id }));
            }
            self.drain((id, gen_));
        }
        for g in gens {
            self.drain((id, g));
        }
    }

    /// Starts a process in slot `id`.
    fn start(&mut self, id: usize, role: Role) -> Option<u64> {
        let slot = self.slots.get_mut(&id)?;
        let generation = slot.next_generation;
        slot.next_generation += 1;
        let socket = self.run_dir.join(format!("w{id}-{generation}.sock"));
        let pool = slot.pool;
        let spec = &self.pools[pool.min(self.pools.len() - 1)];
        let mut spawned = match spawn::spawn(
            spec.exe.as_deref().unwrap_or(&self.exe),
            id,
            generation,
            &socket,
            self.config.health_check_interval,
            self.config.wants_handoff_channel(),
            &spec.worker_env(&self.worker_env),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(slot = id, error = %e, "could not start a worker");
                // Treat it like a crash at start: the restart policy decides.
                let slot = self.slots.get_mut(&id)?;
                if role == Role::Current {
                    slot.current = None;
                    let death = Death {
                        cause: Cause::Own,
                        ready_for: None,
                        uptime: Duration::ZERO,
                    };
                    self.after_unexpected_exit(id, death);
                }
                return None;
            }
        };
        let pid = spawned.pid;
        let counters = slot.counters.clone();
        let handoff = match spawned.handoff.take().map(HandoffChannel::new) {
            Some(Ok(channel)) => Some(channel),
            Some(Err(e)) => {
                tracing::error!(slot = id, error = %e, "cannot register the handoff channel");
                None
            }
            None => None,
        };
        let key = (id, generation);
        match role {
            Role::Current => slot.current = Some(generation),
            Role::Replacement => {}
            Role::Draining => {}
        }
        let backend = Arc::new(
            Backend::new(
                id,
                pid,
                generation,
                socket,
                counters,
                PoolShape {
                    connections: self.config.pool_size,
                    shards: self.config.edge_threads,
                },
                self.shared.observers.clone(),
            )
            .with_handoff(handoff)
            .with_pool(pool),
        );
        let (to_worker, signals) = self.watch(key, spawned);
        let now = Instant::now();
        self.procs.insert(
            key,
            Instance {
                pid,
                started: now,
                last_seen: now,
                ready: false,
                ready_at: None,
                role,
                backend,
                to_worker,
                signals,
                killed_for: None,
                drain_started: None,
                told_to_stop: false,
            },
        );
        tracing::debug!(slot = id, pid, generation, "worker started");
        Some(generation)
    }

    /// Starts the three tasks that watch one process.
    fn watch(
        &self,
        key: Key,
        spawned: spawn::Spawned,
    ) -> (
        mpsc::UnboundedSender<MasterMessage>,
        mpsc::UnboundedSender<Signal>,
    ) {
        let spawn::Spawned {
            mut child,
            pid,
            channel,
            handoff: _,
        } = spawned;
        let (read, write) = channel.into_split();
        let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<Signal>();
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(sig) = sig_rx.recv() => {
                        // Not reaped yet (we are the only one who waits), so the pid is still ours.
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
                    }
                }
            };
            match status {
                Ok(status) => {
                    let _ = events.send(Event::Exited(key, status)).await;
                }
                Err(e) => tracing::error!(pid, error = %e, "waiting for a worker failed"),
            }
        });
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let mut inbox = ipc::Receiver::<_, WorkerMessage>::new(read);
            while let Some(msg) = inbox.recv().await {
                let ev = match msg {
                    Ok(msg) => Event::Message(key, msg),
                    Err(e) => Event::Broken(key, e),
                };
                let broken = matches!(ev, Event::Broken(..));
                if events.send(ev).await.is_err() || broken {
                    return;
                }
            }
        });
        let (tx, mut rx) = mpsc::unbounded_channel::<MasterMessage>();
        tokio::spawn(async move {
            let mut outbox = ipc::Sender::<_, MasterMessage>::new(write);
            while let Some(msg) = rx.recv().await {
                if outbox.send(&msg).await.is_err() {
                    return;
                }
            }
        });
        (tx, sig_tx)
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Message(key, msg) => self.on_message(key, msg),
            Event::Broken(key, why) => {
                if let Some(p) = self.procs.get_mut(&key) {
                    tracing::error!(slot = key.0, pid = p.pid, %why, "worker broke the control protocol; replacing it");
                    p.killed_for = Some("a protocol error");
                    let _ = p.signals.send(Signal::SIGKILL);
                }
            }
            Event::Exited(key, status) => self.on_exit(key, status),
        }
    }

    fn on_message(&mut self, key: Key, msg: WorkerMessage) {
        let Some(p) = self.procs.get_mut(&key) else {
            return;
        };
        p.last_seen = Instant::now();
        match msg {
            WorkerMessage::Heartbeat { stats } => {
                p.backend
                    .counters()
                    .runtime_lag_us
                    .store(stats.runtime_lag_us, Ordering::Relaxed);
            }
            WorkerMessage::Reply { id, body } => {
                if let Some((asked, reply)) = self.pending.remove(&id)
                    && asked == key
                {
                    let _ = reply.send(Ok(body));
                }
            }
            WorkerMessage::Breaker { report } => {
                if let Some(reply) = self.breakers.as_ref().and_then(|b| b.on_report(report)) {
                    let _ = p.to_worker.send(reply);
                }
            }
            WorkerMessage::HandedOffClosed { id } => {
                drop(p.backend.handed_off_closed(id));
            }
            WorkerMessage::Ready { .. } if p.ready => {}
            WorkerMessage::Ready { .. } => {
                p.ready = true;
                if let Some(b) = &self.breakers {
                    b.attach(key, p.to_worker.clone());
                }
                p.ready_at = Some(Instant::now());
                let pid = p.pid;
                match p.role {
                    Role::Current => {
                        if self.shutdown.is_none() {
                            self.shared.upstreams.insert(p.backend.clone());
                        }
                    }
                    Role::Replacement => self.promote(key),
                    Role::Draining => {}
                }
                tracing::info!(slot = key.0, pid, "worker ready");
                self.emit(ClusterEvent::Ready { slot: key.0, pid });
            }
        }
    }

    /// A replacement is Ready: switch the slot's traffic to it and drain the old process.
    ///
    /// The order is what makes a roll lose nothing: the new process joins the ready set first (the
    /// set is replaced whole, so a request sees the old process or the new one, never neither),
    /// and only then is the old one retired, which turns away requests that picked it a moment
    /// earlier (they go elsewhere, unsent) and lets the ones it is serving finish.
    fn promote(&mut self, key: Key) {
        let (id, generation) = key;
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let reply = match slot.replacement.take() {
            Some((g, reply)) if g == generation => reply,
            other => {
                slot.replacement = other;
                None
            }
        };
        let old = slot.current.replace(generation);
        if let Some(p) = self.procs.get_mut(&key) {
            p.role = Role::Current;
            self.shared.upstreams.insert(p.backend.clone());
        }
        if let Some(old) = old {
            self.drain((id, old));
        }
        if let Some(reply) = reply {
            let _ = reply.send(Ok(()));
        }
    }

    /// Takes a process out of rotation and asks it to finish and exit.
    fn drain(&mut self, key: Key) {
        let Some(p) = self.procs.get_mut(&key) else {
            return;
        };
        p.role = Role::Draining;
        self.shared.upstreams.remove_pid(p.pid);
        p.backend.retire();
        p.drain_started = Some(Instant::now());
        // Shutdown waits until the master's own requests to it are done (see `stop_drained`): a
        // worker told to stop closes its idle keep-alive connections, and a request the master had
        // just written onto one of them would be lost.
        let timeout = self.config.shutdown_timeout;
        stop_drained(p, timeout, Instant::now());
    }

    fn on_exit(&mut self, key: Key, status: ExitStatus) {
        use std::os::unix::process::ExitStatusExt;
        let Some(p) = self.procs.remove(&key) else {
            return;
        };
        let (id, generation) = key;
        self.pending.retain(|_, (asked, _)| *asked != key);
        if let Some(b) = &self.breakers {
            b.detach(key);
        }
        self.shared.upstreams.remove_pid(p.pid);
        p.backend.retire();
        // The connections it was handed died with it; the map's entries hold the backend itself.
        p.backend.forget_handed_off();
        let uptime = p.started.elapsed();
        let (code, signal) = (status.code(), status.signal());
        let death = Death {
            cause: Cause::of(signal, p.killed_for.is_some()),
            ready_for: p.ready_at.map(|t| t.elapsed()),
            uptime,
        };
        self.shared
            .upstreams
            .note_exit(p.pid, death.cause == Cause::Outside);
        match (&p.role, p.killed_for) {
            (Role::Draining, _) => {
                tracing::info!(slot = id, pid = p.pid, ?code, "worker drained and exited")
            }
            (_, Some(why)) => tracing::warn!(slot = id, pid = p.pid, "worker killed for {why}"),
            _ => tracing::warn!(
                slot = id,
                pid = p.pid,
                ?code,
                ?signal,
                "worker exited unexpectedly"
            ),
        }
        self.emit(ClusterEvent::Exited {
            slot: id,
            pid: p.pid,
            code,
            signal,
        });
        if self.shutdown.is_some() {
            return;
        }
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        match p.role {
            Role::Draining => {}
            Role::Replacement => {
                if let Some((g, reply)) = slot.replacement.take() {
                    if g != generation {
                        slot.replacement = Some((g, reply));
                    } else if let Some(reply) = reply {
                        let _ =
                            reply.send(Err(CommandError::ExitedBeforeReady { slot: id, status }));
                    }
                }
            }
            Role::Current => {
                if slot.current == Some(generation) {
                    slot.current = None;
                }
                if !slot.removed {
                    slot.history.last_exit = Some(LastExit {
                        pid: p.pid,
                        code,
                        signal,
                        cause: match death.cause {
                            Cause::Outside => "outside",
                            Cause::Own => "own",
                        },
                        killed_for: p.killed_for,
                        ready_ms: death.ready_for.map(|d| d.as_millis() as u64),
                    });
                    self.after_unexpected_exit(id, death);
                }
            }
        }
    }

    fn after_unexpected_exit(&mut self, id: usize, death: Death) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        let decision =
            self.config
                .restart
                .decide(&mut slot.restarts, now, &death, rand::random::<f64>());
        match decision {
            Decision::Restart { rule, delay } => {
                tracing::info!(
                    slot = id,
                    rule = rule.as_str(),
                    delay_ms = delay.as_millis() as u64,
                    ready_ms = death.ready_for.map(|d| d.as_millis() as u64),
                    "restarting worker"
                );
                slot.history.last_restart = Some(LastRestart {
                    rule: Some(rule),
                    delay_ms: delay.as_millis() as u64,
                    gave_up: false,
                });
                slot.next_restart = Some((rule, delay));
                if delay.is_zero() {
                    // At once, not on the next tick: a slot is short of a worker until then.
                    self.respawn(id);
                } else {
                    slot.respawn_at = Some(now + delay);
                }
            }
            Decision::GiveUp => {
                slot.failed = true;
                slot.history.last_restart = Some(LastRestart {
                    rule: None,
                    delay_ms: 0,
                    gave_up: true,
                });
                tracing::error!(
                    slot = id,
                    max = self.config.restart.max_restarts,
                    window = ?self.config.restart.window,
                    "worker keeps crashing; slot marked failed"
                );
                self.emit(ClusterEvent::Failed { slot: id });
            }
        }
    }

    /// Starts the replacement the restart policy decided on, and announces it.
    fn respawn(&mut self, id: usize) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.respawn_at = None;
        let (reason, delay) = slot
            .next_restart
            .take()
            .unwrap_or((crate::slot::RestartRule::Unstable, Duration::ZERO));
        let restarts = slot.counters.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        if self.start(id, Role::Current).is_some()
            && let Some(pid) = self
                .slots
                .get(&id)
                .and_then(|s| s.current)
                .and_then(|g| self.procs.get(&(id, g)))
                .map(|p| p.pid)
        {
            self.emit(ClusterEvent::Restarted {
                slot: id,
                pid,
                restarts,
                reason,
                delay_ms: delay.as_millis() as u64,
            });
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::ScaleTo(n) if self.shutdown.is_none() => self.scale_to(n),
            Command::ScaleTo(_) => {}
            Command::ScalePool(pool, n) if self.shutdown.is_none() => self.scale_pool(pool, n),
            Command::ScalePool(..) => {}
            Command::SetPool(pool, spec) => {
                if pool < self.pools.len() {
                    self.pools[pool] = spec;
                } else if pool == self.pools.len() {
                    self.pools.push(spec);
                }
            }
            Command::Replace(id, reply) => {
                let ok = self.shutdown.is_none()
                    && self.slots.get(&id).is_some_and(|s| {
                        !s.removed && s.replacement.is_none() && s.current.is_some()
                    });
                if !ok {
                    let _ = reply.send(Err(CommandError::NoWorker { slot: id }));
                    return;
                }
                if let Some(generation) = self.start(id, Role::Replacement)
                    && let Some(slot) = self.slots.get_mut(&id)
                {
                    slot.replacement = Some((generation, Some(reply)));
                } else {
                    let _ = reply.send(Err(CommandError::CouldNotStart { slot: id }));
                }
            }
            Command::Signal(slot, sig) => {
                for ((id, _), p) in &self.procs {
                    if slot.is_none_or(|s| s == *id) {
                        let _ = p.signals.send(sig);
                    }
                }
            }
            Command::Reload => {
                for p in self.procs.values() {
                    let _ = p.to_worker.send(MasterMessage::Reload);
                }
            }
            Command::Request(slot, body, reply) => {
                let target = self
                    .slots
                    .get(&slot)
                    .and_then(|s| s.current)
                    .and_then(|g| self.procs.get(&(slot, g)));
                match target {
                    Some(p) => {
                        self.next_request += 1;
                        let id = self.next_request;
                        if p.to_worker
                            .send(MasterMessage::Request { id, body })
                            .is_ok()
                        {
                            self.pending
                                .insert(id, ((slot, p.backend.generation()), reply));
                        } else {
                            let _ = reply.send(Err(CommandError::NoWorker { slot }));
                        }
                    }
                    None => {
                        let _ = reply.send(Err(CommandError::NoWorker { slot }));
                    }
                }
            }
            Command::Shutdown(deadline, reply) => self.begin_shutdown(deadline, reply),
        }
    }

    fn begin_shutdown(&mut self, deadline: Duration, reply: oneshot::Sender<bool>) {
        if self.shutdown.is_some() {
            return;
        }
        for slot in self.slots.values_mut() {
            slot.respawn_at = None;
            if let Some((_, Some(r))) = slot.replacement.take() {
                let _ = r.send(Err(CommandError::ShuttingDown));
            }
        }
        let deadline_ms = deadline.as_millis() as u64;
        for p in self.procs.values_mut() {
            self.shared.upstreams.remove_pid(p.pid);
            p.role = Role::Draining;
            p.drain_started.get_or_insert_with(Instant::now);
            // The edge has already drained, so nothing of ours is in flight: stop at once.
            p.told_to_stop = true;
            let _ = p.to_worker.send(MasterMessage::Shutdown { deadline_ms });
        }
        self.shutdown = Some((Instant::now() + deadline, reply));
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.pending.retain(|_, (_, reply)| !reply.is_closed());
        if let Some((deadline, _)) = &self.shutdown {
            if now >= *deadline && !self.procs.is_empty() {
                tracing::warn!(
                    remaining = self.procs.len(),
                    "shutdown timeout: killing workers that are still draining"
                );
                self.killed_at_shutdown = true;
                for p in self.procs.values() {
                    let _ = p.signals.send(Signal::SIGKILL);
                }
                // Do not send again on the next tick.
                self.shutdown = self
                    .shutdown
                    .take()
                    .map(|(_, r)| (now + Duration::from_secs(3600), r));
            }
            return;
        }
        let due: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, s)| s.respawn_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.respawn(id);
        }
        let hang_after = self.config.health_check_interval * 3;
        let ready_timeout = self.config.ready_timeout;
        let shutdown_timeout = self.config.shutdown_timeout;
        // Up to one timeout waiting for our requests to finish, then one for the worker's drain.
        let drain_timeout = shutdown_timeout * 2 + Duration::from_secs(1);
        for ((id, _), p) in &mut self.procs {
            if p.killed_for.is_some() {
                continue;
            }
            stop_drained(p, shutdown_timeout, now);
            let draining_for = p
                .drain_started
                .map_or(Duration::ZERO, |t| now.duration_since(t));
            let why = if !p.ready
                && p.role != Role::Draining
                && now.duration_since(p.started) > ready_timeout
            {
                Some("not becoming ready within READY_TIMEOUT")
            } else if p.ready
                && p.role != Role::Draining
                && now.duration_since(p.last_seen) > hang_after
            {
                Some("missing three heartbeats (hung)")
            } else if p.role == Role::Draining && draining_for > drain_timeout {
                Some("still draining after SHUTDOWN_TIMEOUT")
            } else {
                None
            };
            if let Some(why) = why {
                tracing::warn!(slot = id, pid = p.pid, "killing worker: {why}");
                p.killed_for = Some(why);
                self.shared.upstreams.remove_pid(p.pid);
                let _ = p.signals.send(Signal::SIGKILL);
            }
        }
    }

    /// Samples each worker's CPU and memory by pid, and replaces workers over `MAX_MEMORY`.
    fn sample(&mut self) {
        let pids: Vec<u32> = self.procs.values().map(|p| p.pid).collect();
        let usage = self.sampler.sample(&pids);
        let mut over = Vec::new();
        for ((id, _), p) in &self.procs {
            let Some(u) = usage.get(&p.pid) else {
                continue;
            };
            let counters = p.backend.counters();
            counters.rss_bytes.store(u.rss_bytes, Ordering::Relaxed);
            counters
                .cpu_centi_percent
                .store(u.cpu_centi_percent, Ordering::Relaxed);
            if let Some(limit) = self.config.max_memory
                && p.role == Role::Current
                && p.ready
                && u.rss_bytes > limit
            {
                over.push((*id, u.rss_bytes, limit));
            }
        }
        for (id, rss, limit) in over {
            if self.slots.get(&id).is_some_and(|s| s.replacement.is_none()) {
                tracing::warn!(
                    slot = id,
                    rss,
                    limit,
                    "worker over MAX_MEMORY; replacing it"
                );
                if let Some(generation) = self.start(id, Role::Replacement)
                    && let Some(slot) = self.slots.get_mut(&id)
                {
                    slot.replacement = Some((generation, None));
                }
            }
        }
    }

    fn publish(&self) {
        let now = Instant::now();
        // Requests wait for a worker only while one may still come.
        let coming =
            self.shutdown.is_none() && self.slots.values().any(|s| !s.removed && !s.failed);
        self.shared.upstreams.set_coming(coming);
        let infos = self
            .slots
            .iter()
            .filter(|(id, s)| !s.removed || self.procs.keys().any(|(i, _)| i == *id))
            .map(|(id, s)| {
                let current = s
                    .current
                    .and_then(|g| self.procs.get(&(*id, g)).map(|p| (g, p)));
                let draining = self
                    .procs
                    .iter()
                    .any(|((i, _), p)| i == id && p.role == Role::Draining);
                let state = s.state(
                    current.map(|(_, p)| p.ready && p.role == Role::Current),
                    draining,
                );
                WorkerInfo {
                    id: *id,
                    pool: s.pool,
                    pid: current.map(|(_, p)| p.pid),
                    state,
                    restarts: s.counters.restarts.load(Ordering::Relaxed),
                    uptime_ms: current
                        .map_or(0, |(_, p)| now.duration_since(p.started).as_millis() as u64),
                    generation: current.map_or(s.next_generation, |(g, _)| g),
                    requests: s.counters.requests.load(Ordering::Relaxed),
                    errors: s.counters.errors.load(Ordering::Relaxed),
                    in_flight: s.counters.in_flight.load(Ordering::Relaxed),
                    history: s.history.clone(),
                    counters: s.counters.clone(),
                }
            })
            .collect();
        self.shared.workers.send_replace(infos);
    }
}

/// Sends `Shutdown` to a draining process once the master has nothing in flight to it, or once it
/// has waited `timeout` for that (a long-lived WebSocket must not hold a roll up forever).
fn stop_drained(p: &mut Instance, timeout: Duration, now: Instant) {
    let Some(since) = p.drain_started else {
        return;
    };
    if p.role != Role::Draining || p.told_to_stop {
        return;
    }
    if p.backend.active() == 0 || now.duration_since(since) >= timeout {
        p.told_to_stop = true;
        let deadline_ms = timeout.as_millis() as u64;
        let _ = p.to_worker.send(MasterMessage::Shutdown { deadline_ms });
    }
}
