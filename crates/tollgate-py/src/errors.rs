//! The Python exceptions: `RateLimited`, `PolicyError` and `StoreError`, defined in
//! `tollgate/_errors.py` (plain Python classes, so that they subclass `Exception` under the
//! stable ABI) and raised from here.

use pyo3::exceptions::{PyKeyError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

use crate::decision::Decision;

static RATE_LIMITED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static POLICY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static STORE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

const MODULE: &str = "tollgate._errors";

/// Builds an instance of the exception class `name` of `tollgate._errors` with `arg` and
/// keyword arguments `kwargs`; if even that fails (the package is broken), the failure itself.
fn raise<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    arg: impl IntoPyObject<'py>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyErr {
    let built = cell
        .import(py, MODULE, name)
        .and_then(|ty| ty.call((arg,), kwargs));
    match built {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// `tollgate.RateLimited` for a decision that did not admit the call.
pub(crate) fn rate_limited(py: Python<'_>, decision: tollgate::Decision) -> PyErr {
    match Py::new(py, Decision::from(decision)) {
        Ok(d) => raise(py, &RATE_LIMITED, "RateLimited", d, None),
        Err(e) => e,
    }
}

/// `tollgate.PolicyError` for a policy that cannot be used.
pub(crate) fn policy_error(py: Python<'_>, e: &tollgate::PolicyError) -> PyErr {
    let kwargs = PyDict::new(py);
    let loc = e.location.as_ref();
    let set = || -> PyResult<()> {
        kwargs.set_item("file", loc.map(|l| l.file.as_str()))?;
        kwargs.set_item("line", loc.map(|l| l.line))?;
        kwargs.set_item("column", loc.map(|l| l.column))?;
        kwargs.set_item("rule", e.rule.as_deref())?;
        kwargs.set_item("field", Some(e.field.as_str()))?;
        Ok(())
    };
    if let Err(err) = set() {
        return err;
    }
    raise(
        py,
        &POLICY_ERROR,
        "PolicyError",
        e.to_string(),
        Some(&kwargs),
    )
}

/// `tollgate.PolicyError` for a policy given in a form that is not a policy (a bad keyword,
/// an unknown key of a model's limits): `field` names what was wrong.
pub(crate) fn policy_input(py: Python<'_>, field: &str, message: &str) -> PyErr {
    policy_input_message(py, field, &format!("{field}: {message}"))
}

/// `tollgate.PolicyError` for an environment variable that cannot be used; `field` names it.
pub(crate) fn env_error(py: Python<'_>, e: &tollgate::env::EnvError) -> PyErr {
    policy_input_message(py, e.var(), &e.to_string())
}

/// `tollgate.PolicyError` with `message` as it is, naming `field`.
fn policy_input_message(py: Python<'_>, field: &str, message: &str) -> PyErr {
    let kwargs = PyDict::new(py);
    if let Err(e) = kwargs.set_item("field", field) {
        return e;
    }
    raise(py, &POLICY_ERROR, "PolicyError", message, Some(&kwargs))
}

/// `tollgate.StoreError` for a store that could not answer.
pub(crate) fn store_error(py: Python<'_>, e: &tollgate::StoreError) -> PyErr {
    let kwargs = PyDict::new(py);
    if let Err(err) = kwargs.set_item("transient", e.is_transient()) {
        return err;
    }
    raise(py, &STORE_ERROR, "StoreError", e.to_string(), Some(&kwargs))
}

/// The Python exception for an error of the library.
pub(crate) fn to_py(py: Python<'_>, e: tollgate::Error) -> PyErr {
    match e {
        tollgate::Error::Policy(p) => policy_error(py, &p),
        tollgate::Error::Store(s) => store_error(py, &s),
        tollgate::Error::UnknownRule(name) => {
            PyKeyError::new_err(format!("the policy has no rule named {name:?}"))
        }
        tollgate::Error::Io { path, source } => {
            let kwargs = PyDict::new(py);
            let set = kwargs
                .set_item("file", &path)
                .and_then(|()| kwargs.set_item("field", None::<&str>));
            if let Err(err) = set {
                return err;
            }
            raise(
                py,
                &POLICY_ERROR,
                "PolicyError",
                format!("{path}: cannot read the policy: {source}"),
                Some(&kwargs),
            )
        }
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// Turns a library result into a Python one.
pub(crate) fn check<T>(py: Python<'_>, r: Result<T, tollgate::Error>) -> PyResult<T> {
    r.map_err(|e| to_py(py, e))
}
