//! tollgate for Python: the `tollgate._tollgate` extension module, which the `tollgate`
//! package (in `python/tollgate`) re-exports with its Python parts (decorators, the ASGI
//! middleware, the exception classes).
//!
//! The binding is thin: each Python object wraps the library's own (a limiter, a decision, a
//! permit), and every decision is the library's. What this crate adds is the crossing:
//!
//! - `engine`: the tokio runtime the library's stores and waits run on;
//! - `bridge`: Rust futures as asyncio awaitables, completed on the event loop's thread;
//! - `backend`: one type over the stores a Python user can choose;
//! - `args`: the subject and cost from keyword arguments;
//! - the Python classes: `limiter`, `decision`, `permit`, `policy`, `rps`, `clock`;
//! - `errors`: the library's errors as the package's exceptions;
//! - `bench`: the Rust-side loop the benchmark compares `Limiter.check` with.

use pyo3::prelude::*;

mod args;
mod backend;
mod bench;
mod bridge;
mod clock;
mod decision;
mod engine;
mod errors;
mod limiter;
mod permit;
mod policy;
mod rps;

/// The native part of the `tollgate` package. Import `tollgate`, not this module.
#[pymodule]
fn _tollgate(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<limiter::Limiter>()?;
    m.add_class::<decision::Decision>()?;
    m.add_class::<decision::LimitStatus>()?;
    m.add_class::<decision::Usage>()?;
    m.add_class::<decision::Stats>()?;
    m.add_class::<permit::Permit>()?;
    m.add_class::<permit::Acquire>()?;
    m.add_class::<policy::Policy>()?;
    m.add_class::<rps::RateLimiter>()?;
    m.add_class::<clock::ManualClock>()?;
    m.add_class::<bridge::Ready>()?;
    m.add_function(wrap_pyfunction!(engine::_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(bench::_rust_check_loop, m)?)?;
    // A forked child must not use the parent's runtime, whose threads it does not have.
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("after_in_child", m.getattr("_after_fork_in_child")?)?;
    py.import("os")?
        .getattr("register_at_fork")?
        .call((), Some(&kwargs))?;
    Ok(())
}
