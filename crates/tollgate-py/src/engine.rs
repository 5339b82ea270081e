//! The engine's tokio runtime: it runs the Redis connections, the fallback store's deadlines,
//! the waits of `acquire`, and every awaitable this module hands to asyncio.
//!
//! One multi-thread runtime per process, made on first use. A process made by `fork` does not
//! inherit the runtime's threads, so a forked child makes its own on first use (the parent's is
//! left behind: it cannot be shut down from a process that does not run it). Limiters on Redis
//! keep their connections on the runtime they were made on: make them after forking.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// How many times this process has been forked into (counted in each child by
/// [`_after_fork_in_child`], which the module registers with `os.register_at_fork`).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// The runtime, and the fork count it was made under.
static RUNTIME: Mutex<Option<(u64, &'static Runtime)>> = Mutex::new(None);

/// The engine's runtime, made on first use (and again in a forked child).
pub(crate) fn runtime() -> &'static Runtime {
    let forks = FORKS.load(Ordering::Acquire);
    let mut slot = RUNTIME.lock();
    if let Some((made_at, rt)) = *slot {
        if made_at == forks {
            return rt;
        }
    }
    let rt: &'static Runtime = Box::leak(Box::new(build()));
    *slot = Some((forks, rt));
    rt
}

/// Called in a child process right after `fork`: the parent's runtime threads do not exist
/// here, so the next use makes a new runtime.
#[pyfunction]
pub(crate) fn _after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::AcqRel);
}

fn build() -> Runtime {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("tollgate-engine")
        .enable_all()
        .build();
    match built {
        Ok(rt) => rt,
        // Without a runtime nothing here can run; a process that cannot start two threads
        // has bigger problems, and the message says which.
        Err(e) => panic!("tollgate: cannot start the engine's runtime: {e}"),
    }
}

/// A boxed future that the engine can move between threads.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Polls `fut` once, inside the runtime's context, without waiting: its output if it is
/// ready at once (every call that the memory store answers is), otherwise the future back,
/// to be driven by the runtime. A future may be polled by one waker and then by another, so
/// handing the pending future to a task afterwards is sound.
pub(crate) fn poll_once<T>(mut fut: BoxFuture<T>) -> Result<T, BoxFuture<T>> {
    let _guard = runtime().enter();
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(fut),
    }
}

/// Runs `fut` to completion in the background: at once if it completes on its first poll,
/// otherwise as a task of the runtime. For settlements that nobody waits for (a refund when an
/// awaiting task was cancelled, a permit dropped unsettled).
pub(crate) fn detach<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if let Err(rest) = poll_once(Box::pin(fut)) {
        runtime().spawn(rest);
    }
}

/// Runs `fut` to completion on this thread with the GIL released, checking for signals
/// (Ctrl-C) every `slice` of waiting: a `KeyboardInterrupt` drops the future, which gives up
/// what it waited for.
pub(crate) fn block_on<T: Send>(
    py: Python<'_>,
    fut: impl Future<Output = T> + Send,
    slice: Option<Duration>,
) -> PyResult<T> {
    let rt = runtime();
    let Some(slice) = slice else {
        return Ok(py.detach(|| rt.block_on(fut)));
    };
    let mut fut = std::pin::pin!(fut);
    loop {
        let step =
            py.detach(|| rt.block_on(async { tokio::time::timeout(slice, fut.as_mut()).await }));
        match step {
            Ok(v) => return Ok(v),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// How often a blocking wait looks for signals.
pub(crate) const SIGNAL_SLICE: Duration = Duration::from_millis(100);
