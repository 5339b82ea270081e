//! The sliding window counter: a rolling window estimated from two fixed windows.
//!
//! The count at an instant `e` microseconds into the current window of length `W` is
//! `prev * (W - e) / W + curr`. All comparisons are made multiplied through by `W` in 128-bit
//! integers, so admission and `retry_after` are exact for this estimate.

use crate::clock::Timestamp;
use crate::limit::Limit;
use crate::verdict::{div_ceil_u64, div_floor_u64, Usage, Verdict};

/// The state of one sliding-window bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SlidingWindow {
    /// Index of the current window (`start / W`).
    pub window: u64,
    /// Spent in the previous window.
    pub prev: u64,
    /// Spent in the current window.
    pub curr: u64,
}

impl SlidingWindow {
    /// The state as seen at `now`: windows that have passed are rolled forward. Time going
    /// backwards keeps the later window, so it never frees capacity.
    fn rolled(&self, limit: &Limit, now: Timestamp) -> SlidingWindow {
        let w = limit.window_micros().max(1);
        let idx = now.as_micros().checked_div(w).unwrap_or(0);
        if idx <= self.window {
            *self
        } else if idx == self.window.saturating_add(1) {
            SlidingWindow {
                window: idx,
                prev: self.curr,
                curr: 0,
            }
        } else {
            SlidingWindow {
                window: idx,
                prev: 0,
                curr: 0,
            }
        }
    }

    /// `prev * (W - e) + curr * W`: the estimate multiplied by `W`.
    fn weighted(&self, w: u128, elapsed: u128) -> u128 {
        u128::from(self.prev)
            .saturating_mul(w.saturating_sub(elapsed))
            .saturating_add(u128::from(self.curr).saturating_mul(w))
    }

    fn start(&self, w: u64) -> u64 {
        self.window.saturating_mul(w)
    }

    fn reset_after(&self, w: u64, now: u64) -> u64 {
        let windows_left = if self.curr > 0 {
            2
        } else if self.prev > 0 {
            1
        } else {
            return 0;
        };
        self.window
            .saturating_add(windows_left)
            .saturating_mul(w)
            .saturating_sub(now)
    }

    /// The answer to spending `cost` at `now`, without spending it.
    pub fn evaluate(&self, limit: &Limit, now: Timestamp, cost: u64) -> Verdict {
        let s = self.rolled(limit, now);
        let w64 = limit.window_micros().max(1);
        let w = u128::from(w64);
        let now_us = now.as_micros();
        let elapsed = u128::from(now_us.saturating_sub(s.start(w64)));
        let amount = limit.amount();
        let total = u128::from(amount).saturating_mul(w);
        let weighted = s.weighted(w, elapsed);
        let remaining_now = div_floor_u64(total.saturating_sub(weighted), w);
        if cost > amount {
            return Verdict::never_fits(amount, remaining_now, s.reset_after(w64, now_us));
        }
        let cost_w = u128::from(cost).saturating_mul(w);
        if weighted.saturating_add(cost_w) <= total {
            let after = SlidingWindow {
                curr: s.curr.saturating_add(cost),
                ..s
            };
            return Verdict {
                admitted: true,
                never_fits: false,
                capacity: amount,
                remaining: div_floor_u64(total.saturating_sub(weighted).saturating_sub(cost_w), w),
                reset_after_us: after.reset_after(w64, now_us),
                retry_after_us: 0,
            };
        }
        // Earliest instant at which prev' * (W - e) + (curr' + cost) * W <= amount * W.
        let curr_plus = u128::from(s.curr).saturating_add(u128::from(cost));
        let retry_at = if curr_plus <= u128::from(amount) {
            // Still in this window, as the previous window's weight fades (prev > 0 here).
            let room = total.saturating_sub(curr_plus.saturating_mul(w));
            let fade = room.checked_div(u128::from(s.prev)).unwrap_or(u128::MAX);
            let e_min = w.saturating_sub(fade);
            u128::from(s.start(w64)).saturating_add(e_min)
        } else {
            // In the next window, where this window's spend becomes the fading part.
            let room = u128::from(amount.saturating_sub(cost)).saturating_mul(w);
            let fade = room.checked_div(u128::from(s.curr)).unwrap_or(u128::MAX);
            let e_min = w.saturating_sub(fade);
            u128::from(s.start(w64))
                .saturating_add(w)
                .saturating_add(e_min)
        };
        Verdict {
            admitted: false,
            never_fits: false,
            capacity: amount,
            remaining: remaining_now,
            reset_after_us: s.reset_after(w64, now_us),
            retry_after_us: u64::try_from(retry_at.saturating_sub(u128::from(now_us)))
                .unwrap_or(u64::MAX),
        }
    }

    /// Spends `cost` at `now` unconditionally.
    pub fn spend(&mut self, limit: &Limit, now: Timestamp, cost: u64) {
        *self = self.rolled(limit, now);
        self.curr = self.curr.saturating_add(cost);
        self.forget_if_empty();
    }

    /// An empty bucket is stored as no state at all, exactly as stores forget it.
    fn forget_if_empty(&mut self) {
        if self.prev == 0 && self.curr == 0 {
            *self = SlidingWindow::default();
        }
    }

    /// Adds `cost` to the window in which `spent_at` fell, if it still counts.
    pub fn charge(&mut self, limit: &Limit, now: Timestamp, spent_at: Timestamp, cost: u64) {
        *self = self.rolled(limit, now);
        if let Some(slot) = self.slot_of(limit, spent_at) {
            *slot = slot.saturating_add(cost);
        }
        self.forget_if_empty();
    }

    /// Takes `cost` back from the window in which `spent_at` fell, if it still counts.
    pub fn refund(&mut self, limit: &Limit, now: Timestamp, spent_at: Timestamp, cost: u64) {
        *self = self.rolled(limit, now);
        if let Some(slot) = self.slot_of(limit, spent_at) {
            *slot = slot.saturating_sub(cost);
        }
        self.forget_if_empty();
    }

    fn slot_of(&mut self, limit: &Limit, t: Timestamp) -> Option<&mut u64> {
        let idx = t
            .as_micros()
            .checked_div(limit.window_micros())
            .unwrap_or(0);
        if idx == self.window {
            Some(&mut self.curr)
        } else if idx.saturating_add(1) == self.window {
            Some(&mut self.prev)
        } else {
            None
        }
    }

    /// How much of the bucket is in use at `now`.
    pub fn usage(&self, limit: &Limit, now: Timestamp) -> Usage {
        let s = self.rolled(limit, now);
        let w64 = limit.window_micros().max(1);
        let w = u128::from(w64);
        let elapsed = u128::from(now.as_micros().saturating_sub(s.start(w64)));
        let weighted = s.weighted(w, elapsed);
        let total = u128::from(limit.amount()).saturating_mul(w);
        Usage {
            used: div_ceil_u64(weighted, w),
            capacity: limit.amount(),
            available: div_floor_u64(total.saturating_sub(weighted), w),
            reset_after_us: s.reset_after(w64, now.as_micros()),
        }
    }

    /// Microseconds until nothing counts any more; 0 means the bucket may be forgotten.
    pub fn ttl_us(&self, limit: &Limit, now: Timestamp) -> u64 {
        self.rolled(limit, now)
            .reset_after(limit.window_micros().max(1), now.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, LimitKind, LimitSpec, Window};
    use std::time::Duration;

    fn limit(amount: u64) -> Limit {
        LimitSpec::new(LimitKind::Requests, amount, Window::MINUTE)
            .algorithm(Algorithm::SlidingWindow)
            .build()
            .unwrap()
    }

    // A window boundary.
    const T0: Timestamp = Timestamp::from_secs(1_700_000_040);

    #[test]
    fn previous_window_fades_linearly() {
        let l = limit(10);
        let mut s = SlidingWindow::default();
        for _ in 0..10 {
            assert!(s.evaluate(&l, T0, 1).admitted);
            s.spend(&l, T0, 1);
        }
        let v = s.evaluate(&l, T0, 1);
        assert!(!v.admitted);
        // Next window: 10 * (60 - e)/60 + 1 <= 10  =>  e >= 6s.
        assert_eq!(v.retry_after_us, 66_000_000);
        let at = T0.saturating_add(Duration::from_micros(v.retry_after_us));
        assert!(s.evaluate(&l, at, 1).admitted);
        let before = Timestamp::from_micros(at.as_micros() - 1);
        assert!(!s.evaluate(&l, before, 1).admitted);
        assert_eq!(s.usage(&l, at).used, 9);
    }

    #[test]
    fn refund_and_charge_hit_the_right_window() {
        let l = limit(10);
        let mut s = SlidingWindow::default();
        s.spend(&l, T0, 4);
        let later = T0.saturating_add(Duration::from_secs(61));
        s.refund(&l, later, T0, 3);
        assert_eq!((s.prev, s.curr), (1, 0));
        s.charge(&l, later, later, 20);
        assert_eq!(s.curr, 20);
        assert!(!s.evaluate(&l, later, 1).admitted);
        let long_after = T0.saturating_add(Duration::from_secs(600));
        s.charge(&l, long_after, T0, 5);
        assert_eq!(s.usage(&l, long_after).used, 0);
        assert_eq!(s.ttl_us(&l, long_after), 0);
    }
}
