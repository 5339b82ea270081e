//! The pure heart of tollgate: clocks, limits and the admission algorithms.
//!
//! Every algorithm is a pure function of `(state, now, cost, limit)`: no I/O, no wall clock, no
//! locks. Stores own atomicity; the Redis scripts implement the same functions and are tested
//! against these.
//!
//! ```
//! use std::time::Duration;
//! use tollgate_core::{BucketState, LimitKind, LimitSpec, Timestamp, Window};
//!
//! // 60 requests per minute, at most 10 at once.
//! let limit = LimitSpec::new(LimitKind::Requests, 60, Window::MINUTE)
//!     .burst(10)
//!     .build()?;
//! let mut bucket = BucketState::new(&limit);
//! let now = Timestamp::from_secs(1_700_000_000);
//! for _ in 0..10 {
//!     assert!(bucket.evaluate(&limit, now, 1).admitted);
//!     bucket.spend(&limit, now, 1, 0);
//! }
//! let verdict = bucket.evaluate(&limit, now, 1);
//! assert!(!verdict.admitted);
//! assert_eq!(verdict.retry_after_us, 1_000_000); // one request refills every second
//! # Ok::<(), tollgate_core::LimitError>(())
//! ```

#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod algorithms;
mod bucket;
mod calendar;
mod clock;
mod error;
mod limit;
mod verdict;

pub use algorithms::concurrency::LeaseId;
pub use bucket::BucketState;
pub use calendar::{fixed_window, UtcOffset};
pub use clock::{duration_to_micros_ceil, Clock, ManualClock, SystemClock, Timestamp};
pub use error::LimitError;
pub use limit::{
    parse_duration, Algorithm, GcraParams, Limit, LimitKind, LimitSpec, Window, DEFAULT_LEASE,
    MAX_WINDOW,
};
pub use verdict::{Usage, Verdict};
