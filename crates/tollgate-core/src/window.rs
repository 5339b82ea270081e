//! The period a limit's amount refers to: a fixed length or a calendar month.
//!
//! Depends on the clock module only (for microseconds). Read from text by `names.rs`; aligned to
//! the calendar by `calendar.rs`.

use std::fmt;
use std::time::Duration;

use crate::clock::duration_to_micros_ceil;

/// The longest window a limit may have: ten years. Long enough for any budget, short enough that
/// all arithmetic on windows stays far from overflow.
pub const MAX_WINDOW: Duration = Duration::from_secs(10 * 366 * 86_400);

/// The period a limit's amount refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// A fixed length. `Window::Length(86_400 s)` with a fixed window is a calendar day.
    Length(Duration),
    /// A calendar month (fixed windows only: months differ in length).
    Month,
}

impl Window {
    /// One second.
    pub const SECOND: Window = Window::Length(Duration::from_secs(1));
    /// One minute.
    pub const MINUTE: Window = Window::Length(Duration::from_secs(60));
    /// One hour.
    pub const HOUR: Window = Window::Length(Duration::from_secs(3600));
    /// One day (a calendar day for fixed windows).
    pub const DAY: Window = Window::Length(Duration::from_secs(86_400));

    /// The window length in microseconds, or `None` for a calendar month.
    pub fn micros(self) -> Option<u64> {
        match self {
            Window::Length(d) => Some(duration_to_micros_ceil(d)),
            Window::Month => None,
        }
    }

    /// The nominal length: a month counts as 30 days (used for display and TTL estimates only).
    pub fn nominal(self) -> Duration {
        match self {
            Window::Length(d) => d,
            Window::Month => Duration::from_secs(30 * 86_400),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Month => f.write_str("month"),
            Window::Length(d) => match d.as_secs() {
                1 if d.subsec_nanos() == 0 => f.write_str("second"),
                60 if d.subsec_nanos() == 0 => f.write_str("minute"),
                3600 if d.subsec_nanos() == 0 => f.write_str("hour"),
                86_400 if d.subsec_nanos() == 0 => f.write_str("day"),
                _ => write!(f, "{}us", duration_to_micros_ceil(*d)),
            },
        }
    }
}
