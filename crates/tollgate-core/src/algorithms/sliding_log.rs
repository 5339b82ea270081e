//! The sliding window log: every admitted spend is remembered until it leaves the window.
//!
//! Exact for any rolling window; memory grows with the number of distinct instants spent in
//! one window, so it suits small limits (100 calls an hour), not token budgets.

use std::collections::VecDeque;

use crate::clock::Timestamp;
use crate::limit::Limit;
use crate::verdict::{Usage, Verdict};

/// The state of one sliding-log bucket: `(instant, cost)` pairs, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SlidingLog {
    /// Spends in time order; an entry counts while `now < at + window`.
    pub entries: VecDeque<(u64, u64)>,
}

impl SlidingLog {
    fn expires(limit: &Limit, at: u64) -> u64 {
        at.saturating_add(limit.window_micros())
    }

    /// Entries still counting at `now`.
    fn live<'a>(&'a self, limit: &'a Limit, now: u64) -> impl Iterator<Item = &'a (u64, u64)> {
        self.entries
            .iter()
            .skip_while(move |(at, _)| Self::expires(limit, *at) <= now)
    }

    fn live_sum(&self, limit: &Limit, now: u64) -> u64 {
        self.live(limit, now)
            .fold(0u64, |sum, (_, c)| sum.saturating_add(*c))
    }

    fn prune(&mut self, limit: &Limit, now: u64) {
        while let Some((at, _)) = self.entries.front() {
            if Self::expires(limit, *at) > now {
                break;
            }
            self.entries.pop_front();
        }
    }

    fn reset_after(&self, limit: &Limit, now: u64) -> u64 {
        self.live(limit, now)
            .last()
            .map_or(0, |(at, _)| Self::expires(limit, *at).saturating_sub(now))
    }

    /// The answer to spending `cost` at `now`, without spending it.
    pub fn evaluate(&self, limit: &Limit, now: Timestamp, cost: u64) -> Verdict {
        let now = now.as_micros();
        let amount = limit.amount();
        let used = self.live_sum(limit, now);
        let remaining = amount.saturating_sub(used);
        if cost > amount {
            return Verdict::never_fits(amount, remaining, self.reset_after(limit, now));
        }
        if used.saturating_add(cost) <= amount {
            return Verdict {
                admitted: true,
                never_fits: false,
                capacity: amount,
                remaining: remaining.saturating_sub(cost),
                reset_after_us: if cost > 0 {
                    limit.window_micros().max(self.reset_after(limit, now))
                } else {
                    self.reset_after(limit, now)
                },
                retry_after_us: 0,
            };
        }
        let need = used.saturating_add(cost).saturating_sub(amount);
        let mut freed = 0u64;
        let mut retry_at = u64::MAX;
        for (at, c) in self.live(limit, now) {
            freed = freed.saturating_add(*c);
            if freed >= need {
                retry_at = Self::expires(limit, *at);
                break;
            }
        }
        Verdict {
            admitted: false,
            never_fits: false,
            capacity: amount,
            remaining,
            reset_after_us: self.reset_after(limit, now),
            retry_after_us: retry_at.saturating_sub(now),
        }
    }

    /// Spends `cost` at `now` unconditionally.
    pub fn spend(&mut self, limit: &Limit, now: Timestamp, cost: u64) {
        let now = now.as_micros();
        self.prune(limit, now);
        if cost == 0 {
            return;
        }
        // Time going backwards files the spend at the latest instant seen, keeping order.
        match self.entries.back_mut() {
            Some((at, c)) if *at >= now => *c = c.saturating_add(cost),
            _ => self.entries.push_back((now, cost)),
        }
    }

    /// Adds `cost` to the spend made at `spent_at`, if it still counts.
    pub fn charge(&mut self, limit: &Limit, now: Timestamp, spent_at: Timestamp, cost: u64) {
        let now = now.as_micros();
        self.prune(limit, now);
        let at = spent_at.as_micros();
        if Self::expires(limit, at) <= now || cost == 0 {
            return;
        }
        let i = self.entries.partition_point(|(t, _)| *t < at);
        match self.entries.get_mut(i) {
            Some((t, c)) if *t == at => *c = c.saturating_add(cost),
            _ => self.entries.insert(i, (at, cost)),
        }
    }

    /// Takes `cost` back from the spend made at `spent_at`, if it still counts.
    pub fn refund(&mut self, limit: &Limit, now: Timestamp, spent_at: Timestamp, cost: u64) {
        let now = now.as_micros();
        self.prune(limit, now);
        let at = spent_at.as_micros();
        // A spend that has left the window no longer counts: there is nothing to give back (and
        // the fallback below must not take it from a later, still counting spend).
        if Self::expires(limit, at) <= now {
            return;
        }
        let i = self.entries.partition_point(|(t, _)| *t < at);
        // A spend filed under a later instant (time went backwards) is refunded from there.
        let i = match self.entries.get(i) {
            Some((t, _)) if *t == at => i,
            _ => match self.entries.len().checked_sub(1) {
                Some(last) if self.entries.get(last).is_some_and(|(t, _)| *t > at) => last,
                _ => return,
            },
        };
        if let Some((_, c)) = self.entries.get_mut(i) {
            *c = c.saturating_sub(cost);
            if *c == 0 {
                self.entries.remove(i);
            }
        }
    }

    /// How much of the bucket is in use at `now`.
    pub fn usage(&self, limit: &Limit, now: Timestamp) -> Usage {
        let now = now.as_micros();
        let used = self.live_sum(limit, now);
        Usage {
            used,
            capacity: limit.amount(),
            available: limit.amount().saturating_sub(used),
            reset_after_us: self.reset_after(limit, now),
        }
    }

    /// Microseconds until nothing counts any more; 0 means the bucket may be forgotten.
    pub fn ttl_us(&self, limit: &Limit, now: Timestamp) -> u64 {
        self.reset_after(limit, now.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, LimitKind, LimitSpec, Window};
    use std::time::Duration;

    fn limit(amount: u64) -> Limit {
        LimitSpec::new(LimitKind::Requests, amount, Window::HOUR)
            .algorithm(Algorithm::SlidingLog)
            .build()
            .unwrap()
    }

    const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

    #[test]
    fn calls_leave_the_window_exactly_one_window_later() {
        let l = limit(3);
        let mut s = SlidingLog::default();
        for i in 0..3u64 {
            let t = T0.saturating_add(Duration::from_secs(i * 10));
            assert!(s.evaluate(&l, t, 1).admitted);
            s.spend(&l, t, 1);
        }
        let t = T0.saturating_add(Duration::from_secs(100));
        let v = s.evaluate(&l, t, 2);
        assert!(!v.admitted);
        // Two must leave: the second one, at T0 + 10s, leaves at T0 + 10s + 1h.
        assert_eq!(v.retry_after_us, (3600 + 10 - 100) * 1_000_000);
        let at = t.saturating_add(Duration::from_micros(v.retry_after_us));
        assert!(s.evaluate(&l, at, 2).admitted);
        assert!(
            !s.evaluate(&l, Timestamp::from_micros(at.as_micros() - 1), 2)
                .admitted
        );
    }

    #[test]
    fn refunds_and_charges_follow_the_original_instant() {
        let l = limit(10);
        let mut s = SlidingLog::default();
        s.spend(&l, T0, 5);
        let t1 = T0.saturating_add(Duration::from_secs(1));
        s.spend(&l, t1, 1);
        s.refund(&l, t1, T0, 5);
        assert_eq!(s.entries, VecDeque::from([(t1.as_micros(), 1)]));
        s.charge(&l, t1, T0, 4);
        assert_eq!(s.usage(&l, t1).used, 5);
        assert_eq!(s.usage(&l, t1).reset_after_us, 3_600_000_000);
    }
}
