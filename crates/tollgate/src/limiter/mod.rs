//! The limiter: resolves a subject against the policy and asks the store for a decision.
//!
//! - `handle.rs`: [`Limiter`] and the state its clones share;
//! - `resolve.rs`: a subject resolved into a plan (one operation per applicable limit);
//! - `calls.rs`: the public decisions by subject (`check`, `admit`, `peek`, `reserve`, ...);
//! - `decide.rs`: the one decision path, sync first, then awaited;
//! - `fast.rs`: its specializations for one operation and for operations read in place;
//! - `usage.rs` and `reset.rs`: reading and forgetting buckets.
//!
//! Waiting (`wait.rs`), prepared subjects (`prepared.rs`), call limits (`call_limits.rs`) and
//! the subject index (`subjects.rs`) add their methods to [`Limiter`] from outside, through
//! the same decision path.

mod calls;
mod decide;
mod fast;
pub(crate) mod handle;
mod reset;
mod resolve;
pub(crate) mod usage;

pub use handle::Limiter;
pub use usage::LimitUsage;
