//! Rust futures as asyncio awaitables, driven by the engine's runtime, with no thread per call
//! and no GIL taken by the runtime's threads.
//!
//! - A future is polled once where it is made. Most finish there (every decision of the memory
//!   store does): the answer is returned as a [`Ready`] awaitable, which completes without
//!   involving the event loop.
//! - Otherwise it becomes a task of the runtime, and the caller gets an `asyncio.Future` of the
//!   running loop. When the task finishes, it puts its output on the loop's queue and, if the
//!   queue was idle, writes one byte to a socket that the loop watches (`loop.add_reader`).
//!   The loop then drains the queue on its own thread, with the GIL, and completes the
//!   futures: the runtime's threads never wait for the GIL, and many answers that finish
//!   together cost the loop one wake-up.
//! - Cancelling the asyncio future (a cancelled task, a timeout) drops the Rust future at once,
//!   before the cancelled task resumes: a waiter leaves its queue, a rate limiter's reserved
//!   slot is given back. An output that arrives for a cancelled future is dropped unconverted, and
//!   what it holds cleans up in `Drop` (a permit nobody received is refunded).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::engine::{poll_once, runtime, BoxFuture};

/// Turns an output into the Python object an awaitable answers (on the loop's thread).
type Deliver = Box<dyn FnOnce(Python<'_>, Box<dyn Any + Send>) -> PyResult<Py<PyAny>> + Send>;

/// An awaitable for `fut`, whose output `deliver` turns into the answer (or the exception).
///
/// `deliver` runs with the GIL: at once if the future finishes on its first poll, otherwise on
/// the event loop's thread. If the awaiting task is cancelled first, it never runs, and the
/// output is dropped.
pub(crate) fn awaitable<'py, T, F, D>(
    py: Python<'py>,
    fut: F,
    deliver: D,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
    D: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    // The loop first: a future that has started (sent a command to Redis) must not be
    // dropped for want of a loop to answer on.
    let event_loop = running_loop(py)?;
    match poll_once(Box::pin(fut)) {
        Ok(out) => ready(py, deliver(py, out)),
        Err(pending) => bridged(py, &event_loop, pending, deliver),
    }
}

/// The running event loop (`RuntimeError` outside a coroutine, as for any awaitable).
fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    GET_RUNNING_LOOP
        .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py.import("asyncio")?.getattr("get_running_loop")?.unbind())
        })?
        .bind(py)
        .call0()
}

/// An awaitable that answers `result` at once.
pub(crate) fn ready<'py>(
    py: Python<'py>,
    result: PyResult<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(Bound::new(
        py,
        Ready {
            result: Mutex::new(Some(result)),
        },
    )?
    .into_any())
}

/// An awaitable whose answer is already known: awaiting it returns (or raises) at once,
/// without a trip through the event loop.
#[pyclass(frozen, module = "tollgate._tollgate")]
pub(crate) struct Ready {
    result: Mutex<Option<PyResult<Py<PyAny>>>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self) -> PyResult<Py<PyAny>> {
        match self.result.lock().take() {
            Some(Ok(v)) => Err(PyStopIteration::new_err((v,))),
            Some(Err(e)) => Err(e),
            None => Err(PyRuntimeError::new_err(
                "this awaitable has already been awaited",
            )),
        }
    }

    /// The generator protocol's `send`, for code that drives awaitables by hand.
    fn send(&self, _value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.__next__()
    }

    /// The generator protocol's `throw`: the exception is raised where the awaitable waits.
    #[pyo3(signature = (exc, _value=None, _tb=None))]
    fn throw(
        &self,
        exc: Bound<'_, PyAny>,
        _value: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.result.lock().take();
        let exc = match exc.cast::<PyType>() {
            Ok(ty) => ty.call0()?,
            Err(_) => exc,
        };
        Err(PyErr::from_value(exc))
    }

    /// The generator protocol's `close`.
    fn close(&self) {
        self.result.lock().take();
    }
}

/// What the runtime's tasks and one event loop share: finished outputs, and the socket pair
/// that wakes the loop.
struct Shared {
    done: Mutex<Vec<(u64, Box<dyn Any + Send>)>>,
    /// Whether a wake-up byte is on its way (so that one wake-up serves many outputs).
    armed: AtomicBool,
    tx: UnixStream,
    rx: UnixStream,
}

impl Shared {
    /// Queues a finished output and wakes the loop if it is not already woken.
    fn finish(&self, id: u64, out: Box<dyn Any + Send>) {
        self.done.lock().push((id, out));
        if !self.armed.swap(true, Ordering::SeqCst) {
            // A full socket buffer means the loop already has a wake-up to read.
            let _ = (&self.tx).write(&[1]);
        }
    }
}

/// A future handed to the loop, waiting for its task.
struct Waiting {
    future: Py<PyAny>,
    deliver: Deliver,
}

/// The bridge of one event loop: its queue of finished outputs and the futures waiting for
/// them. Made on the first awaitable that must wait on that loop; it lives as long as the
/// loop does.
#[pyclass(frozen, module = "tollgate._tollgate")]
pub(crate) struct LoopBridge {
    shared: Arc<Shared>,
    waiting: Mutex<HashMap<u64, Waiting>>,
    next: AtomicU64,
}

#[pymethods]
impl LoopBridge {
    /// Completes the futures whose tasks have finished (called by the loop when the wake-up
    /// socket is readable).
    fn _drain(&self, py: Python<'_>) -> PyResult<()> {
        // Read the wake-up bytes first, then disarm, then take the outputs: an output queued
        // after the take finds the bridge disarmed and writes a new byte.
        let mut buf = [0u8; 64];
        loop {
            match (&self.shared.rx).read(&mut buf) {
                Ok(n) if n == buf.len() => continue,
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.shared.armed.store(false, Ordering::SeqCst);
        let done = std::mem::take(&mut *self.shared.done.lock());
        // One future that cannot be completed must not strand the others: the first error is
        // reported after all have been tried.
        let mut first_error = None;
        for (id, out) in done {
            let Some(w) = self.waiting.lock().remove(&id) else {
                // Cancelled: the output's own `Drop` gives back what it holds.
                drop(out);
                continue;
            };
            if let Err(e) = complete(py, w, out) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Completes the future of `w` with `out`, unless it was cancelled (then `out` is dropped).
fn complete(py: Python<'_>, w: Waiting, out: Box<dyn Any + Send>) -> PyResult<()> {
    let fut = w.future.bind(py);
    if fut
        .call_method0(pyo3::intern!(py, "cancelled"))?
        .is_truthy()?
    {
        drop(out);
        return Ok(());
    }
    match (w.deliver)(py, out) {
        Ok(v) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,))?,
        Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.value(py),))?,
    };
    Ok(())
}

/// Called when a bridged future is done: if it was cancelled, drops the Rust future at once
/// (so that what it held is given back before the cancelled task runs again), ends its task
/// and forgets it.
#[pyclass(frozen, module = "tollgate._tollgate")]
struct CancelHook {
    bridge: Py<LoopBridge>,
    id: u64,
    slot: Arc<dyn Cancel>,
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl CancelHook {
    fn __call__(&self, py: Python<'_>, fut: Bound<'_, PyAny>) -> PyResult<()> {
        if fut
            .call_method0(pyo3::intern!(py, "cancelled"))?
            .is_truthy()?
        {
            self.slot.cancel();
            self.abort.abort();
            let forgotten = self.bridge.get().waiting.lock().remove(&self.id);
            drop(forgotten);
        }
        Ok(())
    }
}

/// A future that its task polls from a shared slot, so that a cancellation can drop it at
/// once from the event loop's thread (aborting a task drops its future later, on the
/// runtime's schedule).
struct Slot<T> {
    fut: Mutex<Option<BoxFuture<T>>>,
}

/// Drops a slot's future, whatever its output type.
trait Cancel: Send + Sync {
    fn cancel(&self);
}

impl<T: Send + 'static> Cancel for Slot<T> {
    fn cancel(&self) {
        let fut = self.fut.lock().take();
        drop(fut);
    }
}

impl<T> Slot<T> {
    /// Polls the future in the slot: its output, or `None` once it has been dropped.
    fn poll(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        let mut slot = self.fut.lock();
        let Some(fut) = slot.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => {
                *slot = None;
                std::task::Poll::Ready(Some(out))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static BRIDGES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The bridge of `event_loop`, made and registered with the loop on first use.
fn bridge_of<'py>(
    py: Python<'py>,
    event_loop: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, LoopBridge>> {
    let bridges = BRIDGES
        .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py
                .import("weakref")?
                .getattr("WeakKeyDictionary")?
                .call0()?
                .unbind())
        })?
        .bind(py);
    let found = bridges.call_method1(pyo3::intern!(py, "get"), (event_loop,))?;
    if let Ok(found) = found.cast_into::<LoopBridge>() {
        return Ok(found);
    }
    let (tx, rx) = UnixStream::pair()
        .and_then(|(tx, rx)| {
            tx.set_nonblocking(true)?;
            rx.set_nonblocking(true)?;
            Ok((tx, rx))
        })
        .map_err(|e| {
            PyRuntimeError::new_err(format!("tollgate: cannot make a wake-up socket: {e}"))
        })?;
    let fd = rx.as_raw_fd();
    let bridge = Bound::new(
        py,
        LoopBridge {
            shared: Arc::new(Shared {
                done: Mutex::new(Vec::new()),
                armed: AtomicBool::new(false),
                tx,
                rx,
            }),
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        },
    )?;
    event_loop.call_method1(
        pyo3::intern!(py, "add_reader"),
        (fd, bridge.getattr(pyo3::intern!(py, "_drain"))?),
    )?;
    bridges.set_item(event_loop, &bridge)?;
    Ok(bridge)
}

/// Hands `pending` to the runtime and returns an `asyncio.Future` of the running loop that
/// its output completes.
fn bridged<'py, T, D>(
    py: Python<'py>,
    event_loop: &Bound<'py, PyAny>,
    pending: BoxFuture<T>,
    deliver: D,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    D: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let bridge = bridge_of(py, event_loop)?;
    let future = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    let b = bridge.get();
    let id = b.next.fetch_add(1, Ordering::Relaxed);
    let erased: Deliver = Box::new(
        move |py, out: Box<dyn Any + Send>| match out.downcast::<T>() {
            Ok(out) => deliver(py, *out),
            Err(_) => Err(PyRuntimeError::new_err(
                "tollgate: an answer of the wrong type",
            )),
        },
    );
    b.waiting.lock().insert(
        id,
        Waiting {
            future: future.clone().unbind(),
            deliver: erased,
        },
    );
    let shared = Arc::clone(&b.shared);
    let slot = Arc::new(Slot {
        fut: Mutex::new(Some(pending)),
    });
    let polled = Arc::clone(&slot);
    let task = runtime().spawn(async move {
        if let Some(out) = std::future::poll_fn(|cx| polled.poll(cx)).await {
            shared.finish(id, Box::new(out));
        }
    });
    let hook = CancelHook {
        bridge: bridge.clone().unbind(),
        id,
        slot,
        abort: task.abort_handle(),
    };
    future.call_method1(pyo3::intern!(py, "add_done_callback"), (hook,))?;
    Ok(future)
}
