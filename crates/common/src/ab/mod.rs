//! A/B tests: two variants served side by side, each user always on the same one, and whether
//! the difference in conversions is more than chance.
//!
//! Layout:
//! - [`experiment`]: [`AbTest`], assignment by a stable hash of (its own salt, user), exposures
//!   and conversions counted once per user, in a capped map;
//! - [`stats`]: the two-proportion z-test and the normal distribution it needs;
//! - [`exposing`]: [`Exposing`], the selector wrapper that counts exposures at the edge, and
//!   [`user_of`], who a request says its user is;
//! - [`mod@routes`]: the master's `GET /ab/status`, `POST /ab/convert`, `GET /ab/variant?user=U`,
//!   and [`page_routes`], each worker's `GET /ab/page`.
//!
//! Layer 4: depends on `config`, `http::routes`, and at its own layer on [`crate::flags::bucket`]
//! (the one hash every split uses), `balance` (the `Selector` it wraps) and `session` (the
//! cookie).

pub mod experiment;
pub mod exposing;
pub mod routes;
pub mod stats;

pub use experiment::{AbSettings, AbTest, Converted, Status, Variant};
pub use exposing::{Exposing, USER_HEADER, user_of};
pub use routes::{PAGE_PATH, page_routes, routes};
pub use stats::{ZTest, two_proportion_z};
