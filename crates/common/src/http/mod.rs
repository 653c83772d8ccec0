//! HTTP/1.1 plumbing the edge and the workers share, independent of what a cluster is.
//!
//! Layout:
//! - `check`: what a request must be before it is served (RFC 9112's MUSTs hyper leaves to us);
//! - `buffers`: the plain loop's read and write buffers, given back while a connection is idle;
//! - `head`: the spans of a parsed head's headers, shared by the request and response parsers;
//! - `recycle`: per-thread caches of what each request allocates (its answer's heap block, header
//!   maps), so the hot path skips the allocator without holding memory per idle connection;
//! - `server`: the lean loop that serves *plain* requests (no body, no upgrade) and hands a
//!   connection to hyper at its first request that is not plain;
//! - `client`: the master's HTTP/1.1 client for its workers, one pooled connection driven by the
//!   task of the request that holds it; generic over the request body type;
//! - [`headers`]: the proxy hop's header policy (hop-by-hop, `X-Forwarded-For`, request ids);
//! - [`forwarded`]: who the client is ([`TrustedProxies`](forwarded::TrustedProxies));
//! - [`rate_limit`]: the GCRA rate limit per client IP, a tower middleware;
//! - [`trace`]: request ids, `X-Response-Time` and request log lines, a tower middleware;
//! - `deadline`: one timer per connection for its header and upstream deadlines;
//! - [`routes`]: [`MasterRoutes`](routes::MasterRoutes), the paths the master answers itself.
//!
//! Depends on `error` and `wire::socket` only; knows nothing of slots, balancing or the edge.
//! The server and client exist because hyper measured slower on the hot path (see each file's
//! docs); they are security-critical, so each framing decision cites RFC 9112.

pub(crate) mod buffers;
pub(crate) mod check;
pub(crate) mod client;
pub(crate) mod deadline;
pub mod forwarded;
pub(crate) mod head;
pub mod headers;
pub mod rate_limit;
pub(crate) mod recycle;
pub mod routes;
pub(crate) mod server;
pub mod trace;
