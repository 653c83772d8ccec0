//! Logging for master and workers: one subscriber each, writing to stderr (workers inherit the
//! master's), as text or JSON lines, through the process's `LogBuffer` (`crate::log_buffer`).

use std::io::IsTerminal;

use super::access_lines::{self, AccessLines};
use crate::config::LogFormat;
use crate::log_buffer::LogBuffer;

/// Installs the subscriber; `RUST_LOG` filters, `info` by default.
pub(super) fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: in a file or a pipe they are noise, and
    // formatting them showed in the access log's profile.
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(LogBuffer::install());
    // Workers inherit stderr, so every line says which process wrote it: the span carries
    // `master` or `worker{id=N}`, and the master's runtime threads enter it too.
    let _ = match format {
        // The access log's lines by hand, the rest by the library (see `access_lines`).
        LogFormat::Text => {
            // The access log's lines go straight into the log when this subscriber is the one
            // that would write them (see `access_lines::write_direct`, which checks).
            crate::http::trace::write_directly_with(access_lines::write_direct);
            builder
                .event_format(AccessLines::new(
                    tracing_subscriber::fmt::format().with_target(false),
                    ansi,
                ))
                .try_init()
        }
        LogFormat::Json => builder.json().try_init(),
    };
}
