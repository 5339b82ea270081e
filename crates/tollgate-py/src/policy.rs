//! Policies from Python: the same TOML as the service, the built-in default, or per-model
//! limits in the form per-model limiters are configured (`rpm`, `tpm`, `max_parallel`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tollgate::store::FailureMode;
use tollgate::{LimitKind, LimitSpec, Rule, Window};

use crate::errors;

/// A validated set of rules. Every rule that matches a call's subject applies; a call is
/// admitted only if all of their limits admit it.
///
/// Make one with ``Policy.load(path)`` or ``Policy.from_toml(text)`` (the service's format;
/// errors are ``PolicyError`` naming the file, line and field), ``Policy.default()`` (60
/// requests and 100,000 tokens per minute for each tenant and provider) or
/// ``Policy.per_model({...})``.
#[pyclass(frozen, module = "tollgate", name = "Policy")]
#[derive(Clone)]
pub(crate) struct Policy {
    pub(crate) inner: tollgate::Policy,
}

#[pymethods]
impl Policy {
    /// The built-in policy: 60 requests and 100,000 tokens per minute for each tenant and
    /// provider.
    #[staticmethod]
    fn default() -> Policy {
        Policy {
            inner: tollgate::default_policy(),
        }
    }

    /// Reads a policy file (TOML).
    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Policy> {
        let inner = py.detach(|| tollgate::Policy::load(&path));
        Ok(Policy {
            inner: errors::check(py, inner)?,
        })
    }

    /// Reads a policy from TOML text; ``file`` names it in errors.
    #[staticmethod]
    #[pyo3(signature = (source, file = "<string>"))]
    fn from_toml(py: Python<'_>, source: &str, file: &str) -> PyResult<Policy> {
        tollgate::Policy::from_toml(source, file)
            .map(|inner| Policy { inner })
            .map_err(|e| errors::policy_error(py, &e))
    }

    /// Per-model limits: ``{"gpt-4o": {"rpm": 500, "tpm": 30000, "max_parallel": 10}}``.
    ///
    /// Each model gets its own buckets. Keys: ``rpm``, ``tpm`` (per minute), ``rph``,
    /// ``tph`` (per hour), ``rpd``, ``tpd`` (per day), ``max_parallel`` (or
    /// ``max_parallel_requests``: calls in flight). ``default`` gives the limits of models
    /// not listed (each such model its own buckets); without it they are not limited.
    /// ``failure_mode`` says what the limits do while a shared store fails: ``local`` (the
    /// default: each instance enforces its share), ``open`` or ``closed``.
    #[staticmethod]
    #[pyo3(signature = (models, default = None, *, failure_mode = None))]
    fn per_model(
        py: Python<'_>,
        models: &Bound<'_, PyDict>,
        default: Option<&Bound<'_, PyDict>>,
        failure_mode: Option<&str>,
    ) -> PyResult<Policy> {
        let mode: FailureMode = match failure_mode {
            None => FailureMode::default(),
            Some(m) => m
                .parse()
                .map_err(|m: String| errors::policy_input(py, "failure_mode", &m))?,
        };
        let mut rule = Rule::builder("models").per("model").failure_mode(mode);
        if let Some(default) = default {
            for spec in model_limits(py, default, "default")? {
                rule = rule.limit(spec);
            }
        }
        for (name, limits) in models.iter() {
            let name = name
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("models: every model name must be a str"))?
                .to_str()?
                .to_owned();
            let field = format!("models[{name:?}]");
            let limits = limits
                .cast::<PyDict>()
                .map_err(|_| PyTypeError::new_err(format!("{field}: the limits must be a dict")))?;
            let specs = model_limits(py, limits, &field)?;
            rule = rule.override_when([("model", name)], specs);
        }
        let inner = tollgate::Policy::builder()
            .rule(rule)
            .build()
            .map_err(|e| errors::policy_error(py, &e))?;
        Ok(Policy { inner })
    }

    /// The names of the rules, in order.
    #[getter]
    fn rules(&self) -> Vec<&'static str> {
        self.inner.rules().iter().map(|r| r.name()).collect()
    }

    fn __repr__(&self) -> String {
        format!("Policy(rules={:?})", self.rules())
    }
}

/// The limits of one model's entry (`field` names it in errors).
fn model_limits(
    py: Python<'_>,
    limits: &Bound<'_, PyDict>,
    field: &str,
) -> PyResult<Vec<LimitSpec>> {
    let mut specs = Vec::new();
    for (key, value) in limits.iter() {
        let key = key
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("{field}: every key must be a str")))?;
        let key = key.to_str()?;
        let at = format!("{field}[{key:?}]");
        let amount: u64 = value
            .extract()
            .map_err(|_| errors::policy_input(py, &at, "must be a whole number, at least 1"))?;
        let (kind, window) = match key {
            "rpm" => (LimitKind::Requests, Window::MINUTE),
            "tpm" => (LimitKind::Tokens, Window::MINUTE),
            "rph" => (LimitKind::Requests, Window::HOUR),
            "tph" => (LimitKind::Tokens, Window::HOUR),
            "rpd" => (LimitKind::Requests, Window::DAY),
            "tpd" => (LimitKind::Tokens, Window::DAY),
            "max_parallel" | "max_parallel_requests" => {
                specs.push(LimitSpec::concurrency(amount));
                continue;
            }
            _ => {
                return Err(errors::policy_input(
                    py,
                    &at,
                    "unknown limit (rpm, tpm, rph, tph, rpd, tpd, max_parallel)",
                ))
            }
        };
        specs.push(LimitSpec::new(kind, amount, window));
    }
    if specs.is_empty() {
        return Err(errors::policy_input(py, field, "names no limit"));
    }
    Ok(specs)
}

/// The policy a limiter is made with: `None` for the built-in one, a [`Policy`], or the path
/// of a TOML file (`str` or `os.PathLike`).
pub(crate) fn policy_arg(
    py: Python<'_>,
    policy: Option<&Bound<'_, PyAny>>,
) -> PyResult<tollgate::Policy> {
    let Some(policy) = policy.filter(|p| !p.is_none()) else {
        return Ok(tollgate::default_policy());
    };
    if let Ok(p) = policy.cast::<Policy>() {
        return Ok(p.get().inner.clone());
    }
    let path: std::path::PathBuf = policy.extract().map_err(|_| {
        PyTypeError::new_err(
            "policy: expected a tollgate.Policy or the path of a TOML file (str or os.PathLike)",
        )
    })?;
    Ok(Policy::load(py, path)?.inner)
}
