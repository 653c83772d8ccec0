//! Cluster scope: one breaker per circuit in the master for the whole cluster, obeyed by every
//! worker.
//!
//! - [`MasterBreakers`] (in the master): the breakers that own the state. Workers' outcomes come
//!   in over the control channel ([`BreakerReport`]); every transition goes out to every worker
//!   ([`BreakerUpdate::State`]), and so does every circuit's state to a worker that has just
//!   said Ready. Half-open probes are granted here, one [`BreakerReport::Probe`] at a time, so
//!   at most `half_open_calls` probes are in flight across all workers together.
//! - [`WorkerLink`] (in a worker): makes the *follower* breakers a worker's routes call
//!   through. A follower admits and refuses on its own, from the last state the master pushed
//!   (one atomic load while closed, as any breaker), and asks the master only for a probe.
//!
//! Successes are batched ([`super::link`]): a worker sends them when [`FLUSH_AT`] have gathered
//! or [`FLUSH_EVERY`] after the first of a batch, whichever comes first. A failure or a
//! probe's outcome goes at once, with whatever the batch held. So a healthy service's hot
//! path costs a short uncontended lock and a push, never a frame of its own, and the master
//! learns of a failure a frame's trip after it, not a batch later: the calls that workers
//! still let through meanwhile are only those already on their way.
//!
//! The supervisor and the worker only carry the messages (`attach`, `on_report`, `apply`);
//! what they mean is decided here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use super::config::BreakerConfig;
use super::core::{Outcome, RemoteState, State};
use super::link::{FLUSH_EVERY, LinkCore, PROBE_WAIT};
use super::shared::CircuitBreaker;
use crate::wire::ipc::{
    BreakerReport, BreakerUpdate, CallResult, MAX_CIRCUIT_NAME, MasterMessage, WorkerMessage,
};

/// How often the master's breakers look at the clock, so an open wait ends (and is pushed)
/// even while every worker refuses and nothing calls the master's breaker.
const TICK: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data whole, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A worker's link to the master's breakers: makes its followers, sends their outcomes, and
/// applies what the master says. Clones share one link.
#[derive(Clone)]
pub struct WorkerLink {
    core: Arc<LinkCore>,
    followers: Arc<Mutex<Vec<CircuitBreaker>>>,
}

impl std::fmt::Debug for WorkerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLink").finish_non_exhaustive()
    }
}

impl Default for WorkerLink {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerLink {
    /// A link with no followers, not yet connected.
    pub fn new() -> Self {
        Self {
            core: Arc::new(LinkCore::new()),
            followers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A follower of the master's breaker `name`, closed until the master says otherwise.
    /// `config` matters for what the follower decides itself: `Retry-After` while forced
    /// open, and whether calls are timed. Names longer than the wire carries are cut.
    pub fn follower(&self, name: &str, config: BreakerConfig) -> CircuitBreaker {
        let mut end = name.len().min(MAX_CIRCUIT_NAME);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let b = CircuitBreaker::follower(name[..end].into(), config, self.core.clone());
        lock(&self.followers).push(b.clone());
        b
    }

    /// Starts sending to the master on `uplink` (the worker's control channel), flushing
    /// batches from a task of the current runtime. Called by the worker once it is serving.
    pub fn connect(&self, uplink: &mpsc::UnboundedSender<WorkerMessage>) {
        *lock(&self.core.uplink) = Some(uplink.downgrade());
        let core = self.core.clone();
        tokio::spawn(async move {
            loop {
                core.started.notified().await;
                tokio::time::sleep(FLUSH_EVERY).await;
                core.flush();
            }
        });
    }

    /// Applies one message from the master.
    pub fn apply(&self, update: BreakerUpdate) {
        match update {
            BreakerUpdate::State {
                circuit,
                state,
                epoch,
                open_for_ms,
            } => {
                let Some(state) = State::parse(&state) else {
                    tracing::warn!(%circuit, %state, "the master sent an unknown breaker state");
                    return;
                };
                let remote = RemoteState {
                    state,
                    epoch,
                    open_for: open_for_ms.map(Duration::from_millis),
                };
                for b in lock(&self.followers).iter().filter(|b| b.name() == circuit) {
                    b.apply_remote_state(remote);
                }
            }
            BreakerUpdate::Probe {
                id,
                granted,
                retry_after_ms,
            } => {
                let answer = granted.ok_or(Duration::from_millis(retry_after_ms));
                let Some((circuit, tx)) = lock(&self.core.pending).remove(&id) else {
                    // Timed out and forgotten: its grant (if it was one) went back already
                    // below, or the request was never ours.
                    return;
                };
                if let (Err(_), Some(epoch)) = (tx.send(answer), granted) {
                    // The caller went away: give the master its probe place back.
                    tracing::debug!(%circuit, epoch, "an unused probe is given back");
                    self.core
                        .report(&circuit, Outcome::Ignored, Duration::ZERO, epoch, true);
                }
            }
        }
    }
}

/// The master's breakers, one per circuit for the whole cluster, and the workers they speak to.
/// Clones share them.
#[derive(Clone)]
pub struct MasterBreakers {
    inner: Arc<MasterInner>,
}

struct MasterInner {
    breakers: Vec<CircuitBreaker>,
    /// Every worker that said Ready and has not exited: slot and generation, and its channel.
    workers: Mutex<HashMap<(usize, u64), mpsc::UnboundedSender<MasterMessage>>>,
    started: AtomicBool,
}

impl std::fmt::Debug for MasterBreakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterBreakers")
            .field("circuits", &self.inner.breakers)
            .finish_non_exhaustive()
    }
}

impl MasterBreakers {
    /// A closed breaker for each of `names`, all with `config`.
    pub fn new(names: &[&str], config: &BreakerConfig) -> Self {
        Self {
            inner: Arc::new(MasterInner {
                breakers: names
                    .iter()
                    .map(|n| CircuitBreaker::new(*n, config.clone()))
                    .collect(),
                workers: Mutex::new(HashMap::new()),
                started: AtomicBool::new(false),
            }),
        }
    }

    /// The breaker of circuit `name`: force, reset or read it here, and every worker follows.
    pub fn get(&self, name: &str) -> Option<&CircuitBreaker> {
        self.inner.breakers.iter().find(|b| b.name() == name)
    }

    /// Every breaker, in the order given to [`MasterBreakers::new`].
    pub fn all(&self) -> &[CircuitBreaker] {
        &self.inner.breakers
    }

    /// Sets circuit `name`'s state (an operator's open or close) and tells every worker before
    /// returning, so a call made after this returns is judged by the new state on any
    /// worker. False if there is no such circuit.
    pub fn force(&self, name: &str, state: State) -> bool {
        let Some(b) = self.get(name) else {
            return false;
        };
        b.force_state(state);
        self.push(b);
        true
    }

    /// Resets circuit `name` (see [`CircuitBreaker::reset`]) and tells every worker before
    /// returning; whether its state changed (`None`: no such circuit).
    pub fn reset(&self, name: &str) -> Option<bool> {
        let b = self.get(name)?;
        let changed = b.reset();
        if changed {
            self.push(b);
        }
        Some(changed)
    }

    /// Resets every circuit, as [`MasterBreakers::reset`]; the names of those that changed.
    pub fn reset_all(&self) -> Vec<&str> {
        self.inner
            .breakers
            .iter()
            .filter(|b| self.reset(b.name()) == Some(true))
            .map(CircuitBreaker::name)
            .collect()
    }

    /// Sends `b`'s state to every attached worker now.
    fn push(&self, b: &CircuitBreaker) {
        let msg = state_message(b);
        for tx in lock(&self.inner.workers).values() {
            let _ = tx.send(msg.clone());
        }
    }

    /// Starts pushing each transition to every attached worker, and ticking the breakers'
    /// clocks. Idempotent; called by the supervisor when it starts.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        for b in &self.inner.breakers {
            let (b, inner) = (b.clone(), Arc::downgrade(&self.inner));
            let mut events = b.subscribe();
            tokio::spawn(async move {
                loop {
                    let changed = tokio::select! {
                        ev = events.recv() => match ev {
                            Ok(_) => true,
                            // Fell behind: the current state is all a worker needs.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        },
                        () = tokio::time::sleep(TICK) => {
                            b.tick();
                            false
                        }
                    };
                    let Some(inner) = inner.upgrade() else { return };
                    if changed {
                        MasterBreakers { inner }.push(&b);
                    }
                }
            });
        }
    }

    /// A worker said Ready: it gets every circuit's state now and each transition from now on.
    pub fn attach(&self, worker: (usize, u64), to: mpsc::UnboundedSender<MasterMessage>) {
        for b in &self.inner.breakers {
            let _ = to.send(state_message(b));
        }
        lock(&self.inner.workers).insert(worker, to);
    }

    /// A worker exited.
    pub fn detach(&self, worker: (usize, u64)) {
        lock(&self.inner.workers).remove(&worker);
    }

    /// Handles one report from a worker; the answer to send back to it, if any. Outcomes for
    /// circuits it does not have are dropped (a worker of another build, say), never trusted.
    pub fn on_report(&self, report: BreakerReport) -> Option<MasterMessage> {
        match report {
            BreakerReport::Outcomes { outcomes } => {
                for o in outcomes {
                    let Some(b) = self.get(&o.circuit) else {
                        continue;
                    };
                    let outcome = match o.outcome {
                        CallResult::Success => Outcome::Success,
                        CallResult::Failure => Outcome::Failure,
                        CallResult::Ignored => Outcome::Ignored,
                    };
                    b.record(outcome, Duration::from_micros(o.duration_us), o.epoch);
                }
                None
            }
            BreakerReport::Probe { id, circuit } => {
                let update = match self.get(&circuit).map(CircuitBreaker::try_acquire) {
                    Some(Ok(permit)) => BreakerUpdate::Probe {
                        id,
                        granted: Some(permit.epoch),
                        retry_after_ms: 0,
                    },
                    Some(Err(open)) => BreakerUpdate::Probe {
                        id,
                        granted: None,
                        retry_after_ms: open.retry_after().as_millis() as u64,
                    },
                    None => BreakerUpdate::Probe {
                        id,
                        granted: None,
                        retry_after_ms: PROBE_WAIT.as_millis() as u64,
                    },
                };
                Some(MasterMessage::Breaker { update })
            }
        }
    }
}

fn state_message(b: &CircuitBreaker) -> MasterMessage {
    let RemoteState {
        state,
        epoch,
        open_for,
    } = b.remote_state();
    MasterMessage::Breaker {
        update: BreakerUpdate::State {
            circuit: b.name().to_string(),
            state: state.as_str().to_string(),
            epoch,
            open_for_ms: open_for.map(|d| d.as_millis() as u64),
        },
    }
}
