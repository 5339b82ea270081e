//! GCRA with token-bucket semantics.
//!
//! The state is one number, the theoretical arrival time (TAT) in scaled time (see
//! [`GcraParams`](crate::GcraParams)): the instant at which the bucket would be full again.
//! Spending `c` pushes the TAT `c * step` later; a cost is admitted when the pushed TAT stays
//! within `tolerance = burst * step` of now. A TAT at or before now is a full bucket, so an idle
//! bucket needs no state at all.

use crate::clock::Timestamp;
use crate::limit::Limit;
use crate::verdict::{div_ceil_u64, div_floor_u64, Usage, Verdict};

/// The state of one GCRA bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Gcra {
    /// Theoretical arrival time in scaled time; 0 (or anything at or before now) is full.
    pub tat: u128,
}

fn now_scaled(limit: &Limit, now: Timestamp) -> u128 {
    u128::from(now.as_micros()).saturating_mul(u128::from(limit.gcra().scale))
}

/// A bucket that is full at `now` is stored as no state at all (`tat = 0`), exactly as stores
/// forget full buckets, so that an earlier `now` later on sees the same thing in every store.
fn full_is_empty(tat: u128, now_s: u128) -> u128 {
    if tat <= now_s {
        0
    } else {
        tat
    }
}

/// `a / b` rounded up; `None` for `b == 0`. A scale of one (whole units per microsecond) is
/// the usual divisor and needs no division.
#[inline]
fn ceil_div(a: u64, b: u64) -> Option<u64> {
    if b == 1 {
        return Some(a);
    }
    let q = a.checked_div(b)?;
    Some(if q.wrapping_mul(b) < a {
        q.saturating_add(1)
    } else {
        q
    })
}

impl Gcra {
    /// The answer to spending `cost` at `now`, without spending it.
    pub fn evaluate(&self, limit: &Limit, now: Timestamp, cost: u64) -> Verdict {
        let p = limit.gcra();
        let now_s = now_scaled(limit, now);
        let tat = self.tat.max(now_s);
        let step = u128::from(p.step);
        let scale = u128::from(p.scale);
        let capacity = limit.burst();
        let current_remaining =
            div_floor_u64(now_s.saturating_add(p.tolerance).saturating_sub(tat), step);
        let current_reset = div_ceil_u64(tat.saturating_sub(now_s), scale);
        if cost > capacity {
            return Verdict::never_fits(capacity, current_remaining, current_reset);
        }
        let new_tat = tat.saturating_add(u128::from(cost).saturating_mul(step));
        let allow_at = new_tat.saturating_sub(p.tolerance);
        if allow_at <= now_s {
            Verdict {
                admitted: true,
                never_fits: false,
                capacity,
                remaining: div_floor_u64(
                    now_s.saturating_add(p.tolerance).saturating_sub(new_tat),
                    step,
                ),
                reset_after_us: div_ceil_u64(new_tat.saturating_sub(now_s), scale),
                retry_after_us: 0,
            }
        } else {
            Verdict {
                admitted: false,
                never_fits: false,
                capacity,
                remaining: current_remaining,
                reset_after_us: current_reset,
                retry_after_us: div_ceil_u64(allow_at.saturating_sub(now_s), scale),
            }
        }
    }

    /// [`evaluate`](Self::evaluate) and, when it admits, the state after spending `cost` (what
    /// [`spend`](Self::spend) would leave): one pass for a decision that evaluates and then
    /// spends. Most buckets' scaled times fit in 64 bits, and then no 128-bit arithmetic runs.
    /// (Always inlined: it sits on every memory-store decision, and a call would return its
    /// 80-byte answer through memory.)
    #[inline(always)]
    pub fn evaluate_spend(
        &self,
        limit: &Limit,
        now: Timestamp,
        cost: u64,
    ) -> (Verdict, Option<Gcra>) {
        if let Some(r) = self.evaluate_spend_u64::<true>(limit, now, cost) {
            return r;
        }
        self.evaluate_spend_u128(limit, now, cost)
    }

    /// [`evaluate_spend`](Self::evaluate_spend) for a caller that reads only whether the cost
    /// is admitted, whether it never fits, and the retry-after (an admission, not a full
    /// decision): the verdict's `remaining` and `reset_after_us` are 0, every other field and
    /// the state after are `evaluate_spend`'s. It skips a division and the reset per bucket.
    #[inline(always)]
    pub fn evaluate_spend_brief(
        &self,
        limit: &Limit,
        now: Timestamp,
        cost: u64,
    ) -> (Verdict, Option<Gcra>) {
        if let Some(r) = self.evaluate_spend_u64::<false>(limit, now, cost) {
            return r;
        }
        let (mut v, after) = self.evaluate_spend_u128(limit, now, cost);
        v.remaining = 0;
        v.reset_after_us = 0;
        (v, after)
    }

    /// [`evaluate_spend`](Self::evaluate_spend) in 128-bit arithmetic, for scaled times that do
    /// not fit in 64 bits.
    #[inline(always)]
    fn evaluate_spend_u128(
        &self,
        limit: &Limit,
        now: Timestamp,
        cost: u64,
    ) -> (Verdict, Option<Gcra>) {
        let v = self.evaluate(limit, now, cost);
        if !v.admitted {
            return (v, None);
        }
        let mut after = *self;
        after.spend(limit, now, cost);
        (v, Some(after))
    }

    /// [`evaluate_spend`](Self::evaluate_spend) in 64-bit arithmetic, or `None` when a value
    /// does not fit (then the 128-bit path answers). Every operation is checked, so a `Some`
    /// answer is the 128-bit answer. Without `FULL`, `remaining` and `reset_after_us` are 0.
    /// (The two are written out in each branch: computed by a closure they made the one-limit
    /// admission 50 instructions longer, and by a helper function 1–3; callgrind.)
    #[inline(always)]
    fn evaluate_spend_u64<const FULL: bool>(
        &self,
        limit: &Limit,
        now: Timestamp,
        cost: u64,
    ) -> Option<(Verdict, Option<Gcra>)> {
        let p = limit.gcra();
        let tolerance = u64::try_from(p.tolerance).ok()?;
        let now_s = now.as_micros().checked_mul(p.scale)?;
        let tat = u64::try_from(self.tat).ok()?.max(now_s);
        let horizon = now_s.checked_add(tolerance)?;
        let capacity = limit.burst();
        if cost > capacity {
            let (remaining, reset) = if FULL {
                (
                    horizon.saturating_sub(tat).checked_div(p.step)?,
                    ceil_div(tat.saturating_sub(now_s), p.scale)?,
                )
            } else {
                (0, 0)
            };
            return Some((Verdict::never_fits(capacity, remaining, reset), None));
        }
        let new_tat = tat.checked_add(cost.checked_mul(p.step)?)?;
        let allow_at = new_tat.saturating_sub(tolerance);
        if allow_at <= now_s {
            let verdict = Verdict {
                admitted: true,
                never_fits: false,
                capacity,
                remaining: if FULL {
                    horizon.saturating_sub(new_tat).checked_div(p.step)?
                } else {
                    0
                },
                reset_after_us: if FULL {
                    ceil_div(new_tat.saturating_sub(now_s), p.scale)?
                } else {
                    0
                },
                retry_after_us: 0,
            };
            let after = Gcra {
                tat: if new_tat <= now_s {
                    0
                } else {
                    u128::from(new_tat)
                },
            };
            return Some((verdict, Some(after)));
        }
        let verdict = Verdict {
            admitted: false,
            never_fits: false,
            capacity,
            remaining: if FULL {
                horizon.saturating_sub(tat).checked_div(p.step)?
            } else {
                0
            },
            reset_after_us: if FULL {
                ceil_div(tat.saturating_sub(now_s), p.scale)?
            } else {
                0
            },
            retry_after_us: ceil_div(allow_at.saturating_sub(now_s), p.scale)?,
        };
        Some((verdict, None))
    }

    /// Spends `cost` at `now` unconditionally (after an admitting evaluation, or as a charge
    /// that puts the bucket into debt).
    pub fn spend(&mut self, limit: &Limit, now: Timestamp, cost: u64) {
        let now_s = now_scaled(limit, now);
        let inc = u128::from(cost).saturating_mul(u128::from(limit.gcra().step));
        self.tat = full_is_empty(self.tat.max(now_s).saturating_add(inc), now_s);
    }

    /// Gives back `cost` at `now`; the bucket never rises above full.
    pub fn refund(&mut self, limit: &Limit, now: Timestamp, cost: u64) {
        let now_s = now_scaled(limit, now);
        if self.tat <= now_s {
            self.tat = 0;
            return;
        }
        let dec = u128::from(cost).saturating_mul(u128::from(limit.gcra().step));
        self.tat = full_is_empty(self.tat.saturating_sub(dec), now_s);
    }

    /// How much of the bucket is in use at `now`.
    pub fn usage(&self, limit: &Limit, now: Timestamp) -> Usage {
        let p = limit.gcra();
        let now_s = now_scaled(limit, now);
        let in_use = self.tat.saturating_sub(now_s);
        Usage {
            used: div_ceil_u64(in_use, u128::from(p.step)),
            capacity: limit.burst(),
            available: div_floor_u64(p.tolerance.saturating_sub(in_use), u128::from(p.step)),
            reset_after_us: div_ceil_u64(in_use, u128::from(p.scale)),
        }
    }

    /// Microseconds until the bucket is full again; 0 means it is full and may be forgotten.
    pub fn ttl_us(&self, limit: &Limit, now: Timestamp) -> u64 {
        let now_s = now_scaled(limit, now);
        div_ceil_u64(
            self.tat.saturating_sub(now_s),
            u128::from(limit.gcra().scale),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LimitKind, LimitSpec, Window};
    use std::time::Duration;

    fn limit(amount: u64, window: Window, burst: u64) -> Limit {
        LimitSpec::new(LimitKind::Requests, amount, window)
            .burst(burst)
            .build()
            .unwrap()
    }

    const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

    #[test]
    fn admits_the_burst_then_paces_at_the_rate() {
        let l = limit(60, Window::MINUTE, 10);
        let mut g = Gcra::default();
        for i in 0..10 {
            let v = g.evaluate(&l, T0, 1);
            assert!(v.admitted, "call {i}");
            assert_eq!(v.remaining, 9 - i);
            g.spend(&l, T0, 1);
        }
        let v = g.evaluate(&l, T0, 1);
        assert!(!v.admitted);
        assert_eq!(v.retry_after_us, 1_000_000);
        let t = T0.saturating_add(Duration::from_micros(999_999));
        assert!(!g.evaluate(&l, t, 1).admitted);
        assert!(
            g.evaluate(&l, T0.saturating_add(Duration::from_secs(1)), 1)
                .admitted
        );
    }

    #[test]
    fn fractional_rates_are_exact() {
        // 7 per second: one unit refills every 142857.142... us.
        let l = limit(7, Window::SECOND, 7);
        let mut g = Gcra::default();
        g.spend(&l, T0, 7);
        let v = g.evaluate(&l, T0, 1);
        assert_eq!(v.retry_after_us, 142_858);
        // The whole burst is back after exactly one second, not a microsecond earlier.
        let one_sec = T0.saturating_add(Duration::from_secs(1));
        assert_eq!(g.usage(&l, one_sec).available, 7);
        let just_before = Timestamp::from_micros(one_sec.as_micros() - 1);
        assert_eq!(g.usage(&l, just_before).available, 6);
        assert_eq!(g.evaluate(&l, T0, 7).retry_after_us, 1_000_000);
    }

    #[test]
    fn too_large_a_cost_never_fits() {
        let l = limit(100, Window::MINUTE, 100);
        let v = Gcra::default().evaluate(&l, T0, 101);
        assert!(v.never_fits && !v.admitted);
    }

    #[test]
    fn refunds_stop_at_full_and_charges_make_debt() {
        let l = limit(100, Window::MINUTE, 100);
        let mut g = Gcra::default();
        g.spend(&l, T0, 10);
        g.refund(&l, T0, 50);
        assert_eq!(g.usage(&l, T0).available, 100);
        g.spend(&l, T0, 250);
        let u = g.usage(&l, T0);
        assert_eq!((u.used, u.available), (250, 0));
        let v = g.evaluate(&l, T0, 1);
        // 151 units of refill needed: 151 * 0.6s.
        assert_eq!(v.retry_after_us, 90_600_000);
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let l = limit(10, Window::SECOND, 10);
        let mut g = Gcra::default();
        g.spend(&l, T0, 10);
        let earlier = Timestamp::from_micros(T0.as_micros() - 5_000_000);
        assert!(!g.evaluate(&l, earlier, 1).admitted);
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let l = LimitSpec::new(
            LimitKind::Tokens,
            u64::MAX,
            Window::Length(crate::MAX_WINDOW),
        )
        .build()
        .unwrap();
        let mut g = Gcra::default();
        let end = Timestamp::from_micros(u64::MAX);
        for now in [Timestamp::EPOCH, T0, end] {
            for cost in [0, 1, u64::MAX] {
                let _ = g.evaluate(&l, now, cost);
                g.spend(&l, now, cost);
                g.refund(&l, now, cost);
                let _ = g.usage(&l, now);
                let _ = g.ttl_us(&l, now);
            }
        }
        let small = limit(1, Window::SECOND, 1);
        let mut g = Gcra::default();
        g.spend(&small, end, u64::MAX);
        g.spend(&small, end, u64::MAX);
        assert!(!g.evaluate(&small, end, 1).admitted);
    }
}
