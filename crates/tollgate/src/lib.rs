//! tollgate: rate limiting for AI inference traffic.
//!
//! Decide, for each call to a model, whether it may go ahead now, and if not, exactly when.
//! Limit requests, tokens and in-flight calls per tenant, agent, user, provider and model, with
//! overrides and tiers, in one process (this crate's memory store) or across a fleet.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::{Cost, LimitKind, LimitSpec, Limiter, Policy, Rule, Subject, Window};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = Policy::builder()
//!     .rule(
//!         Rule::builder("per-tenant")
//!             .per("tenant")
//!             .when("model", "gpt-4*")
//!             .limit(LimitSpec::new(LimitKind::Requests, 500, Window::MINUTE))
//!             .limit(LimitSpec::new(LimitKind::Tokens, 40_000, Window::MINUTE))
//!             .limit(LimitSpec::concurrency(10))
//!             .override_when([("tenant", "premium")], [
//!                 LimitSpec::new(LimitKind::Requests, 2_000, Window::MINUTE),
//!                 LimitSpec::new(LimitKind::Tokens, 400_000, Window::MINUTE),
//!             ]),
//!     )
//!     .build()?;
//! let limiter = Limiter::with_policy(policy);
//! let who = Subject::new().tenant("acme").model("gpt-4o");
//!
//! // Reserve the estimate (and a concurrency slot), call the model, settle the actual usage.
//! let mut permit = limiter
//!     .acquire(&who, Cost::tokens(8_000), Duration::from_secs(5))
//!     .await?
//!     .into_result()
//!     .map_err(|denied| format!("rate limited: {denied}"))?;
//! // ... call the model ...
//! permit.commit(Cost::tokens(6_250)).await?;
//!
//! let usage = limiter.usage(&who).await?;
//! assert_eq!(usage[1].used, 6_250);
//!
//! // A denial says exactly when to come back.
//! let big = limiter.check(&who, Cost::tokens(39_000)).await?;
//! assert!(!big.is_allowed());
//! assert!(big.retry_after().is_some());
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
// Decisions and permits are returned by value on purpose: the hot path allocates nothing.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

mod admission;
mod blocking;
pub mod call_limits;
mod clock;
mod cost;
mod decision;
pub mod env;
mod error;
pub mod headers;
pub mod key;
mod limiter;
mod permit;
mod plan;
pub mod policy;
mod prepared;
mod rps;
mod scratch;
mod stats;
pub mod store;
mod subject;
mod subject_index;
pub mod subjects;
mod sync;
#[cfg(feature = "tower")]
pub mod tower;
mod wait;
mod wait_queues;

pub use admission::{Admission, Denier};
pub use blocking::{BlockingLimiter, BlockingPermit};
pub use call_limits::{CallLimit, CallLimits, CallLimitsError};
pub use clock::TokioClock;
pub use cost::Cost;
pub use decision::{Decision, DenyReason, LimitStatus, Outcome};
pub use error::{Error, Location, PolicyError, StoreError};
pub use headers::HeaderStyle;
pub use limiter::{LimitUsage, Limiter};
pub use permit::{Permit, Reservation};
pub use policy::{default_policy, Policy, Rule, Unmatched};
pub use prepared::Prepared;
pub use rps::{Limited, RateLimiter};
pub use stats::StatsSnapshot;
pub use store::memory::{AtCapacity, MemoryStore};
pub use subject::{Attr, Subject};
pub use subjects::{SubjectPage, SubjectUsage};

pub use tollgate_core::{
    Algorithm, Clock, LimitKind, LimitSpec, ManualClock, SystemClock, Timestamp, UtcOffset, Window,
};
