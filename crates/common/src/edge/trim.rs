//! Giving memory back to the system once many client connections have closed.
//!
//! glibc's malloc keeps what a program frees for its next allocations, in one arena per thread
//! that allocates (so one per edge thread), and returns it to the system only from the top of each
//! arena. After thousands of connections close, their freed buffers and tasks sit in the middle of
//! the arenas: measured, a minute after 15,000 idle connections closed the master still held
//! 176 MB, all of its peak. `malloc_trim(0)` walks every arena and hands each whole free page back
//! (`madvise(MADV_DONTNEED)`): with it, 8 MB, where it started.
//!
//! It runs here, on a thread of its own, only after a large drop in the number of open
//! connections: trimming walks the heap with each arena locked in turn, which is not something to
//! do on an edge thread or on every close. The alternative, a bounded pool of buffers reused by new
//! connections, would not return the tasks' memory, and would hold its own between peaks.
//!
//! Depends on nothing but the edge's connection cap (its semaphore, shared by every thread).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;

/// How often the number of open connections is looked at.
const EVERY: Duration = Duration::from_secs(1);

/// A trim follows a drop of at least this many open connections since the last trim or the
/// highest count since (a few MB of buffers and tasks at the least; fewer are not worth the walk).
const DROP: usize = 1000;

/// Starts the thread that trims after large drops; it ends within [`EVERY`] of the edge's end.
pub(crate) fn spawn(slots: &Arc<Semaphore>) {
    let slots = Arc::downgrade(slots);
    let spawned = std::thread::Builder::new()
        .name("edge-trim".into())
        .spawn(move || watch(slots));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the memory-trimming thread; memory freed by closed connections stays with the master");
    }
}

fn watch(slots: Weak<Semaphore>) {
    // Free permits rise as connections close: the fewest seen is the most connections open.
    let mut fewest_free = usize::MAX;
    loop {
        std::thread::sleep(EVERY);
        let Some(free) = slots.upgrade().map(|s| s.available_permits()) else {
            return;
        };
        fewest_free = fewest_free.min(free);
        if free >= fewest_free.saturating_add(DROP) {
            let closed = free - fewest_free;
            let started = std::time::Instant::now();
            trim();
            tracing::debug!(closed, took = ?started.elapsed(), "trimmed the allocator after connections closed");
            fewest_free = free;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes each arena's lock itself and may be called from any thread at any
    // time; it only returns free pages, so no allocation of ours is touched.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Other allocators (musl's, the BSDs') return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
