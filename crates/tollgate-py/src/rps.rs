//! The plain "N per second" limiter that many functions share, from sync and async code.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tollgate::{LimitKind, LimitSpec, Window};

use crate::bridge::awaitable;
use crate::clock::ManualClock;

/// At most ``per_second`` calls per second (or ``per_minute`` per minute), in bursts of up to
/// ``burst`` (default: one second's, or one minute's, worth).
///
/// Callers are served in arrival order: each takes the next free slot at once and sleeps until
/// it, so there is no polling. ``acquire()`` blocks (with the GIL released), ``await
/// aacquire()`` waits without blocking the event loop, and a task cancelled while it waits
/// gives its slot back. ``@limiter.limited`` rate-limits a function, sync or async; any
/// number of functions can share one limiter.
#[pyclass(frozen, subclass, module = "tollgate", name = "RateLimiter")]
pub(crate) struct RateLimiter {
    inner: Arc<tollgate::RateLimiter>,
}

#[pymethods]
impl RateLimiter {
    #[new]
    #[pyo3(signature = (per_second = None, *, per_minute = None, burst = None, clock = None))]
    fn new(
        per_second: Option<f64>,
        per_minute: Option<f64>,
        burst: Option<u64>,
        clock: Option<PyRef<'_, ManualClock>>,
    ) -> PyResult<Self> {
        let (rate, unit, name) = match (per_second, per_minute) {
            (Some(r), None) => (r, 1.0, "per_second"),
            (None, Some(r)) => (r, 60.0, "per_minute"),
            _ => {
                return Err(PyValueError::new_err(
                    "RateLimiter: give exactly one of per_second and per_minute",
                ))
            }
        };
        if !(rate.is_finite() && rate > 0.0) {
            return Err(PyValueError::new_err(format!(
                "{name}: must be a positive number (got {rate})"
            )));
        }
        // A whole rate is that many per window; a fractional one, one call per 1/rate of it.
        let (amount, window) = if rate.fract() == 0.0 && rate <= 1e12 {
            (rate as u64, Window::Length(Duration::from_secs_f64(unit)))
        } else {
            (1, Window::Length(Duration::from_secs_f64(unit / rate)))
        };
        let mut spec = LimitSpec::new(LimitKind::Requests, amount, window);
        if let Some(b) = burst {
            spec = spec.burst(b);
        }
        let limiter = tollgate::RateLimiter::new(spec)
            .map_err(|e| PyValueError::new_err(format!("RateLimiter: {e}")))?;
        let limiter = match clock {
            Some(c) => limiter.with_clock(c.inner.clone()),
            None => limiter,
        };
        Ok(RateLimiter {
            inner: Arc::new(limiter),
        })
    }

    /// Takes a call now if one is free; ``False`` (and nothing taken) otherwise.
    fn try_acquire(&self) -> bool {
        self.inner.try_acquire().is_ok()
    }

    /// Blocks until a call may go ahead (with the GIL released).
    fn acquire(&self, py: Python<'_>) {
        let inner = Arc::clone(&self.inner);
        py.detach(move || inner.acquire_blocking());
    }

    /// Waits until a call may go ahead, without blocking the event loop. A task cancelled
    /// while it waits gives its slot back.
    fn aacquire<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = Arc::clone(&self.inner);
        awaitable(py, async move { inner.acquire().await }, |py, ()| {
            Ok(py.None())
        })
    }

    /// The calls per window and the window, for ``repr``.
    fn __repr__(&self) -> String {
        let l = self.inner.limit();
        format!(
            "RateLimiter({} per {}, burst={})",
            l.amount(),
            l.window(),
            l.burst()
        )
    }
}
