//! A measuring aid for `bench/bench.py`: the same decisions as `Limiter.check`, made in a Rust
//! loop, so that the benchmark can tell what the crossing from Python costs per call.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tollgate::{Cost, Subject};

use crate::backend::Backend;
use crate::limiter::Limiter;

/// Makes `n` decisions `check(tenant=tenants[i % len], provider=provider)` on a limiter of the
/// memory store, in Rust, with the GIL released; returns the seconds they took.
#[pyfunction]
#[pyo3(signature = (limiter, tenants, provider, n))]
pub(crate) fn _rust_check_loop(
    py: Python<'_>,
    limiter: PyRef<'_, Limiter>,
    tenants: Vec<String>,
    provider: Option<String>,
    n: usize,
) -> PyResult<f64> {
    let Backend::Memory(l) = &limiter.backend else {
        return Err(PyValueError::new_err("a limiter of the memory store"));
    };
    if tenants.is_empty() {
        return Err(PyValueError::new_err("tenants: at least one"));
    }
    let l = l.clone();
    let elapsed = py.detach(move || {
        let start = std::time::Instant::now();
        let mut allowed = 0u64;
        for i in 0..n {
            let mut s = Subject::new().tenant(tenants[i % tenants.len()].as_str());
            if let Some(p) = provider.as_deref() {
                s = s.provider(p);
            }
            if let Some(Ok(d)) = l.check_now(&s, Cost::ONE) {
                allowed += u64::from(d.is_allowed());
            }
        }
        std::hint::black_box(allowed);
        start.elapsed()
    });
    Ok(elapsed.as_secs_f64())
}
