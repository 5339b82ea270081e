//! Clocks: the core's clocks, and one that follows tokio's (pausable) time.

use tollgate_core::{Clock, SystemClock, Timestamp};

/// Wall-clock time that advances with tokio's clock, so tests with paused time
/// (`#[tokio::test(start_paused = true)]`) control it: sleeps in [`Limiter::acquire`] advance
/// it deterministically.
///
/// [`Limiter::acquire`]: crate::Limiter::acquire
#[derive(Clone, Debug)]
pub struct TokioClock {
    anchor_wall: Timestamp,
    anchor: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading the current wall time now, advancing with tokio's clock.
    pub fn new() -> Self {
        TokioClock::starting_at(SystemClock::new().now())
    }

    /// A clock reading `start` now, advancing with tokio's clock.
    pub fn starting_at(start: Timestamp) -> Self {
        TokioClock {
            anchor_wall: start,
            anchor: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.anchor_wall
            .saturating_add(tokio::time::Instant::now().saturating_duration_since(self.anchor))
    }
}
