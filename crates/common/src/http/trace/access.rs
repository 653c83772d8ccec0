//! [`Access`]: what one request's access line says, and the two ways it is written: as a
//! `tracing` event, or straight into the process's log by the writer the cluster's logging
//! installs ([`write_directly_with`]).
//!
//! Why a second way: an event hands its fields to the formatter one by one through `dyn Value`
//! and `dyn Visit`, each a pair of virtual calls, with `method` and `path` formatted through
//! `core::fmt`. Under callgrind that visit was 2,200 of the 3,800 instructions the event cost a
//! proxied request, most of the rest being the dispatch to the formatter. A writer that is
//! handed the values themselves writes the same line without either. It applies only where the
//! cluster's own text format writes the line; a JSON line, a terminal's coloured line or any
//! other subscriber gets the event, so nothing else changes.

use std::sync::OnceLock;

use http::Method;

/// The target of the access log's events, which `cluster`'s logging writes by a formatter of
/// its own.
pub(crate) const ACCESS_TARGET: &str = "request";

/// One request, as its access line states it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Access<'a> {
    pub request_id: &'a str,
    pub method: &'a Method,
    pub path: &'a str,
    /// `X-Worker-Id`, or `master` for the master's own routes.
    pub worker: &'a str,
    pub status: u16,
    /// To the response head, in microseconds (the `X-Response-Time` header's figure).
    pub micros: u64,
}

/// Writes a line for an access in place of its event; false if it did not (the subscriber is
/// not the one it writes for), and then the event is sent.
pub(crate) type DirectWriter = fn(&Access<'_>) -> bool;

static DIRECT: OnceLock<DirectWriter> = OnceLock::new();

/// Installs the process's direct writer (once; a second call changes nothing).
pub(crate) fn write_directly_with(writer: DirectWriter) {
    let _ = DIRECT.set(writer);
}

impl Access<'_> {
    /// The line, by the direct writer if one is installed and takes it, else as an event.
    pub(crate) fn log(&self) {
        if DIRECT.get().is_some_and(|direct| direct(self)) {
            return;
        }
        self.event();
    }

    /// The line as a `tracing` event (target `request`, level `info`).
    pub(crate) fn event(&self) {
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = self.request_id,
            method = %self.method,
            path = %self.path,
            worker = self.worker,
            status = self.status,
            // To the microsecond, as `X-Response-Time`: a float of nanoseconds printed at its
            // shortest is noise digits, and a whole number of thousandths is a line the log's
            // formatter writes without the float formatter (`access_lines`).
            duration_ms = self.micros as f64 / 1000.0,
            "request"
        );
    }
}
