//! The decision path: the store's verdicts for a plan, written into an answer (a
//! [`Decision`] or an [`Admission`](crate::Admission)) and counted.
//!
//! - [`decide_now`](Limiter::decide_now) decides without waiting, if the store can: a plan
//!   with no operation is answered from the policy's `unmatched`; otherwise it tries the
//!   specializations of `fast.rs` (one operation; operations read in place), then the
//!   general path [`decide_now_general`](Limiter::decide_now_general).
//! - [`decide_awaited`](Limiter::decide_awaited) waits for a store that cannot (Redis).
//! - [`decide`](Limiter::decide) is the two in turn.
//!
//! Every path ends in the same steps: [`finish`](Limiter::finish) (a store error),
//! [`conclude`](Limiter::conclude) (verdicts into the answer, degraded answers) and
//! [`count`](Limiter::count) (the stats).

use std::time::Duration;

use tollgate_core::{LeaseId, Verdict};

use super::handle::Limiter;
use crate::admission::Answer;
use crate::decision::{Decision, Outcome};
use crate::error::{Error, StoreError};
use crate::plan::{Meta, Plan, PlanOps, Reported};
use crate::stats::Sample;
use crate::store::{Degraded, Mode, Op, Route, Store, StoreOutcome, Tally, VerdictSink};

impl<S: Store> Limiter<S> {
    /// The decision for `plan`, with the time the store decided at and the route it took: at
    /// once ([`decide_now`](Self::decide_now)) if the store can, otherwise waiting for it
    /// ([`decide_awaited`](Self::decide_awaited)). For reservations and call limits; the
    /// decisions by subject start from [`decide_now`](Self::decide_now) themselves.
    pub(crate) async fn decide(
        &self,
        plan: &Plan<S::Key>,
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> Result<(Decision, tollgate_core::Timestamp, Route), Error> {
        if let Some(r) = self.decide_plan_now(plan, mode, lease, request_id) {
            return r;
        }
        Box::pin(self.decide_awaited(plan, mode, lease, request_id)).await
    }

    /// [`decide_now`](Self::decide_now) of a whole plan into a new [`Decision`]. Out of the
    /// async body of [`decide`](Self::decide), so that the decision is not kept in the
    /// future's state.
    fn decide_plan_now(
        &self,
        plan: &Plan<S::Key>,
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> Option<Result<(Decision, tollgate_core::Timestamp, Route), Error>> {
        let mut decision = Decision::unlimited();
        match self.decide_now(
            &plan.ops,
            &plan.meta,
            mode,
            lease,
            request_id,
            &mut decision,
        )? {
            Ok((now, route)) => Some(Ok((decision, now, route))),
            Err(e) => Some(Err(e)),
        }
    }

    /// The decision of `ops` (reported as `meta`) if the store makes it without waiting,
    /// written into `answer`, which starts as its `unlimited` answer (a [`Decision`] or an
    /// [`Admission`](crate::Admission)), and counted; `None` (nothing written) if the store
    /// must be awaited. No operation: the policy's `unmatched` answers. With no request id,
    /// the specializations go first: one operation
    /// ([`decide_now_single`](Self::decide_now_single)), then operations read in place
    /// ([`decide_now_in_place`](Self::decide_now_in_place)); a store that declines both, or a
    /// request id, takes the general path ([`decide_now_general`](Self::decide_now_general)).
    #[inline(always)]
    pub(crate) fn decide_now(
        &self,
        ops: &[Op<S::Key>],
        meta: &[Meta],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
        answer: &mut impl Answer,
    ) -> Option<Result<(tollgate_core::Timestamp, Route), Error>> {
        if ops.is_empty() {
            let unmatched = self.inner.policy.with(|p| p.unmatched());
            if unmatched == crate::policy::Unmatched::Deny {
                answer.settle(Outcome::Unmatched, None, Duration::ZERO);
            }
            if mode == Mode::Spend {
                crate::policy::note_unmatched(unmatched);
                let sample = self.inner.stats.begin_unmeasured();
                self.inner.stats.record(sample, answer.outcome(), None);
            }
            return Some(Ok((tollgate_core::Timestamp::EPOCH, Route::PRIMARY)));
        }
        let sample = self.inner.stats.begin();
        if request_id.is_none() {
            if let ([op], [m]) = (ops, meta) {
                let one = self
                    .decide_now_single(&op.key, &op.limit, op.cost, m, mode, lease, sample, answer);
                if let Some(decided) = one {
                    return Some(Ok(decided));
                }
            }
            let plan = PlanOps { ops, meta };
            if let Some(decided) = self.decide_now_in_place(&plan, mode, lease, sample, answer) {
                return Some(Ok(decided));
            }
        }
        self.decide_now_general(ops, meta, mode, lease, request_id, sample, answer)
    }

    /// The general path of [`decide_now`](Self::decide_now): the store's
    /// [`decide_sync`](Store::decide_sync), for operations (at least one) that the
    /// specializations did not take, with or without a request id; `sample` is the count
    /// begun before it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn decide_now_general(
        &self,
        ops: &[Op<S::Key>],
        meta: &[Meta],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
        sample: Sample<'_>,
        answer: &mut impl Answer,
    ) -> Option<Result<(tollgate_core::Timestamp, Route), Error>> {
        let outcome = self.inner.store.decide_sync(ops, mode, lease, request_id)?;
        Some(self.finish(&PlanOps { ops, meta }, mode, sample, outcome, answer))
    }

    /// The decision for `plan`, waiting for the store: for a plan that
    /// [`decide_now`](Self::decide_now) could not answer (so it has operations).
    pub(crate) async fn decide_awaited(
        &self,
        plan: &Plan<S::Key>,
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> Result<(Decision, tollgate_core::Timestamp, Route), Error> {
        let started = quanta::Instant::now();
        let outcome = self
            .inner
            .store
            .decide(&plan.ops, mode, lease, request_id)
            .await;
        let sample = self.inner.stats.after_wait(started);
        let mut decision = Decision::unlimited();
        let ops = PlanOps {
            ops: &plan.ops,
            meta: &plan.meta,
        };
        let (now, route) = self.finish(&ops, mode, sample, outcome, &mut decision)?;
        Ok((decision, now, route))
    }

    /// Turns the store's answer into the decision (written into `answer`, which starts as
    /// its `unlimited` answer), and counts it.
    #[inline(always)]
    pub(super) fn finish<R: Reported<S::Key> + ?Sized>(
        &self,
        ops: &R,
        mode: Mode,
        sample: Sample<'_>,
        outcome: Result<StoreOutcome, StoreError>,
        answer: &mut impl Answer,
    ) -> Result<(tollgate_core::Timestamp, Route), Error> {
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                metrics::counter!("tollgate_store_errors_total").increment(1);
                return Err(e.into());
            }
        };
        self.conclude(
            ops,
            &outcome.verdicts,
            outcome.store_full,
            outcome.spent,
            outcome.degraded,
            mode,
            sample,
            answer,
        );
        Ok((outcome.now, outcome.route))
    }

    /// Writes the decision that the store's `verdicts` (one per operation) make into
    /// `answer`, and counts it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn conclude<R: Reported<S::Key> + ?Sized>(
        &self,
        ops: &R,
        verdicts: &[Verdict],
        store_full: bool,
        spent: bool,
        degraded: Option<Degraded>,
        mode: Mode,
        sample: Sample<'_>,
        answer: &mut impl Answer,
    ) {
        let mut denied_by = fill_decision(ops, verdicts, store_full, spent, answer);
        if let Some(Degraded::FailureModes { unavailable }) = degraded {
            answer.degrade(unavailable);
            if unavailable {
                denied_by = None;
            }
        }
        self.count(ops, denied_by, mode, sample, answer);
    }

    /// Counts a decision written into `answer`, denied by operation `denied_by` if one did
    /// (a peek is not counted).
    #[inline(always)]
    pub(super) fn count<R: Reported<S::Key> + ?Sized>(
        &self,
        ops: &R,
        denied_by: Option<usize>,
        mode: Mode,
        sample: Sample<'_>,
        answer: &impl Answer,
    ) {
        if mode == Mode::Spend {
            let denier = denied_by.map(|i| ops.meta(i).denial);
            self.inner.stats.record(sample, answer.outcome(), denier);
        }
    }
}

/// Turns the store's verdicts into `d`, a fresh `unlimited` answer (a [`Decision`] is built
/// in place: it is a few hundred bytes); returns the index of the denying limit, if one
/// denied. Verdicts beyond the operations are ignored.
#[inline(always)]
fn fill_decision<K, R: Reported<K> + ?Sized>(
    ops: &R,
    verdicts: &[Verdict],
    store_full: bool,
    spent: bool,
    d: &mut impl Answer,
) -> Option<usize> {
    let verdicts = verdicts.get(..ops.len()).unwrap_or(verdicts);
    let mut tally = Tally::default();
    for (i, v) in verdicts.iter().enumerate() {
        tally.put(i, v);
    }
    let spends = tally.admitted && (spent || !store_full);
    for (i, v) in verdicts.iter().enumerate() {
        d.status(ops.limit(i), ops.cost(i), ops.meta(i), v, spends);
    }
    settle_outcome(ops, &tally, store_full, spent, d)
}

/// Writes the outcome that `tally` (of every verdict) makes into `d`; returns the index of the
/// denying limit, if one denied.
#[inline(always)]
pub(super) fn settle_outcome<K, R: Reported<K> + ?Sized>(
    ops: &R,
    tally: &Tally,
    store_full: bool,
    spent: bool,
    d: &mut impl Answer,
) -> Option<usize> {
    let (outcome, denied_by, retry_after_us) = if store_full && !spent {
        (Outcome::StoreFull, None, 0)
    } else if tally.admitted {
        (Outcome::Allowed, None, 0)
    } else if let Some(i) = tally.too_large {
        (Outcome::TooLarge, Some(i), 0)
    } else {
        (Outcome::Denied, tally.denier, tally.retry_after_us)
    };
    // A store names only its own operations; anything else is not a limit to report.
    let denied_by = denied_by.filter(|&i| i < ops.len());
    d.settle(
        outcome,
        denied_by.map(|i| (i, ops.limit(i), ops.meta(i))),
        Duration::from_micros(retry_after_us),
    );
    denied_by
}
