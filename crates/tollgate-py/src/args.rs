//! The subject and cost of a call, from the keyword arguments every limiter method takes.

use std::borrow::Cow;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tollgate::{Cost, Subject};

/// The known attributes of a subject, as passed from Python (borrowed, so that building the
/// subject of a decision copies nothing).
#[derive(Default)]
pub(crate) struct Who<'a> {
    pub(crate) tenant: Option<&'a str>,
    pub(crate) agent: Option<&'a str>,
    pub(crate) user: Option<&'a str>,
    pub(crate) provider: Option<&'a str>,
    pub(crate) model: Option<&'a str>,
    pub(crate) tier: Option<&'a str>,
}

impl<'a> Who<'a> {
    /// The subject with these attributes and the custom `labels` (a mapping of names to
    /// string values).
    pub(crate) fn subject(self, labels: Option<&Bound<'_, PyDict>>) -> PyResult<Subject<'a>> {
        let mut s = Subject::new();
        let known = [
            ("tenant", self.tenant),
            ("agent", self.agent),
            ("user", self.user),
            ("provider", self.provider),
            ("model", self.model),
            ("tier", self.tier),
        ];
        for (name, value) in known {
            if let Some(v) = value {
                s.set(name, v);
            }
        }
        if let Some(labels) = labels {
            for (k, v) in labels.iter() {
                let name = k
                    .cast::<PyString>()
                    .map_err(|_| PyTypeError::new_err("labels: every name must be a str"))?;
                let value = v.cast::<PyString>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "labels[{:?}]: the value must be a str",
                        name.to_string_lossy()
                    ))
                })?;
                s.set(
                    Cow::Owned(name.to_str()?.to_owned()),
                    Cow::Owned(value.to_str()?.to_owned()),
                );
            }
        }
        Ok(s)
    }
}

/// The cost of a call: `requests` (1 unless given) and `tokens`; with `input_tokens` or
/// `output_tokens`, the split (whose sum is the total unless `tokens` is given too).
pub(crate) fn cost(
    tokens: Option<u64>,
    requests: u64,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
) -> Cost {
    let c = match (input_tokens, output_tokens) {
        (None, None) => Cost::tokens(tokens.unwrap_or(0)),
        (i, o) => {
            let c = Cost::split(i.unwrap_or(0), o.unwrap_or(0));
            match tokens {
                Some(t) => c.with_tokens(t),
                None => c,
            }
        }
    };
    c.with_requests(requests)
}

/// The actual cost a permit reserved as `estimate` settles at: what is given, and the
/// estimate's amounts for what is not. `actual_tokens` (set on the permit during the call)
/// stands for `tokens` when that is not given.
pub(crate) fn settled_cost(
    estimate: Cost,
    actual_tokens: Option<u64>,
    tokens: Option<u64>,
    requests: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
) -> Cost {
    let split = input_tokens.is_some() || output_tokens.is_some();
    let input = input_tokens.unwrap_or(estimate.input_token_count());
    let output = output_tokens.unwrap_or(estimate.output_token_count());
    let total = tokens.or(actual_tokens).unwrap_or(if split {
        input.saturating_add(output)
    } else {
        estimate.token_count()
    });
    Cost::split(input, output)
        .with_tokens(total)
        .with_requests(requests.unwrap_or(estimate.request_count()))
}
