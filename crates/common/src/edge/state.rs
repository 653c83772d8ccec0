//! What every client connection of the edge shares: its limits, the ready workers, the strategy,
//! the master's own routes and the retry budget. Built once by the cluster, read on every request.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::retry::budget::TpsBudget;

use super::front::Front;
use super::upstreams::Upstreams;
use crate::balance::{Selector, Split};
use crate::config::Config;
use crate::http::deadline::Deadlines;
use crate::http::routes::MasterRoutes;

/// Settings the edge needs, taken from [`Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    // What a client may send, and how slowly (see each variable in `Config`).
    pub max_header_size: usize,
    pub header_timeout: Duration,
    pub max_body_size: u64,
    pub body_timeout: Duration,
    pub body_buffer: u64,
    // How long a request may wait on the workers' side.
    pub upstream_timeout: Duration,
    /// How long a request waits at the master while no worker is Ready (`QUEUE_TIMEOUT`).
    pub queue_timeout: Duration,
    /// How many may wait so at once (`QUEUE_MAX`).
    pub queue_max: usize,
}

impl Limits {
    /// The deadlines of one client connection.
    pub(crate) fn deadlines(&self) -> Deadlines {
        Deadlines::edge(self.header_timeout, self.upstream_timeout)
    }
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Self {
        Self {
            upstream_timeout: c.upstream_timeout,
            header_timeout: c.header_timeout,
            max_header_size: c.max_header_size,
            max_body_size: c.max_body_size,
            body_buffer: c.body_buffer,
            body_timeout: c.body_timeout,
            queue_timeout: c.queue_timeout,
            queue_max: c.queue_max,
        }
    }
}

/// Everything a request handler needs; shared by every connection.
pub(crate) struct Edge {
    pub limits: Limits,
    /// `MAX_CONNECTIONS` permits, shared by every edge thread: the cap is on the whole master,
    /// however many threads accept.
    pub connection_slots: Arc<Semaphore>,
    pub upstreams: Arc<Upstreams>,
    pub selector: Arc<dyn Selector>,
    /// Chooses each request's version pool before the selector chooses its worker; `None` in a
    /// one-pool cluster, whose requests then take exactly the path they always took.
    pub split: Option<Arc<dyn Split>>,
    pub master: MasterRoutes,
    /// Retries draw on it, so a cluster in trouble is not hit with twice its load.
    pub retry: TpsBudget,
    /// Set when the edge terminates TLS (`TLS_CERT`, `TLS_KEY`): every accepted connection
    /// does its handshake before its first request is read.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The trace and the rate limit, when the lesson asked for either; `None` costs nothing.
    pub front: Option<Front>,
    /// WebSocket upgrades on plain TCP connections are handed to their worker (`WS_HANDOFF`, and
    /// neither TLS nor a front): see `edge::upgrade`.
    pub upgrade_handoff: bool,
}
