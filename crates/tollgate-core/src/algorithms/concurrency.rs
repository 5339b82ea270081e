//! Concurrency leases: up to `amount` calls in flight, each holding a slot until it is
//! released or its lease expires (so a holder that dies cannot leak a slot).

use crate::clock::Timestamp;
use crate::limit::Limit;
use crate::verdict::{Usage, Verdict};

/// Identifies one lease within its bucket.
pub type LeaseId = u64;

/// The state of one concurrency bucket: the leases held, with their expiry in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Concurrency {
    /// `(lease, expires_at)` pairs.
    pub leases: Vec<(LeaseId, u64)>,
}

impl Concurrency {
    fn live(&self, now: u64) -> impl Iterator<Item = &(LeaseId, u64)> {
        self.leases.iter().filter(move |(_, exp)| *exp > now)
    }

    fn last_expiry(&self, now: u64) -> u64 {
        self.live(now)
            .map(|(_, e)| *e)
            .max()
            .map_or(0, |e| e.saturating_sub(now))
    }

    /// [`evaluate`](Self::evaluate) of a bucket that holds no lease, the state stores keep no
    /// bucket for: always inlined, it is a few instructions, where a call to `evaluate` (kept
    /// out of line by its sorting path) cost about 37 per decision (callgrind, a three-limit
    /// admission at one key).
    #[inline(always)]
    pub fn evaluate_empty(limit: &Limit, now: Timestamp) -> Verdict {
        let amount = limit.amount();
        if amount == 0 {
            // No valid limit has a zero amount; answered the long way all the same.
            return Concurrency::default().evaluate(limit, now);
        }
        let now = now.as_micros();
        Verdict {
            admitted: true,
            never_fits: false,
            capacity: amount,
            remaining: amount.saturating_sub(1),
            reset_after_us: now.saturating_add(limit.lease_micros()).saturating_sub(now),
            retry_after_us: 0,
        }
    }

    /// The answer to taking one slot at `now`, without taking it.
    pub fn evaluate(&self, limit: &Limit, now: Timestamp) -> Verdict {
        let now = now.as_micros();
        let amount = limit.amount();
        // Counted first: the expiries are only gathered (and sorted) when every slot is held.
        let held = u64::try_from(self.live(now).count()).unwrap_or(u64::MAX);
        if held < amount {
            let mine = now.saturating_add(limit.lease_micros());
            return Verdict {
                admitted: true,
                never_fits: false,
                capacity: amount,
                remaining: amount.saturating_sub(held).saturating_sub(1),
                reset_after_us: self.last_expiry(now).max(mine.saturating_sub(now)),
                retry_after_us: 0,
            };
        }
        // One slot frees when the (held - amount + 1)-th earliest lease expires.
        let mut expiries: Vec<u64> = self.live(now).map(|(_, e)| *e).collect();
        expiries.sort_unstable();
        let nth = usize::try_from(held.saturating_sub(amount)).unwrap_or(usize::MAX);
        let frees_at = expiries.get(nth).copied().unwrap_or(u64::MAX);
        Verdict {
            admitted: false,
            never_fits: false,
            capacity: amount,
            remaining: 0,
            reset_after_us: self.last_expiry(now),
            retry_after_us: frees_at.saturating_sub(now),
        }
    }

    /// Takes a slot for `lease` at `now` unconditionally, dropping expired leases.
    pub fn acquire(&mut self, limit: &Limit, now: Timestamp, lease: LeaseId) {
        let now = now.as_micros();
        self.leases.retain(|(_, exp)| *exp > now);
        self.leases
            .push((lease, now.saturating_add(limit.lease_micros())));
    }

    /// Frees the slot of `lease` (and forgets expired leases). Returns whether the lease was
    /// still held at `now`.
    pub fn release(&mut self, now: Timestamp, lease: LeaseId) -> bool {
        let now = now.as_micros();
        let held = self
            .leases
            .iter()
            .any(|(id, exp)| *id == lease && *exp > now);
        self.leases.retain(|(id, exp)| *id != lease && *exp > now);
        held
    }

    /// Extends `lease` to a full lease from `now`. Returns whether it was still held.
    pub fn renew(&mut self, limit: &Limit, now: Timestamp, lease: LeaseId) -> bool {
        let now = now.as_micros();
        match self
            .leases
            .iter_mut()
            .find(|(id, exp)| *id == lease && *exp > now)
        {
            Some((_, exp)) => {
                *exp = now.saturating_add(limit.lease_micros());
                true
            }
            None => false,
        }
    }

    /// How many slots are held at `now`.
    pub fn usage(&self, limit: &Limit, now: Timestamp) -> Usage {
        let now = now.as_micros();
        let used = u64::try_from(self.live(now).count()).unwrap_or(u64::MAX);
        Usage {
            used,
            capacity: limit.amount(),
            available: limit.amount().saturating_sub(used),
            reset_after_us: self.last_expiry(now),
        }
    }

    /// Microseconds until every lease has expired; 0 means the bucket may be forgotten.
    pub fn ttl_us(&self, now: Timestamp) -> u64 {
        self.last_expiry(now.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::LimitSpec;
    use std::time::Duration;

    #[test]
    fn slots_free_on_release_or_expiry() {
        let l = LimitSpec::concurrency(2)
            .lease(Duration::from_secs(30))
            .build()
            .unwrap();
        let t0 = Timestamp::from_secs(1_000);
        let mut c = Concurrency::default();
        c.acquire(&l, t0, 1);
        c.acquire(&l, t0.saturating_add(Duration::from_secs(5)), 2);
        let v = c.evaluate(&l, t0.saturating_add(Duration::from_secs(6)));
        assert!(!v.admitted);
        assert_eq!(v.retry_after_us, 24_000_000);
        let t6 = t0.saturating_add(Duration::from_secs(6));
        assert!(c.release(t6, 1));
        assert!(!c.release(t6, 1));
        assert!(
            c.evaluate(&l, t0.saturating_add(Duration::from_secs(6)))
                .admitted
        );
        assert!(c.renew(&l, t0.saturating_add(Duration::from_secs(30)), 2));
        assert_eq!(
            c.usage(&l, t0.saturating_add(Duration::from_secs(59))).used,
            1
        );
        assert_eq!(c.ttl_us(t0.saturating_add(Duration::from_secs(60))), 0);
        assert!(!c.renew(&l, t0.saturating_add(Duration::from_secs(60)), 2));
    }
}
