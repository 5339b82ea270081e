//! Where the store's background tasks (the pipeline, the settlement batches, a cluster's slot
//! map re-reads) run, and where a cluster's node connections are made.
//!
//! A store's connection runs its own driver task on the runtime the store connected on (a
//! cluster node's connection, on the runtime it was made on: so, here). The store's
//! background tasks go to that same runtime rather than to whichever runtime made the
//! first call: a current-thread runtime runs its tasks only while it is blocked on (a blocking
//! facade's runtime, a test's), so a task started there would stall every caller on the other
//! runtimes between two of its calls. If the home runtime has shut down, the caller's runtime
//! takes the task.
//!
//! Two limits. The connection manager starts a new driver on the runtime of the call that finds
//! the connection broken, so after a reconnect the driver may live elsewhere than the home
//! runtime; a store used from several runtimes is best connected on a multi-thread runtime
//! that outlives them. And calls queued to a task whose runtime shuts down under them fail as
//! of unknown outcome (they are never retried: one may have been sent); the next call starts
//! the task again.

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

    /// Runs the future `make` builds on the home runtime (or, as in [`start`](Self::start), the
    /// caller's) and answers its output; `None` if no runtime would take it, or it was dropped
    /// with its runtime.
    pub(super) async fn run<T, F>(&self, make: impl Fn() -> F) -> Option<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (out, mut answer) = mpsc::unbounded_channel();
        self.start((), |mut go| {
            let (task, out) = (make(), out.clone());
            async move {
                if go.recv().await.is_some() {
                    let _ = out.send(task.await);
                }
            }
        })
        .ok()?;
        drop(out);
        answer.recv().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    /// The next item on `back`, failing the test rather than hanging if none comes.
    async fn recv(back: &mut mpsc::UnboundedReceiver<u32>) -> Option<u32> {
        tokio::time::timeout(Duration::from_secs(10), back.recv())
            .await
            .expect("an answer within 10 s")
    }

    /// Echoes each item back on `out`.
    async fn echo(mut rx: mpsc::UnboundedReceiver<u32>, out: mpsc::UnboundedSender<u32>) {
        while let Some(v) = rx.recv().await {
            let _ = out.send(v);
        }
    }

    #[test]
    fn the_task_runs_on_the_home_runtime() {
        let home_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let home = home_rt.block_on(async { Home::here() });
        let (out, mut back) = mpsc::unbounded_channel();
        // Started from a runtime that is never driven again: only the home runtime can answer.
        let idle = current_thread();
        let tx = idle
            .block_on(async { home.start(7, |rx| echo(rx, out.clone())) })
            .expect("started");
        home_rt.block_on(async {
            assert_eq!(
                recv(&mut back).await,
                Some(7),
                "the task runs on the home runtime"
            );
            tx.send(8).expect("the task is alive");
            assert_eq!(recv(&mut back).await, Some(8));
        });
    }

    /// A home taken on a runtime that has since shut down.
    fn home_of_a_shut_down_runtime() -> Home {
        let gone = current_thread();
        let home = gone.block_on(async { Home::here() });
        drop(gone);
        home
    }

    #[test]
    fn a_shut_down_home_gives_way_to_the_callers_runtime() {
        let home = home_of_a_shut_down_runtime();
        let (out, mut back) = mpsc::unbounded_channel();
        current_thread().block_on(async {
            let tx = home
                .start(1, |rx| echo(rx, out.clone()))
                .expect("the caller's runtime takes it");
            assert_eq!(recv(&mut back).await, Some(1));
            tx.send(2).expect("the task is alive");
            assert_eq!(recv(&mut back).await, Some(2));
        });
    }

    #[test]
    fn run_answers_from_the_home_runtime() {
        let home_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("home-worker")
            .enable_all()
            .build()
            .expect("a runtime");
        let home = home_rt.block_on(async { Home::here() });
        let ran_on = current_thread()
            .block_on(home.run(|| async { std::thread::current().name().map(str::to_owned) }));
        assert_eq!(ran_on, Some(Some("home-worker".to_owned())));
    }

    #[test]
    fn run_falls_back_to_the_callers_runtime() {
        let home = home_of_a_shut_down_runtime();
        assert_eq!(current_thread().block_on(home.run(|| async { 5 })), Some(5));
    }

    #[test]
    fn with_no_runtime_at_all_nothing_runs() {
        let home = home_of_a_shut_down_runtime();
        assert_eq!(futures::executor::block_on(home.run(|| async { 5 })), None);
    }

    #[test]
    fn with_no_runtime_at_all_the_item_comes_back() {
        let home = home_of_a_shut_down_runtime();
        let (out, _back) = mpsc::unbounded_channel();
        assert_eq!(home.start(3, |rx| echo(rx, out.clone())).err(), Some(3));
    }
}
