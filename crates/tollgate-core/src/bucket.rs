//! One bucket's state, whatever its algorithm, and the operations every store applies to it.

use crate::algorithms::concurrency::{Concurrency, LeaseId};
use crate::algorithms::fixed_window::FixedWindow;
use crate::algorithms::gcra::Gcra;
use crate::algorithms::sliding_log::SlidingLog;
use crate::algorithms::sliding_window::SlidingWindow;
use crate::clock::Timestamp;
use crate::kind::Algorithm;
use crate::limit::Limit;
use crate::verdict::{Usage, Verdict};

/// The state of one limit for one partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BucketState {
    /// See [`Gcra`].
    Gcra(Gcra),
    /// See [`SlidingWindow`].
    SlidingWindow(SlidingWindow),
    /// See [`SlidingLog`].
    SlidingLog(SlidingLog),
    /// See [`FixedWindow`].
    FixedWindow(FixedWindow),
    /// See [`Concurrency`].
    Concurrency(Concurrency),
}

impl BucketState {
    /// The state of a bucket nobody has spent from: full.
    pub fn new(limit: &Limit) -> Self {
        match limit.algorithm() {
            Algorithm::Gcra => BucketState::Gcra(Gcra::default()),
            Algorithm::SlidingWindow => BucketState::SlidingWindow(SlidingWindow::default()),
            Algorithm::SlidingLog => BucketState::SlidingLog(SlidingLog::default()),
            Algorithm::FixedWindow => BucketState::FixedWindow(FixedWindow::default()),
            Algorithm::Concurrency => BucketState::Concurrency(Concurrency::default()),
        }
    }

    /// Whether this state belongs to `limit`'s algorithm. A state of another algorithm (the
    /// limit changed under the same key) is treated as a full bucket.
    pub fn fits(&self, limit: &Limit) -> bool {
        matches!(
            (self, limit.algorithm()),
            (BucketState::Gcra(_), Algorithm::Gcra)
                | (BucketState::SlidingWindow(_), Algorithm::SlidingWindow)
                | (BucketState::SlidingLog(_), Algorithm::SlidingLog)
                | (BucketState::FixedWindow(_), Algorithm::FixedWindow)
                | (BucketState::Concurrency(_), Algorithm::Concurrency)
        )
    }

    fn fitted(&mut self, limit: &Limit) -> &mut Self {
        if !self.fits(limit) {
            *self = BucketState::new(limit);
        }
        self
    }

    /// What a bucket nobody has spent from ([`BucketState::new`]) answers to `cost` at `now`,
    /// without building its state: stores hold no state for a full bucket, and a decision
    /// over a missing one asks this. (Always inlined: a concurrency limit's check then folds
    /// down to a few instructions, where a call cost about 40 per decision, callgrind.)
    #[inline(always)]
    pub fn evaluate_new(limit: &Limit, now: Timestamp, cost: u64) -> Verdict {
        match limit.algorithm() {
            Algorithm::Gcra => Gcra::default().evaluate(limit, now, cost),
            Algorithm::SlidingWindow => SlidingWindow::default().evaluate(limit, now, cost),
            Algorithm::SlidingLog => SlidingLog::default().evaluate(limit, now, cost),
            Algorithm::FixedWindow => FixedWindow::default().evaluate(limit, now, cost),
            Algorithm::Concurrency => Concurrency::evaluate_empty(limit, now),
        }
    }

    /// The answer to spending `cost` (one slot, for concurrency) at `now`, without spending.
    pub fn evaluate(&self, limit: &Limit, now: Timestamp, cost: u64) -> Verdict {
        if !self.fits(limit) {
            return BucketState::new(limit).evaluate(limit, now, cost);
        }
        match self {
            BucketState::Gcra(s) => s.evaluate(limit, now, cost),
            BucketState::SlidingWindow(s) => s.evaluate(limit, now, cost),
            BucketState::SlidingLog(s) => s.evaluate(limit, now, cost),
            BucketState::FixedWindow(s) => s.evaluate(limit, now, cost),
            BucketState::Concurrency(s) => s.evaluate(limit, now),
        }
    }

    /// Spends `cost` at `now` unconditionally; for concurrency, takes a slot for `lease`.
    pub fn spend(&mut self, limit: &Limit, now: Timestamp, cost: u64, lease: LeaseId) {
        match self.fitted(limit) {
            BucketState::Gcra(s) => s.spend(limit, now, cost),
            BucketState::SlidingWindow(s) => s.spend(limit, now, cost),
            BucketState::SlidingLog(s) => s.spend(limit, now, cost),
            BucketState::FixedWindow(s) => s.spend(limit, now, cost),
            BucketState::Concurrency(s) => s.acquire(limit, now, lease),
        }
    }

    /// Charges `cost` more for a spend made at `spent_at`: never refused, it may put the
    /// bucket into debt.
    pub fn charge(&mut self, limit: &Limit, now: Timestamp, spent_at: Timestamp, cost: u64) {
        match self.fitted(limit) {
            BucketState::Gcra(s) => s.spend(limit, now, cost),
            BucketState::SlidingWindow(s) => s.charge(limit, now, spent_at, cost),
            BucketState::SlidingLog(s) => s.charge(limit, now, spent_at, cost),
            BucketState::FixedWindow(s) => s.charge(limit, now, spent_at, cost),
            BucketState::Concurrency(_) => {}
        }
    }

    /// Refunds `cost` of a spend made at `spent_at`, never above a full bucket.
    pub fn refund(&mut self, limit: &Limit, now: Timestamp, spent_at: Timestamp, cost: u64) {
        match self.fitted(limit) {
            BucketState::Gcra(s) => s.refund(limit, now, cost),
            BucketState::SlidingWindow(s) => s.refund(limit, now, spent_at, cost),
            BucketState::SlidingLog(s) => s.refund(limit, now, spent_at, cost),
            BucketState::FixedWindow(s) => s.refund(limit, now, spent_at, cost),
            BucketState::Concurrency(_) => {}
        }
    }

    /// Frees a concurrency slot. Returns whether the lease was still held at `now`.
    pub fn release(&mut self, now: Timestamp, lease: LeaseId) -> bool {
        match self {
            BucketState::Concurrency(s) => s.release(now, lease),
            _ => false,
        }
    }

    /// Extends a concurrency lease. Returns whether it was still held.
    pub fn renew(&mut self, limit: &Limit, now: Timestamp, lease: LeaseId) -> bool {
        match self {
            BucketState::Concurrency(s) => s.renew(limit, now, lease),
            _ => false,
        }
    }

    /// How much of the bucket is in use at `now`.
    pub fn usage(&self, limit: &Limit, now: Timestamp) -> Usage {
        if !self.fits(limit) {
            return BucketState::new(limit).usage(limit, now);
        }
        match self {
            BucketState::Gcra(s) => s.usage(limit, now),
            BucketState::SlidingWindow(s) => s.usage(limit, now),
            BucketState::SlidingLog(s) => s.usage(limit, now),
            BucketState::FixedWindow(s) => s.usage(limit, now),
            BucketState::Concurrency(s) => s.usage(limit, now),
        }
    }

    /// Microseconds until the bucket is full again and equal to no bucket at all: the TTL a
    /// store gives it, and 0 when it may be evicted.
    pub fn ttl_us(&self, limit: &Limit, now: Timestamp) -> u64 {
        if !self.fits(limit) {
            return 0;
        }
        match self {
            BucketState::Gcra(s) => s.ttl_us(limit, now),
            BucketState::SlidingWindow(s) => s.ttl_us(limit, now),
            BucketState::SlidingLog(s) => s.ttl_us(limit, now),
            BucketState::FixedWindow(s) => s.ttl_us(limit, now),
            BucketState::Concurrency(s) => s.ttl_us(now),
        }
    }
}
