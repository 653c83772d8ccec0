//! The master's HTTP edge: accepts clients on `HOST:PORT` and routes every request.
//!
//! Layout, in the order a request meets them:
//! - [`accept`]: one listening socket per edge thread, and the shared cap on connections;
//! - `threads`: the edge threads, each a current-thread runtime with its own accept loop;
//! - `tls`: the TLS handshake on accepted connections, when `TLS_CERT` and `TLS_KEY` are set;
//! - `front`: the optional layers in front of every request (trace, rate limit);
//! - `serve`: proxy dispatch, one client connection served by the plain loop, then hyper;
//! - [`handoff`]: the other dispatch mode, passing whole connections to workers;
//! - `handed_head`: the checked head of a request whose connection goes to a worker (both modes);
//! - `state`: what every connection shares (`Edge`: limits, strategy, routes);
//! - [`upstreams`]: the ready workers, as selectors and as backends;
//! - [`proxy`]: forwarding one request (headers, retry, errors, upgrades);
//! - `upgrade`: a WebSocket upgrade on plain TCP, its connection handed to the chosen worker;
//! - `tunnel`: an upgraded connection the master keeps (TLS, a front, `WS_HANDOFF=off`), the
//!   client's and the worker's sockets spliced;
//! - [`pool`]: a worker as an upstream ([`Backend`]), with its bounded keep-alive pool;
//! - [`request_body`] and [`response_body`]: the body types, with no boxing on the proxied path;
//! - `trim`: memory handed back to the system after many connections closed;
//! - `uring` (feature `uring`): a prototype of the plain-request path on io_uring, measured
//!   by `scripts/bench`'s notes and used by no cluster.
//!
//! Requests whose path the lesson registered as master-owned (`/health`, stats, admin) are answered
//! here by an axum `Router`, because only the master sees the whole cluster. Everything else goes to
//! a worker chosen by the [`Selector`](crate::balance::Selector).
//!
//! Depends on `balance`, `http`, `wire`, `slot`, `config` and `shutdown`; the supervisor and the
//! cluster build it, and it knows neither.

pub mod accept;
pub(crate) mod front;
mod handed_head;
pub mod handoff;
pub mod pool;
pub mod proxy;
pub mod request_body;
pub mod response_body;
pub(crate) mod serve;
pub(crate) mod state;
pub(crate) mod threads;
pub(crate) mod tls;
mod trim;
mod tunnel;
mod upgrade;
pub mod upstreams;
#[cfg(feature = "uring")]
pub mod uring;

pub use pool::Backend;
pub use request_body::RequestBody;
pub use response_body::EdgeBody;
pub use upstreams::{Ready, Upstreams};
