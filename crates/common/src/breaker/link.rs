//! A worker's side of the link to the master's breakers ([`super::cluster`]), which its
//! follower breakers share: the batch of outcomes waiting to go to the master, the probe
//! requests awaiting an answer, and the control channel once the worker is serving.
//!
//! Apart from the cluster module because the follower breakers ([`super::shared`]) report
//! through it, and the cluster module makes those followers: each imports this, neither the
//! other.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::core::Outcome;
use crate::wire::ipc::{BreakerReport, CallOutcome, CallResult, MAX_OUTCOMES, WorkerMessage};

/// A batch of outcomes goes to the master this long after its first outcome at the latest.
pub const FLUSH_EVERY: Duration = Duration::from_millis(2);
/// ... or as soon as it holds this many.
pub const FLUSH_AT: usize = 64;
/// How long a follower waits for the master to answer a probe request before refusing the
/// call (the master answers in well under a millisecond; a master that does not is busy or
/// gone, and the call must not hang on it).
pub const PROBE_WAIT: Duration = Duration::from_millis(500);
/// Probe requests awaiting an answer, at most: a bound on what a stalled master can make a
/// worker hold.
const MAX_PENDING_PROBES: usize = 1024;
/// An outcome waiting for its batch: circuit, result, microseconds, epoch.
type Queued = (Arc<str>, CallResult, u64, u64);
/// Who waits for the answer to a probe request: the circuit asked about, and the asker.
type Asker = (Arc<str>, oneshot::Sender<Result<u64, Duration>>);

/// The worker's side of the link, shared by its followers: the batch, the probe requests, and
/// the control channel's sender once the worker is serving.
pub(crate) struct LinkCore {
    /// Weak, so the link never keeps the worker's control channel open at shutdown.
    pub(super) uplink: Mutex<Option<mpsc::WeakUnboundedSender<WorkerMessage>>>,
    batch: Mutex<Vec<Queued>>,
    /// Wakes the flusher when a batch starts.
    pub(super) started: Notify,
    /// Probe requests awaiting the master's answer: the circuit asked about, and the asker.
    pub(super) pending: Mutex<HashMap<u64, Asker>>,
    next_id: AtomicU64,
}

impl LinkCore {
    /// Not connected yet, nothing queued.
    pub(super) fn new() -> Self {
        Self {
            uplink: Mutex::new(None),
            batch: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            started: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn send(&self, msg: WorkerMessage) -> bool {
        let uplink = lock(&self.uplink).as_ref().and_then(|w| w.upgrade());
        uplink.is_some_and(|tx| tx.send(msg).is_ok())
    }

    /// Queues one outcome; `urgent` sends the batch now, and so does a failure: failures are
    /// what trip the master's breaker, and one left waiting for its batch let the next calls
    /// through on this worker after the master would have refused them (seen: a sixth call let
    /// through after the fifth failure that opened the circuit). Successes, the common case,
    /// still travel in batches.
    pub(crate) fn report(
        &self,
        circuit: &Arc<str>,
        outcome: Outcome,
        duration: Duration,
        epoch: u64,
        urgent: bool,
    ) {
        let result = match outcome {
            Outcome::Success => CallResult::Success,
            Outcome::Failure => CallResult::Failure,
            Outcome::Ignored => CallResult::Ignored,
        };
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let mut batch = lock(&self.batch);
        let first = batch.is_empty();
        batch.push((circuit.clone(), result, us, epoch));
        if urgent || result == CallResult::Failure || batch.len() >= FLUSH_AT {
            let out = std::mem::take(&mut *batch);
            drop(batch);
            self.send_batch(out);
        } else if first {
            drop(batch);
            self.started.notify_one();
        }
    }

    /// Sends whatever the batch holds.
    pub(super) fn flush(&self) {
        let out = std::mem::take(&mut *lock(&self.batch));
        if !out.is_empty() {
            self.send_batch(out);
        }
    }

    fn send_batch(&self, out: Vec<Queued>) {
        for chunk in out.chunks(MAX_OUTCOMES) {
            let outcomes = chunk
                .iter()
                .map(|(c, outcome, us, epoch)| CallOutcome {
                    circuit: c.to_string(),
                    outcome: *outcome,
                    duration_us: *us,
                    epoch: *epoch,
                })
                .collect();
            let report = BreakerReport::Outcomes { outcomes };
            self.send(WorkerMessage::Breaker { report });
        }
    }

    /// Asks the master for one probe of `circuit`: the epoch it runs in, or how long to wait.
    pub(crate) fn ask_probe(
        self: &Arc<Self>,
        circuit: Arc<str>,
    ) -> impl Future<Output = Result<u64, Duration>> + Send + 'static {
        let this = self.clone();
        async move {
            let id = this.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            {
                let mut pending = lock(&this.pending);
                if pending.len() >= MAX_PENDING_PROBES {
                    return Err(PROBE_WAIT);
                }
                pending.insert(id, (circuit.clone(), tx));
            }
            let report = BreakerReport::Probe {
                id,
                circuit: circuit.to_string(),
            };
            if !this.send(WorkerMessage::Breaker { report }) {
                lock(&this.pending).remove(&id);
                return Err(PROBE_WAIT);
            }
            match tokio::time::timeout(PROBE_WAIT, rx).await {
                Ok(Ok(answer)) => answer,
                _ => {
                    let forgotten = lock(&this.pending).remove(&id).is_some();
                    if !forgotten {
                        // The answer came as the wait ended: if it was a grant, it is lost
                        // with this future; the master's half-open deadline frees its place.
                        tracing::debug!(%circuit, "a probe answer came too late");
                    }
                    Err(PROBE_WAIT)
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data whole, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
