//! A clock that moves only when told to, so that tests of code that uses a limiter on the
//! memory store are deterministic: no test waits for a window to pass.

use std::time::Duration;

use pyo3::prelude::*;
use tollgate::{Clock, Timestamp};

use crate::permit::seconds;

/// A clock for tests: it reads ``start`` (seconds since the epoch) until ``advance`` or
/// ``set`` moves it. Give it to ``Limiter(clock=...)`` or ``RateLimiter(clock=...)``; a
/// ``RateLimiter`` that would sleep advances it instead.
#[pyclass(frozen, module = "tollgate", name = "ManualClock")]
pub(crate) struct ManualClock {
    pub(crate) inner: tollgate::ManualClock,
}

#[pymethods]
impl ManualClock {
    #[new]
    #[pyo3(signature = (start = 1_000_000.0))]
    fn new(start: f64) -> PyResult<Self> {
        let start = seconds("start", start)?;
        Ok(ManualClock {
            inner: tollgate::ManualClock::new(Timestamp::from_micros(micros(start))),
        })
    }

    /// The time, in seconds since the epoch.
    #[getter]
    fn now(&self) -> f64 {
        self.inner.now().as_micros() as f64 / 1e6
    }

    /// Moves the clock forward by ``seconds``.
    fn advance(&self, seconds: f64) -> PyResult<()> {
        let d = crate::permit::seconds("seconds", seconds)?;
        self.inner.advance(d);
        Ok(())
    }

    /// Sets the clock (it may go backwards, to test a clock that does).
    fn set(&self, seconds: f64) -> PyResult<()> {
        let d = crate::permit::seconds("seconds", seconds)?;
        self.inner.set(Timestamp::from_micros(micros(d)));
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("ManualClock(now={:.6})", self.now())
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
