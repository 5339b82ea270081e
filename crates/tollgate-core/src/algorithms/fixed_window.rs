//! The fixed window: a counter that resets at each window boundary, aligned to the calendar
//! (midnight at the limit's UTC offset for days, the first of the month for months).

use crate::calendar::fixed_window;
use crate::clock::Timestamp;
use crate::limit::Limit;
use crate::verdict::{Usage, Verdict};

/// The state of one fixed-window bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FixedWindow {
    /// Index of the window `used` belongs to.
    pub window: u64,
    /// Spent in that window.
    pub used: u64,
}

impl FixedWindow {
    /// The state as seen at `now`, and the end of the window it belongs to. A later window
    /// starts from zero; an earlier one (time went backwards) keeps the stored count.
    fn rolled(&self, limit: &Limit, now: Timestamp) -> (FixedWindow, u64) {
        let (idx, end) = fixed_window(now, limit.window(), limit.utc_offset());
        if idx > self.window {
            (
                FixedWindow {
                    window: idx,
                    used: 0,
                },
                end.as_micros(),
            )
        } else {
            (*self, end.as_micros())
        }
    }

    /// The answer to spending `cost` at `now`, without spending it.
    pub fn evaluate(&self, limit: &Limit, now: Timestamp, cost: u64) -> Verdict {
        let (s, end) = self.rolled(limit, now);
        let until_end = end.saturating_sub(now.as_micros());
        let amount = limit.amount();
        let remaining = amount.saturating_sub(s.used);
        let reset = |used: u64| if used > 0 { until_end } else { 0 };
        if cost > amount {
            return Verdict::never_fits(amount, remaining, reset(s.used));
        }
        let after = s.used.saturating_add(cost);
        let admitted = after <= amount;
        Verdict {
            admitted,
            never_fits: false,
            capacity: amount,
            remaining: if admitted {
                amount.saturating_sub(after)
            } else {
                remaining
            },
            reset_after_us: reset(if admitted { after } else { s.used }),
            retry_after_us: if admitted { 0 } else { until_end },
        }
    }

    /// Spends `cost` at `now` unconditionally.
    pub fn spend(&mut self, limit: &Limit, now: Timestamp, cost: u64) {
        *self = self.rolled(limit, now).0;
        self.used = self.used.saturating_add(cost);
        self.forget_if_empty();
    }

    /// An empty bucket is stored as no state at all, exactly as stores forget it.
    fn forget_if_empty(&mut self) {
        if self.used == 0 {
            *self = FixedWindow::default();
        }
    }

    /// Adds `cost` if `spent_at` fell in the current window.
    pub fn charge(&mut self, limit: &Limit, now: Timestamp, spent_at: Timestamp, cost: u64) {
        *self = self.rolled(limit, now).0;
        if fixed_window(spent_at, limit.window(), limit.utc_offset()).0 == self.window {
            self.used = self.used.saturating_add(cost);
        }
        self.forget_if_empty();
    }

    /// Takes `cost` back if `spent_at` fell in the current window.
    pub fn refund(&mut self, limit: &Limit, now: Timestamp, spent_at: Timestamp, cost: u64) {
        *self = self.rolled(limit, now).0;
        if fixed_window(spent_at, limit.window(), limit.utc_offset()).0 == self.window {
            self.used = self.used.saturating_sub(cost);
        }
        self.forget_if_empty();
    }

    /// How much of the bucket is in use at `now`.
    pub fn usage(&self, limit: &Limit, now: Timestamp) -> Usage {
        let (s, end) = self.rolled(limit, now);
        Usage {
            used: s.used,
            capacity: limit.amount(),
            available: limit.amount().saturating_sub(s.used),
            reset_after_us: if s.used > 0 {
                end.saturating_sub(now.as_micros())
            } else {
                0
            },
        }
    }

    /// Microseconds until the count resets; 0 means the bucket may be forgotten.
    pub fn ttl_us(&self, limit: &Limit, now: Timestamp) -> u64 {
        self.usage(limit, now).reset_after_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, LimitKind, LimitSpec, Window};

    fn limit(window: Window) -> Limit {
        LimitSpec::new(LimitKind::Tokens, 1000, window)
            .algorithm(Algorithm::FixedWindow)
            .build()
            .unwrap()
    }

    #[test]
    fn a_day_resets_exactly_at_midnight() {
        let l = limit(Window::DAY);
        // 2023-11-14T22:13:20Z
        let t = Timestamp::from_secs(1_700_000_000);
        let midnight = Timestamp::from_secs(1_700_006_400);
        let mut s = FixedWindow::default();
        s.spend(&l, t, 1000);
        let v = s.evaluate(&l, t, 1);
        assert!(!v.admitted);
        assert_eq!(v.retry_after_us, 6_400_000_000);
        assert!(
            !s.evaluate(&l, Timestamp::from_micros(midnight.as_micros() - 1), 1)
                .admitted
        );
        assert!(s.evaluate(&l, midnight, 1000).admitted);
    }

    #[test]
    fn refunds_only_touch_the_current_window() {
        let l = limit(Window::Month);
        let t = Timestamp::from_secs(1_700_000_000);
        let mut s = FixedWindow::default();
        s.spend(&l, t, 600);
        s.refund(&l, t, t, 100);
        assert_eq!(s.used, 500);
        let next_month = Timestamp::from_secs(1_700_000_000 + 40 * 86_400);
        s.refund(&l, next_month, t, 100);
        assert_eq!(s.usage(&l, next_month).used, 0);
    }
}
