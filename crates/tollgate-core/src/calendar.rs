//! Calendar alignment of fixed windows: day and month boundaries at a fixed offset from UTC.
//!
//! [`UtcOffset`] is read from text in `names.rs`.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate};

use crate::clock::Timestamp;
use crate::error::LimitError;
use crate::window::Window;

const MICROS_PER_SEC: i128 = 1_000_000;

/// A fixed offset from UTC, in seconds east (`+05:30` is 19,800). Fixed windows start at
/// midnight at this offset. Daylight-saving zones are deliberately not supported: a budget whose
/// day is 23 or 25 hours long surprises more people than it helps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UtcOffset(i32);

impl UtcOffset {
    /// UTC itself.
    pub const UTC: UtcOffset = UtcOffset(0);

    /// An offset of `seconds` east of UTC.
    ///
    /// # Errors
    /// [`LimitError::BadUtcOffset`] unless the offset is strictly within ±24 hours.
    pub fn from_seconds(seconds: i32) -> Result<Self, LimitError> {
        if seconds.unsigned_abs() >= 86_400 {
            return Err(LimitError::BadUtcOffset(seconds.to_string()));
        }
        Ok(UtcOffset(seconds))
    }

    /// Seconds east of UTC.
    pub fn seconds(self) -> i32 {
        self.0
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60)
    }
}

/// The fixed window that contains `now`: its index (increasing with time) and its end.
// Every operand is a u64, an i32 or a calendar index widened to i128: none can overflow.
#[allow(clippy::arithmetic_side_effects)]
pub fn fixed_window(now: Timestamp, window: Window, offset: UtcOffset) -> (u64, Timestamp) {
    let offset_us = i128::from(offset.seconds()) * MICROS_PER_SEC;
    let local = i128::from(now.as_micros()) + offset_us;
    match window.micros() {
        Some(w) => {
            let w = i128::from(w.max(1));
            let idx = local.div_euclid(w);
            let end = (idx + 1) * w - offset_us;
            (clamp_u64(idx), Timestamp::from_micros(clamp_u64(end)))
        }
        None => {
            let local_i64 = i64::try_from(local).unwrap_or(i64::MAX);
            let date = DateTime::from_timestamp_micros(local_i64)
                .map(|d| d.date_naive())
                .unwrap_or(NaiveDate::MAX);
            let (year, month) = (date.year(), date.month());
            let idx = i128::from(year) * 12 + i128::from(month) - 1;
            let (ny, nm) = if month == 12 {
                (year.saturating_add(1), 1)
            } else {
                (year, month + 1)
            };
            let end_local = NaiveDate::from_ymd_opt(ny, nm, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| i128::from(d.and_utc().timestamp_micros()))
                .unwrap_or(i128::MAX / 2);
            (
                clamp_u64(idx),
                Timestamp::from_micros(clamp_u64(end_local - offset_us)),
            )
        }
    }
}

fn clamp_u64(v: i128) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(rfc3339: &str) -> Timestamp {
        let d = DateTime::parse_from_rfc3339(rfc3339).unwrap();
        Timestamp::from_micros(d.timestamp_micros() as u64)
    }

    #[test]
    fn days_end_at_midnight_at_the_offset() {
        let (i1, end) = fixed_window(ts("2026-03-14T23:59:59Z"), Window::DAY, UtcOffset::UTC);
        assert_eq!(end, ts("2026-03-15T00:00:00Z"));
        let (i2, _) = fixed_window(ts("2026-03-15T00:00:00Z"), Window::DAY, UtcOffset::UTC);
        assert_eq!(i2, i1 + 1);
        let ist: UtcOffset = "+05:30".parse().unwrap();
        let (_, end) = fixed_window(ts("2026-03-14T12:00:00Z"), Window::DAY, ist);
        assert_eq!(end, ts("2026-03-14T18:30:00Z"));
        let pst: UtcOffset = "-08:00".parse().unwrap();
        let (_, end) = fixed_window(ts("2026-03-14T12:00:00Z"), Window::DAY, pst);
        assert_eq!(end, ts("2026-03-15T08:00:00Z"));
    }

    #[test]
    fn months_follow_the_calendar() {
        let (i1, end) = fixed_window(ts("2026-02-10T00:00:00Z"), Window::Month, UtcOffset::UTC);
        assert_eq!(end, ts("2026-03-01T00:00:00Z"));
        let (i2, end) = fixed_window(ts("2026-12-31T23:00:00Z"), Window::Month, UtcOffset::UTC);
        assert_eq!(end, ts("2027-01-01T00:00:00Z"));
        assert_eq!(i2, i1 + 10);
        let plus2: UtcOffset = "+02:00".parse().unwrap();
        // 23:00 UTC on Jan 31 is already February at +02:00.
        let (_, end) = fixed_window(ts("2026-01-31T23:00:00Z"), Window::Month, plus2);
        assert_eq!(end, ts("2026-02-28T22:00:00Z"));
    }

    #[test]
    fn offsets_parse_and_reject_nonsense() {
        assert_eq!("Z".parse::<UtcOffset>().unwrap(), UtcOffset::UTC);
        assert_eq!("+0100".parse::<UtcOffset>().unwrap().seconds(), 3600);
        assert_eq!("-08:00".parse::<UtcOffset>().unwrap().to_string(), "-08:00");
        for bad in ["", "5", "+5", "+24:00", "+01:60", "+ab:cd", "0100"] {
            assert!(bad.parse::<UtcOffset>().is_err(), "{bad}");
        }
    }

    #[test]
    fn extreme_times_do_not_panic() {
        for w in [Window::DAY, Window::Month, Window::SECOND] {
            let _ = fixed_window(Timestamp::from_micros(u64::MAX), w, UtcOffset::UTC);
            let _ = fixed_window(Timestamp::EPOCH, w, "-23:59".parse().unwrap());
        }
    }
}
