//! Choosing a worker for a request.
//!
//! A [`Selector`] sees the request and the workers that are ready right now, and returns the index
//! of one. Health is filtered apart from selection: a selector never sees a worker that is starting,
//! draining or dead. In-flight counts are taken at dispatch by the edge and released when the
//! response body ends, so a selector reading them sees the truth, not a count that arrives late.

pub mod consistent_hash;
pub mod least_connections;
pub mod least_response_time;
pub mod outlier;
pub mod p2c;
mod pick;
pub mod resource;
pub mod ring;
pub mod sticky;
pub mod strategy;
pub mod switch;
pub mod weighted;

pub use consistent_hash::ConsistentHash;
pub use least_connections::LeastConnections;
pub use least_response_time::LeastResponseTime;
pub use outlier::{Outlier, OutlierConfig};
pub use p2c::P2c;
pub use resource::ResourceBased;
pub use strategy::Strategy;
pub use switch::{StrategyOptions, Switch};
pub use weighted::Weighted;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderMap, Method, Uri};

use crate::edge::Backend;

/// What a selector may look at to place a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target.
    pub uri: &'a Uri,
    /// The request headers (cookies, affinity keys).
    pub headers: &'a HeaderMap,
    /// The TCP peer.
    pub client: SocketAddr,
}

/// A load-balancing strategy.
pub trait Selector: Send + Sync + 'static {
    /// The index in `ready` of the worker to use, or `None` to refuse (the edge answers 503).
    /// `ready` is never empty when this is called.
    fn select(&self, req: &RequestInfo<'_>, ready: &[Arc<Backend>]) -> Option<usize>;

    /// The strategy's name, as shown in stats.
    fn name(&self) -> &'static str;
}

/// Each ready worker in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Selector for RoundRobin {
    fn select(&self, _req: &RequestInfo<'_>, ready: &[Arc<Backend>]) -> Option<usize> {
        // Relaxed is enough: the counter only has to spread picks, not order them.
        Some(self.next.fetch_add(1, Ordering::Relaxed) % ready.len())
    }

    fn name(&self) -> &'static str {
        "round-robin"
    }
}

/// A shared selector is a selector, so a lesson can keep an `Arc` to read its stats.
impl<S: Selector + ?Sized> Selector for Arc<S> {
    fn select(&self, req: &RequestInfo<'_>, ready: &[Arc<Backend>]) -> Option<usize> {
        (**self).select(req, ready)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}
