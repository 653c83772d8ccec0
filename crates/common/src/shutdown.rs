//! A shutdown notice that many tasks can wait on.
//!
//! Built on `tokio::sync::watch`: triggering it once wakes every waiter, and a waiter that starts
//! listening after the trigger returns at once (a broadcast would lose that notice).
//!
//! Depends on nothing else in the crate.

use tokio::sync::watch;

/// Fires the notice. Cloneable; triggering twice is harmless.
#[derive(Debug, Clone)]
pub struct Trigger(watch::Sender<bool>);

/// Waits for the notice. Cloneable and cheap.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected pair.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tells every [`Shutdown`] to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A new waiter for this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// True once the notice was sent.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// True if the notice was sent since this handle was made: one atomic load, for loops that
    /// must not re-register a waiter on every turn. (A notice sent before it was made does not
    /// count: [`Shutdown::wait`] sees that one.)
    pub(crate) fn changed(&self) -> bool {
        self.0.has_changed().unwrap_or(false)
    }

    /// Resolves when the notice is sent (at once if it already was). If every trigger was dropped
    /// without firing, it never resolves: nobody can ask for a shutdown any more.
    pub async fn wait(mut self) {
        if self.0.wait_for(|fired| *fired).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
