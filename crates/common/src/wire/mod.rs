//! The wire between master and worker: everything both ends of the conversation must agree on.
//!
//! Layout:
//! - [`env`](mod@env): the environment a master sets when it re-executes its binary as a worker;
//! - [`ipc`]: typed, length-delimited JSON messages over the inherited control socketpair;
//! - `socket`: the Unix stream HTTP travels on, watched for readability only until a write would
//!   block;
//! - `handoff`: the datagram socketpair that passes accepted connections (`DISPATCH=handoff`) and,
//!   in proxy dispatch, WebSocket upgrades with the bytes the master read of them.
//!
//! Both the supervisor (master side) and the worker import this folder, and neither imports the
//! other: the contract sits between them. Depends on `error` only.

pub mod env;
pub(crate) mod handoff;
pub mod ipc;
pub(crate) mod socket;
