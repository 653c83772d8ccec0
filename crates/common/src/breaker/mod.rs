//! Circuit breaker and bulkhead, as tower middleware: stop calling a service that keeps failing,
//! give it time, probe it carefully, and cap how many calls a slow one may hold at once.
//!
//! Depends on std, tokio, tower, http, pin-project-lite, futures-util, tracing, serde,
//! [`crate::config`] and the control channel's message types ([`crate::wire::ipc`]) only: it is
//! a leaf of layer 4, so the supervisor, the worker and a lesson can all use it without an
//! import cycle.
//!
//! Layout, tower's shape:
//! - `core`: the state machine, pure ([`Breaker`] takes `now`, holds no lock and starts no
//!   task): closed, open, half-open, forced-open, disabled and metrics-only; the trip rules;
//!   epochs; transitions, counters and the [`Snapshot`] behind `/circuit-status`;
//! - `window`: count-based and time-based sliding windows, O(1) per call;
//! - `shared`: [`CircuitBreaker`], the handle every clone of a service shares: lock-free
//!   admission while closed, force/reset/remote state, subscription to transitions;
//! - [`CircuitBreakerLayer`], [`CircuitBreakerService`], [`ResponseFuture`] and the error
//!   [`CircuitOpen`] (with its `Retry-After`); [`Classify`] decides what a failure is;
//! - [`guarded`]: one call through a breaker, for a handler to await;
//! - `cluster`: cluster scope, [`MasterBreakers`] (the master's breakers, which own the state)
//!   and [`WorkerLink`] (a worker's followers, which obey it), over the control channel;
//! - `link`: a worker's side of that channel, shared by its followers: the batched outcomes
//!   and the probe requests;
//! - [`bulkhead`]: the concurrency cap with a bounded wait, its own layer beside the breaker;
//! - [`BreakerConfig`]: the rules, with defaults set against resilience4j and the original,
//!   and the `BREAKER_*` variables.
//!
//! One breaker per *service*, not per worker: the Node original keyed its breakers by worker,
//! so ten failures on `/api/fail` opened every worker's breaker and healthy routes got 503s
//! too. For `Scope::Cluster` the master holds the breakers ([`MasterBreakers`]); workers'
//! followers ([`WorkerLink::follower`]) report successes in batches and failures at once (with the epoch of the
//! state they obeyed), mirror the master's state with [`CircuitBreaker::apply_remote_state`],
//! and ask the master for every half-open probe.
//!
//! Why not the `tower-resilience` crate: its circuit breaker (checked in its documentation)
//! has most of the rules (count and time windows, minimum calls, slow calls, a permitted
//! number of half-open calls, a failure classifier, event listeners), but its states are
//! closed, open and half-open only, with no forced-open, disabled or metrics-only; it keeps
//! its state inside the service with no way to record an outcome from outside or to set the
//! state from another breaker, which is the whole point of a cluster-wide breaker; it has no
//! epoch, so a call that started before an open still counts after it; and it would bring
//! its own core crate and `thiserror` into a module that must stay a leaf. Those are the
//! parts that needed designing; the rest is a few hundred lines, so we wrote our own.

mod classify;
mod cluster;
mod config;
mod core;
mod error;
mod future;
mod guarded;
mod layer;
mod link;
mod service;
mod shared;
mod window;

pub mod bulkhead;

pub use self::classify::{Classify, DefaultClassifier};
pub use self::cluster::{MasterBreakers, WorkerLink};
pub use self::config::{BreakerConfig, Scope, SlidingWindow};
pub use self::core::{
    Breaker, Counters, Outcome, Permit, Probes, Reason, Rejected, RemoteState, Snapshot, State,
    StateChange, Stats, Transition,
};
pub use self::error::CircuitOpen;
pub use self::future::ResponseFuture;
pub use self::guarded::{Guarded, guarded};
pub use self::layer::CircuitBreakerLayer;
pub use self::link::{FLUSH_AT, FLUSH_EVERY, PROBE_WAIT};
pub use self::service::CircuitBreakerService;
pub use self::shared::{CircuitBreaker, Clock, SystemClock, TokioClock};
pub use self::window::Totals;
pub use bulkhead::{Bulkhead, BulkheadFull, BulkheadLayer, BulkheadStats};

/// The same alias as the crate's, spelled out so this module imports nothing from above it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod tests;
