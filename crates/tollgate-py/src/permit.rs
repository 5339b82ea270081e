//! Permits and `acquire`: a reservation held while the call runs, settled against what the
//! call actually used, as a context manager (sync and async) or by hand.

use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;
use tollgate::{Cost, Subject};

use crate::args::settled_cost;
use crate::backend::{Acquired, AnyPermit, Backend};
use crate::bridge::{awaitable, ready};
use crate::decision::Decision;
use crate::engine::{self, SIGNAL_SLICE};
use crate::errors;

/// A granted reservation: the estimated cost has been spent and the call holds its
/// concurrency slots until the permit is settled.
///
/// - ``commit(tokens=...)`` settles against the actual usage: the difference is refunded, or
///   charged (a charge never fails; the bucket goes into debt and later calls wait longer).
/// - ``cancel()`` refunds everything.
/// - Setting ``actual_tokens`` during the call makes the context manager commit that amount.
///
/// Settlement happens once; later calls do nothing. A permit dropped unsettled releases its
/// slots and keeps the estimate spent.
#[pyclass(frozen, module = "tollgate", name = "Permit")]
pub(crate) struct Permit {
    held: Mutex<Option<AnyPermit>>,
    decision: tollgate::Decision,
    estimate: Cost,
    actual_tokens: Mutex<Option<u64>>,
}

impl Permit {
    fn new(p: AnyPermit, estimate: Cost) -> Self {
        Permit {
            decision: p.decision().clone(),
            held: Mutex::new(Some(p)),
            estimate,
            actual_tokens: Mutex::new(None),
        }
    }

    /// The permit, taken out to be settled; `None` if it was settled already.
    fn take(&self) -> Option<AnyPermit> {
        self.held.lock().take()
    }

    /// The cost the permit settles at when its context manager exits normally.
    fn finishing_cost(&self) -> Cost {
        settled_cost(
            self.estimate,
            *self.actual_tokens.lock(),
            None,
            None,
            None,
            None,
        )
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(p) = self.held.get_mut().take() {
            // The library's permit releases its slots on drop, through the runtime for Redis.
            let _guard = engine::runtime().enter();
            drop(p);
        }
    }
}

/// `None` as a Python object, the answer of a settlement.
fn none(py: Python<'_>) -> Py<PyAny> {
    py.None()
}

#[pymethods]
impl Permit {
    /// The decision that granted the permit.
    #[getter]
    fn decision(&self) -> Decision {
        Decision::from(self.decision.clone())
    }

    /// The tokens reserved (the estimate).
    #[getter]
    fn tokens(&self) -> u64 {
        self.estimate.token_count()
    }

    /// Whether the permit has been settled (committed, cancelled or released).
    #[getter]
    fn settled(&self) -> bool {
        self.held.lock().is_none()
    }

    /// The tokens the call actually used, if known: the context manager commits this amount
    /// when the block exits normally (the estimate if it is not set).
    #[getter]
    fn get_actual_tokens(&self) -> Option<u64> {
        *self.actual_tokens.lock()
    }

    #[setter]
    fn set_actual_tokens(&self, tokens: Option<u64>) {
        *self.actual_tokens.lock() = tokens;
    }

    /// Settles against the actual usage and releases the slots. Amounts not given are
    /// settled at the estimate (``tokens`` at ``actual_tokens`` if that is set). Blocks (with
    /// the GIL released) only while a shared store answers.
    ///
    /// Raises ``StoreError`` if the store fails (the permit still counts as settled: a retry
    /// cannot charge twice).
    #[pyo3(signature = (tokens=None, *, input_tokens=None, output_tokens=None, requests=None))]
    fn commit(
        &self,
        py: Python<'_>,
        tokens: Option<u64>,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
        requests: Option<u64>,
    ) -> PyResult<()> {
        let actual = settled_cost(
            self.estimate,
            *self.actual_tokens.lock(),
            tokens,
            requests,
            input_tokens,
            output_tokens,
        );
        let Some(p) = self.take() else {
            return Ok(());
        };
        let r = engine::block_on(py, p.commit(actual), None)?;
        errors::check(py, r)
    }

    /// ``commit``, awaitable.
    #[pyo3(signature = (tokens=None, *, input_tokens=None, output_tokens=None, requests=None))]
    fn acommit<'py>(
        &self,
        py: Python<'py>,
        tokens: Option<u64>,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
        requests: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let actual = settled_cost(
            self.estimate,
            *self.actual_tokens.lock(),
            tokens,
            requests,
            input_tokens,
            output_tokens,
        );
        let Some(p) = self.take() else {
            return ready(py, Ok(none(py)));
        };
        awaitable(py, p.commit(actual), |py, r| {
            errors::check(py, r).map(|()| none(py))
        })
    }

    /// Refunds everything the reservation spent and releases its slots.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        let Some(p) = self.take() else {
            return Ok(());
        };
        let r = engine::block_on(py, p.cancel(), None)?;
        errors::check(py, r)
    }

    /// ``cancel``, awaitable.
    fn acancel<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some(p) = self.take() else {
            return ready(py, Ok(none(py)));
        };
        awaitable(py, p.cancel(), |py, r| {
            errors::check(py, r).map(|()| none(py))
        })
    }

    /// Extends the concurrency leases to a full lease from now (for calls longer than a
    /// lease, such as long streams). Returns whether every slot was still held.
    fn renew(&self, py: Python<'_>) -> PyResult<bool> {
        // The permit stays held while it renews: take it out and put it back.
        let Some(p) = self.take() else {
            return Ok(false);
        };
        let (p, r) = engine::block_on(
            py,
            async move {
                let r = p.renew().await;
                (p, r)
            },
            None,
        )?;
        *self.held.lock() = Some(p);
        errors::check(py, r)
    }

    /// Renews the concurrency leases every ``every`` seconds in the background until the
    /// permit is settled.
    fn keep_alive(&self, every: f64) -> PyResult<()> {
        let every = seconds("every", every)?;
        if let Some(p) = self.held.lock().as_mut() {
            p.keep_alive(every);
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "Permit(tokens={}, settled={})",
            self.estimate.token_count(),
            if self.held.lock().is_none() {
                "True"
            } else {
                "False"
            }
        )
    }
}

/// A duration in seconds from Python: finite and not negative.
pub(crate) fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "{name}: must be a finite number of seconds, at least 0 (got {s})"
        ))
    })
}

/// The longest wait: `None` waits as long as it takes.
pub(crate) fn max_wait(timeout: Option<f64>) -> PyResult<Duration> {
    match timeout {
        None => Ok(Duration::MAX),
        Some(t) => seconds("timeout", t),
    }
}

/// A pending ``acquire``: use it with ``with`` or ``async with`` (or ``await`` it) to wait
/// for a permit.
///
/// Entering waits until the call is admitted or ``timeout`` has passed (never busy-polling;
/// waiters on one bucket are served in arrival order) and raises ``RateLimited`` if it was
/// not admitted. Leaving the block:
///
/// - normally: the permit is committed at ``permit.actual_tokens`` if that was set, else at
///   the estimate, unless it was settled in the block (``permit.commit(...)``);
/// - by an exception, including ``asyncio.CancelledError`` and ``KeyboardInterrupt``: the
///   permit is cancelled, so its tokens are refunded and its slot released, as if the call
///   had not been made.
///
/// A task cancelled while it waits gives up its place and spends nothing.
#[pyclass(frozen, module = "tollgate", name = "Acquire")]
pub(crate) struct Acquire {
    backend: Backend,
    subject: Subject<'static>,
    cost: Cost,
    wait: Duration,
    permit: Mutex<Option<Py<Permit>>>,
}

impl Acquire {
    pub(crate) fn new(
        backend: Backend,
        subject: Subject<'static>,
        cost: Cost,
        wait: Duration,
    ) -> Self {
        Acquire {
            backend,
            subject,
            cost,
            wait,
            permit: Mutex::new(None),
        }
    }

    /// The permit made of `acquired`, kept for `__exit__`, or `RateLimited`.
    fn grant(
        slf: &Py<Self>,
        py: Python<'_>,
        acquired: Result<Acquired, tollgate::Error>,
        cost: Cost,
    ) -> PyResult<Py<Permit>> {
        match errors::check(py, acquired)? {
            Acquired::Granted(fresh) => {
                let Some(p) = fresh.take() else {
                    return Err(pyo3::exceptions::PyRuntimeError::new_err(
                        "tollgate: a permit was granted twice",
                    ));
                };
                let permit = Py::new(py, Permit::new(p, cost))?;
                *slf.get().permit.lock() = Some(permit.clone_ref(py));
                Ok(permit)
            }
            Acquired::Denied(d) => Err(errors::rate_limited(py, d)),
        }
    }

    /// The awaitable that waits for the permit.
    fn start<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let (backend, subject, cost, wait) = (
            this.backend.clone(),
            this.subject.clone(),
            this.cost,
            this.wait,
        );
        let me = slf.unbind();
        awaitable(
            py,
            async move { backend.acquire(&subject, cost, wait).await },
            move |py, acquired| Acquire::grant(&me, py, acquired, cost).map(Py::into_any),
        )
    }
}

#[pymethods]
impl Acquire {
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Py<Permit>> {
        let py = slf.py();
        let this = slf.get();
        let acquired = engine::block_on(
            py,
            this.backend.acquire(&this.subject, this.cost, this.wait),
            Some(SIGNAL_SLICE),
        )?;
        Acquire::grant(&slf.clone().unbind(), py, acquired, this.cost)
    }

    #[pyo3(signature = (exc_type, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let Some(permit) = self.permit.lock().take() else {
            return Ok(false);
        };
        let permit = permit.get();
        let Some(p) = permit.take() else {
            return Ok(false);
        };
        if exc_type.is_some_and(|t| !t.is_none()) {
            // The block failed: refund, and let its exception through (a store error here
            // would only hide it; the lease expires if the refund did not reach the store).
            let _ = engine::block_on(py, p.cancel(), None)?;
            return Ok(false);
        }
        let r = engine::block_on(py, p.commit(permit.finishing_cost()), None)?;
        errors::check(py, r).map(|()| false)
    }

    fn __aenter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        Acquire::start(slf)
    }

    #[pyo3(signature = (exc_type, _exc=None, _tb=None))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        exc_type: Option<Bound<'py, PyAny>>,
        _exc: Option<Bound<'py, PyAny>>,
        _tb: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let no = || {
            pyo3::types::PyBool::new(py, false)
                .to_owned()
                .into_any()
                .unbind()
        };
        let Some(permit) = self.permit.lock().take() else {
            return ready(py, Ok(no()));
        };
        let permit = permit.get();
        let Some(p) = permit.take() else {
            return ready(py, Ok(no()));
        };
        if let Some(t) = exc_type.filter(|t| !t.is_none()) {
            let cancelled = py.import("asyncio")?.getattr("CancelledError")?;
            let is_cancel = py
                .import("builtins")?
                .getattr("issubclass")?
                .call1((&t, &cancelled))?
                .is_truthy()?;
            if is_cancel {
                // A cancelled task may be cancelled again while it awaits, which would drop
                // the refund half-way: it runs on its own and the block exits at once.
                engine::detach(async move {
                    let _ = p.cancel().await;
                });
                return ready(py, Ok(no()));
            }
            // Any other exception: the refund is made before the block exits, so that what
            // runs next sees it.
            return awaitable(py, p.cancel(), move |py, r| {
                errors::check(py, r).map(|_| {
                    pyo3::types::PyBool::new(py, false)
                        .to_owned()
                        .into_any()
                        .unbind()
                })
            });
        }
        awaitable(py, p.commit(permit.finishing_cost()), move |py, r| {
            errors::check(py, r).map(|()| {
                pyo3::types::PyBool::new(py, false)
                    .to_owned()
                    .into_any()
                    .unbind()
            })
        })
    }

    /// ``await limiter.acquire(...)``: the permit, to settle by hand (``commit`` or
    /// ``cancel``).
    fn __await__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        let py = slf.py();
        Acquire::start(slf)?.call_method0(pyo3::intern!(py, "__await__"))
    }

    fn __repr__(&self) -> String {
        format!(
            "Acquire(subject={:?}, tokens={})",
            self.subject.to_string(),
            self.cost.token_count()
        )
    }
}
