//! Where the store's background tasks (the pipeline and the settlement batches) run.
//!
//! A store's connection runs its own driver task on the runtime the store connected on. The
//! store's background tasks go to that same runtime rather than to whichever runtime made the
//! first call: a current-thread runtime runs its tasks only while it is blocked on (a blocking
//! facade's runtime, a test's), so a task started there would stall every caller on the other
//! runtimes between two of its calls. If the home runtime has shut down, the caller's runtime
//! takes the task.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// The runtime a store connected on, if it connected on one.
#[derive(Clone, Debug, Default)]
pub(super) struct Home(Option<Handle>);

impl Home {
    /// The runtime of the calling task, if there is one.
    pub(super) fn here() -> Self {
        Home(Handle::try_current().ok())
    }

    /// Starts `task` on a fresh channel, on the home runtime or, if that has shut down (or
    /// there is none), on the caller's, and sends it `first`. Returns the channel's sender, or
    /// `first` back if no runtime would take the task.
    pub(super) fn start<T, F>(
        &self,
        first: T,
        task: impl Fn(mpsc::UnboundedReceiver<T>) -> F,
    ) -> Result<mpsc::UnboundedSender<T>, T>
    where
        T: Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut item = first;
        for handle in self.0.iter().cloned().chain(Handle::try_current().ok()) {
            let (tx, rx) = mpsc::unbounded_channel();
            // On a runtime that has shut down, the task is dropped at once, and with it the
            // receiver: the send below fails and the next runtime is tried.
            handle.spawn(task(rx));
            match tx.send(item) {
                Ok(()) => return Ok(tx),
                Err(unsent) => item = unsent.0,
            }
        }
        Err(item)
    }
}
