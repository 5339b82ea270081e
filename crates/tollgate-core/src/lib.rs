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

// The modules from the bottom up; each uses only modules before it in this list, so none
// imports another in a circle: `clock`, `kind` and `verdict` use nothing of the crate; `error`
// names kinds; `window` counts in the clock's microseconds; `calendar` aligns windows to days
// and months; `names` reads kinds, algorithms, windows and offsets from text; `limit`
// validates them into a `Limit`; `algorithms` decide with limits; `bucket` dispatches to them.
pub mod algorithms;
mod bucket;
mod calendar;
mod clock;
mod error;
mod kind;
mod limit;
mod names;
mod verdict;
mod window;

pub use algorithms::concurrency::LeaseId;
pub use bucket::BucketState;
pub use calendar::{fixed_window, UtcOffset};
pub use clock::{duration_to_micros_ceil, Clock, ManualClock, SystemClock, Timestamp};
pub use error::LimitError;
pub use kind::{Algorithm, LimitKind};
pub use limit::{GcraParams, Limit, LimitSpec, DEFAULT_LEASE};
pub use names::parse_duration;
pub use verdict::{Usage, Verdict};
pub use window::{Window, MAX_WINDOW};
