//! What the limiter answers, as Python objects: `Decision` (with `LimitStatus` per limit and
//! the HTTP headers), `Usage` per limit, and `Stats`.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tollgate::headers::HeaderStyle;
use tollgate::{Outcome, Window};

/// Seconds as a float, the unit Python's `time.sleep` and `asyncio.sleep` take.
pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A window's length in seconds (a calendar month counts as 30 days) and its name.
fn window_secs(w: Window) -> f64 {
    secs(w.nominal())
}

/// The answer to one call.
///
/// ``allowed`` says whether the call may go ahead (``bool(decision)`` says the same). A
/// denial says when to come back (``retry_after``, in seconds), why (``reason``: ``requests``,
/// ``tokens``, ``concurrency``, ``quota``, ``too_large``, ``store_full`` or ``unavailable``) and
/// with which stable code (``code``: ``E4404`` requests, ``E4405`` tokens, ``E4406``
/// concurrency, ``E4407`` quota, ``E4413`` too large, ``E4503`` unavailable, ``E4400``
/// otherwise). ``limits`` holds the status of every limit that applied, and ``headers()`` the
/// HTTP rate-limit headers of the decision.
#[pyclass(frozen, module = "tollgate", name = "Decision")]
pub(crate) struct Decision {
    pub(crate) inner: tollgate::Decision,
}

impl From<tollgate::Decision> for Decision {
    fn from(inner: tollgate::Decision) -> Self {
        Decision { inner }
    }
}

#[pymethods]
impl Decision {
    /// Whether the call may go ahead (it has been spent from every limit that applied).
    #[getter]
    fn allowed(&self) -> bool {
        self.inner.is_allowed()
    }

    fn __bool__(&self) -> bool {
        self.inner.is_allowed()
    }

    /// How the decision came out: ``allowed``, ``denied``, ``too_large`` (the cost can never
    /// fit: waiting will not help), ``store_full`` or ``unavailable`` (the shared store is
    /// failing and a rule fails closed).
    #[getter]
    fn outcome(&self) -> &'static str {
        self.inner.outcome().as_str()
    }

    /// For a denial by a limit: the seconds after which the same call would be admitted if
    /// nothing else happened. ``None`` for every other outcome.
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.inner.retry_after().map(secs)
    }

    /// Why the call was denied (``None`` if it was allowed).
    #[getter]
    fn reason(&self) -> Option<&'static str> {
        self.inner.reason().map(|r| r.code())
    }

    /// The stable error code of the denial, ``E44xx`` (``None`` if allowed).
    #[getter]
    fn code(&self) -> Option<&'static str> {
        self.inner.reason().map(|r| r.error_code())
    }

    /// Whether the decision was made without the shared store (Redis failing), by the rules'
    /// failure modes.
    #[getter]
    fn degraded(&self) -> bool {
        self.inner.is_degraded()
    }

    /// The status of every limit that applied, in policy order.
    #[getter]
    fn limits(&self) -> Vec<LimitStatus> {
        self.inner
            .statuses()
            .iter()
            .map(|s| LimitStatus(*s))
            .collect()
    }

    /// The limit that denied the call, if one did.
    #[getter]
    fn denied_by(&self) -> Option<LimitStatus> {
        self.inner.denied_by().map(|s| LimitStatus(*s))
    }

    /// The HTTP headers of the decision, lower-case names to values: OpenAI's
    /// ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the IETF ``ratelimit-policy``
    /// and ``ratelimit``; on a denial ``retry-after`` (whole seconds, rounded up) and
    /// ``retry-after-ms``; ``x-should-retry: false`` for a cost that can never fit; and
    /// ``x-tollgate-degraded: true`` for a decision made without the shared store.
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (name, value) in headers(&self.inner) {
            out.set_item(name, value)?;
        }
        Ok(out)
    }

    /// The decision as plain data (what an HTTP API would answer as JSON).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("allowed", self.allowed())?;
        d.set_item("outcome", self.outcome())?;
        d.set_item("reason", self.reason())?;
        d.set_item("error_code", self.code())?;
        d.set_item("retry_after_ms", self.inner.retry_after().map(ceil_millis))?;
        d.set_item("degraded", self.degraded())?;
        if !self.inner.is_allowed() {
            d.set_item("message", self.inner.to_string())?;
        }
        let limits = self
            .inner
            .statuses()
            .iter()
            .map(|s| LimitStatus(*s).to_dict(py))
            .collect::<PyResult<Vec<_>>>()?;
        d.set_item("limits", limits)?;
        Ok(d)
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        match (self.inner.outcome(), self.inner.retry_after()) {
            (Outcome::Allowed, _) => format!(
                "Decision(allowed=True, limits={}{})",
                self.inner.statuses().len(),
                if self.inner.is_degraded() {
                    ", degraded=True"
                } else {
                    ""
                }
            ),
            (_, retry) => format!(
                "Decision(allowed=False, outcome={:?}, reason={:?}, code={:?}, retry_after={})",
                self.outcome(),
                self.reason().unwrap_or(""),
                self.code().unwrap_or(""),
                retry.map_or_else(|| "None".to_owned(), |d| format!("{:.6}", secs(d))),
            ),
        }
    }
}

/// Milliseconds, rounded up so that a client never comes back too early.
fn ceil_millis(d: Duration) -> u128 {
    d.as_micros().div_ceil(1000)
}

/// Every header of the decision, as [`Decision::headers`] documents.
pub(crate) fn headers(d: &tollgate::Decision) -> Vec<(&'static str, String)> {
    let mut out = tollgate::headers::headers(d, HeaderStyle::Both);
    if let Some(wait) = d.retry_after() {
        out.push(("retry-after-ms", ceil_millis(wait).max(1).to_string()));
    }
    if d.outcome() == Outcome::TooLarge {
        out.push(("x-should-retry", "false".to_owned()));
    }
    if d.is_degraded() {
        out.push(("x-tollgate-degraded", "true".to_owned()));
    }
    out
}

/// The status of one limit in a decision.
#[pyclass(frozen, module = "tollgate", name = "LimitStatus")]
#[derive(Clone)]
pub(crate) struct LimitStatus(tollgate::LimitStatus);

#[pymethods]
impl LimitStatus {
    /// The rule the limit belongs to.
    #[getter]
    fn rule(&self) -> &'static str {
        self.0.rule
    }
    /// The limit's label within its rule.
    #[getter]
    fn label(&self) -> &'static str {
        self.0.label
    }
    /// What the limit counts: ``requests``, ``tokens``, ``input_tokens``, ``output_tokens`` or
    /// ``concurrency``.
    #[getter]
    fn kind(&self) -> &'static str {
        self.0.kind.as_str()
    }
    /// The amount per window (for concurrency: the slots).
    #[getter]
    fn amount(&self) -> u64 {
        self.0.amount
    }
    /// The most that can be spent at once (the burst).
    #[getter]
    fn capacity(&self) -> u64 {
        self.0.capacity
    }
    /// The window's length in seconds (a calendar month counts as 30 days).
    #[getter]
    fn window(&self) -> f64 {
        window_secs(self.0.window)
    }
    /// The window's name: ``second``, ``minute``, ``hour``, ``day``, ``month`` or a length.
    #[getter]
    fn per(&self) -> String {
        self.0.window.to_string()
    }
    /// Whether the limit is a budget of a day or more.
    #[getter]
    fn quota(&self) -> bool {
        self.0.quota
    }
    /// Whether this limit admitted the call.
    #[getter]
    fn admitted(&self) -> bool {
        self.0.admitted
    }
    /// Units left after the decision.
    #[getter]
    fn remaining(&self) -> u64 {
        self.0.remaining
    }
    /// Seconds until the limit is fully available again.
    #[getter]
    fn reset_after(&self) -> f64 {
        secs(self.0.reset_after)
    }
    /// Seconds until this limit would admit the same call (0 if it admits it now).
    #[getter]
    fn retry_after(&self) -> f64 {
        secs(self.0.retry_after)
    }

    /// The status as plain data.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("rule", self.rule())?;
        d.set_item("limit", self.label())?;
        d.set_item("kind", self.kind())?;
        d.set_item("amount", self.amount())?;
        d.set_item("capacity", self.capacity())?;
        d.set_item("per", self.per())?;
        d.set_item("admitted", self.admitted())?;
        d.set_item("remaining", self.remaining())?;
        d.set_item("reset_after_ms", ceil_millis(self.0.reset_after))?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "LimitStatus(rule={:?}, kind={:?}, amount={}, per={:?}, remaining={}, admitted={})",
            self.0.rule,
            self.kind(),
            self.0.amount,
            self.per(),
            self.0.remaining,
            if self.0.admitted { "True" } else { "False" }
        )
    }
}

/// How much of one limit is in use (from ``Limiter.usage``).
#[pyclass(frozen, module = "tollgate", name = "Usage")]
pub(crate) struct Usage(pub(crate) tollgate::LimitUsage);

#[pymethods]
impl Usage {
    /// The rule.
    #[getter]
    fn rule(&self) -> &'static str {
        self.0.rule
    }
    /// The limit's label within its rule.
    #[getter]
    fn label(&self) -> &'static str {
        self.0.label
    }
    /// What the limit counts.
    #[getter]
    fn kind(&self) -> &'static str {
        self.0.kind.as_str()
    }
    /// The amount per window.
    #[getter]
    fn amount(&self) -> u64 {
        self.0.amount
    }
    /// The window's length in seconds (a calendar month counts as 30 days).
    #[getter]
    fn window(&self) -> f64 {
        window_secs(self.0.window)
    }
    /// The window's name.
    #[getter]
    fn per(&self) -> String {
        self.0.window.to_string()
    }
    /// Units spent and not yet refilled (above ``capacity`` while in debt).
    #[getter]
    fn used(&self) -> u64 {
        self.0.used
    }
    /// The most the bucket holds.
    #[getter]
    fn capacity(&self) -> u64 {
        self.0.capacity
    }
    /// Units that could be spent now.
    #[getter]
    fn available(&self) -> u64 {
        self.0.available
    }
    /// Seconds until the bucket is fully available again.
    #[getter]
    fn reset_after(&self) -> f64 {
        secs(self.0.reset_after)
    }

    /// The usage as plain data.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("rule", self.rule())?;
        d.set_item("limit", self.label())?;
        d.set_item("kind", self.kind())?;
        d.set_item("amount", self.amount())?;
        d.set_item("per", self.per())?;
        d.set_item("used", self.used())?;
        d.set_item("capacity", self.capacity())?;
        d.set_item("available", self.available())?;
        d.set_item("reset_after", self.reset_after())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Usage(rule={:?}, kind={:?}, used={}, capacity={}, available={}, reset_after={:.3})",
            self.0.rule,
            self.kind(),
            self.0.used,
            self.0.capacity,
            self.0.available,
            self.reset_after()
        )
    }
}

/// Counts of decisions since the limiter was made (from ``Limiter.stats``).
#[pyclass(frozen, module = "tollgate", name = "Stats")]
pub(crate) struct Stats(pub(crate) tollgate::StatsSnapshot);

#[pymethods]
impl Stats {
    /// Decisions that admitted the call.
    #[getter]
    fn allowed(&self) -> u64 {
        self.0.allowed
    }
    /// Decisions that denied it.
    #[getter]
    fn denied(&self) -> u64 {
        self.0.denied
    }
    /// ``denied / (allowed + denied)``, 0 when there were none.
    #[getter]
    fn deny_rate(&self) -> f64 {
        self.0.deny_rate
    }
    /// Buckets holding state, per rule, where the store can tell (``None`` for Redis).
    #[getter]
    fn active_buckets<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(counts) = &self.0.active_buckets else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        for (rule, n) in counts {
            d.set_item(*rule, *n)?;
        }
        Ok(Some(d))
    }

    /// The counts as plain data.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("allowed", self.0.allowed)?;
        d.set_item("denied", self.0.denied)?;
        d.set_item("deny_rate", self.0.deny_rate)?;
        d.set_item("active_buckets", self.active_buckets(py)?)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Stats(allowed={}, denied={}, deny_rate={:.4})",
            self.0.allowed, self.0.denied, self.0.deny_rate
        )
    }
}
