//! The process's log output: formatted lines gathered in memory and written to stderr in batches,
//! so a line per request (the access log) costs a copy, not a `write(2)`.
//!
//! Written straight to an unbuffered stderr, every line was a system call on the edge thread that
//! answered the request, through the lock every thread writing to stderr shares. Here a line is
//! appended to a buffer under a short lock and a flusher thread writes what gathered
//! [`FLUSH_AFTER`] later. Nothing is dropped: a log that loses lines under load loses them when
//! they matter most. If stderr stops taking lines (a pipe nobody reads), the buffer stops at
//! [`HIGH_WATER`] and the next writer writes it itself, waiting as it did before.
//!
//! Lines are never late where lateness would hurt: a `WARN` or `ERROR` line is written at once
//! with everything before it, and the buffer is written out when the process exits by any path
//! that runs `exit(3)` (returning from `main`, `std::process::exit`, as on a bad setting's exit 2),
//! through an `atexit` hook. Only a `SIGKILL` or an abort loses what is buffered: at most
//! [`FLUSH_AFTER`] of lines.
//!
//! Why not `tracing-appender`'s non-blocking writer: it takes the write off the request path too,
//! but copies each line into an allocation of its own, sends it over a channel and wakes its
//! worker thread, which at tens of thousands of lines a second is asleep for most of them (a
//! futex wake, a system call, per line). Here the flusher is woken once per batch.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long lines gather before the flusher writes them: short enough that a person tailing the
/// log sees each request as it happens.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(50);

/// The most bytes gathered before a writer writes them itself: with stderr stalled, memory stays
/// bounded and the writers wait, as they would on an unbuffered stderr.
pub(crate) const HIGH_WATER: usize = 64 * 1024;

/// The most bytes given to one `write(2)`: a pipe takes up to `PIPE_BUF` (4096 on Linux) bytes
/// from one writer without interleaving another's (POSIX `write`), and the master and its workers
/// share one stderr. Batches are cut at the last line end that fits, so no line is torn.
const PIPE_BUF: usize = 4096;

/// Lines gathered, and the flusher's wake-up.
struct Shared {
    lines: Mutex<Vec<u8>>,
    /// Taken for the whole of a write-out, so batches reach stderr in the order they gathered;
    /// it holds the batch being written, whose allocation is reused.
    writing: Mutex<Vec<u8>>,
    gathered: Condvar,
    /// The flusher thread is started with the first line it has to write, not before: the master
    /// sets its scheduling policy (`sched`) after the log is set up, and only threads started
    /// after that inherit it.
    flusher: Once,
    /// Whether the flusher thread failed to start: then every line is written at once.
    direct: AtomicBool,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn lock(m: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    // A thread that panicked mid-append left whole bytes; the log goes on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Starts the flusher thread if it is not running; false if it cannot be started.
    fn start_flusher(&'static self) -> bool {
        self.flusher.call_once(|| {
            let started = std::thread::Builder::new()
                .name("log-flusher".into())
                .spawn(move || flusher(self));
            self.direct.store(started.is_err(), Ordering::Relaxed);
        });
        !self.direct.load(Ordering::Relaxed)
    }
}

/// The `MakeWriter` of the process's subscriber, made by [`LogBuffer::install`].
#[derive(Clone, Copy)]
pub(crate) struct LogBuffer {
    shared: &'static Shared,
}

impl LogBuffer {
    /// The process's buffer; the first call registers the exit hook.
    pub(crate) fn install() -> Self {
        let mut fresh = false;
        let shared = SHARED.get_or_init(|| {
            fresh = true;
            Shared {
                lines: Mutex::new(Vec::with_capacity(HIGH_WATER)),
                writing: Mutex::new(Vec::with_capacity(HIGH_WATER)),
                gathered: Condvar::new(),
                flusher: Once::new(),
                direct: AtomicBool::new(false),
            }
        });
        if fresh {
            // SAFETY: `atexit` only records the function; `flush_at_exit` takes no arguments,
            // never unwinds (a failed write is ignored) and touches only the static above.
            unsafe {
                nix::libc::atexit(flush_at_exit);
            }
        }
        Self { shared }
    }
}

/// Waits for a first line, lets more gather for [`FLUSH_AFTER`], writes them out; again.
fn flusher(shared: &'static Shared) {
    loop {
        let lines = lock(&shared.lines);
        let lines = shared
            .gathered
            .wait_while(lines, |l| l.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        drop(lines);
        std::thread::sleep(FLUSH_AFTER);
        write_out(shared);
    }
}

extern "C" fn flush_at_exit() {
    flush();
}

/// Writes out every line gathered so far: before a message printed straight to stderr, so the
/// lines that led to it come first.
pub(crate) fn flush() {
    if let Some(shared) = SHARED.get() {
        write_out(shared);
    }
}

/// Takes what gathered (the writers go on appending meanwhile) and writes it to stderr.
fn write_out(shared: &Shared) {
    let mut batch = lock(&shared.writing);
    std::mem::swap(&mut *batch, &mut *lock(&shared.lines));
    let mut err = std::io::stderr().lock();
    let mut rest: &[u8] = &batch;
    while !rest.is_empty() {
        let cut = chunk_len(rest);
        // A log that cannot be written has nowhere to report it: the lines are dropped.
        let _ = err.write_all(&rest[..cut]);
        rest = &rest[cut..];
    }
    batch.clear();
}

/// How much of `rest` to write at once: all of it if it fits in [`PIPE_BUF`], else up to the last
/// line end that fits, else (a single longer line) up to the end of that line.
fn chunk_len(rest: &[u8]) -> usize {
    if rest.len() <= PIPE_BUF {
        return rest.len();
    }
    if let Some(end) = rest[..PIPE_BUF].iter().rposition(|&b| b == b'\n') {
        return end + 1;
    }
    rest.iter()
        .position(|&b| b == b'\n')
        .map_or(rest.len(), |end| end + 1)
}

/// One event's writer: the subscriber formats a whole line, then writes it here at once.
pub(crate) struct LineWriter {
    shared: &'static Shared,
    urgent: bool,
}

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let urgent = self.urgent || !self.shared.start_flusher();
        let mut lines = lock(&self.shared.lines);
        let first = lines.is_empty();
        lines.extend_from_slice(line);
        let full = lines.len() >= HIGH_WATER;
        drop(lines);
        if urgent || full {
            write_out(self.shared);
        } else if first {
            self.shared.gathered.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            shared: self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            shared: self.shared,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fit_a_pipe_and_end_on_a_line_end() {
        let line = [b"x".repeat(99), b"\n".to_vec()].concat();
        let many = line.repeat(100);
        assert_eq!(chunk_len(&many[..1000]), 1000, "a small batch goes whole");
        assert_eq!(
            chunk_len(&many),
            4000,
            "40 whole lines of 100 bytes fit in 4096"
        );
        let long = [b"y".repeat(5000), b"\n".to_vec(), line.clone()].concat();
        assert_eq!(chunk_len(&long), 5001, "a longer line goes whole, alone");
        let unended = b"z".repeat(5000);
        assert_eq!(chunk_len(&unended), 5000);
    }
}
