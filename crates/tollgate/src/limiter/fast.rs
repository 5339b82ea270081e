//! The specializations of [`decide_now`](Limiter::decide_now) for a decision with no request
//! id, each the same decision as the general path with less copying, and each declined
//! (`None`, nothing written or counted) by a store that does not offer it:
//!
//! - [`decide_now_single`](Limiter::decide_now_single): one operation, through
//!   [`Store::decide_one_sync`]: no vectors of operations or verdicts;
//! - [`decide_now_in_place`](Limiter::decide_now_in_place): any number of operations read
//!   where they are, through [`Store::decide_ops_sync`]: verdicts into this decision's
//!   scratch space, or folded as they are made for an answer that reads no statuses.
//!
//! `one_limit_path.rs` and `in_place_spends.rs` check that they decide as the general path does.

use std::time::Duration;

use tollgate_core::{LeaseId, Limit};

use super::decide::settle_outcome;
use super::handle::Limiter;
use crate::admission::Answer;
use crate::decision::Outcome;
use crate::plan::{Meta, Reported};
use crate::scratch::Scratch;
use crate::stats::Sample;
use crate::store::{Mode, Route, Store, Tally};

impl<S: Store> Limiter<S> {
    /// A decision of one operation (bucket `key` under `limit`) spending `cost`, with no
    /// request id, written into `answer` (a fresh [`Decision`](crate::Decision) or
    /// [`Admission`](crate::Admission), `unlimited`) and counted, if the store answers it at
    /// once through [`Store::decide_one_sync`]; `None` (nothing written, nothing counted) if
    /// it does not. The same decision as [`decide_now`](Self::decide_now) without the
    /// store's vectors of verdicts. `sample` is the count begun before it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn decide_now_single<A: Answer>(
        &self,
        key: &S::Key,
        limit: &Limit,
        cost: u64,
        meta: &Meta,
        mode: Mode,
        lease: LeaseId,
        sample: Sample<'_>,
        answer: &mut A,
    ) -> Option<(tollgate_core::Timestamp, Route)> {
        let one = self
            .inner
            .store
            .decide_one_sync(key, limit, cost, mode, lease, A::BRIEF)?;
        let v = &one.verdict;
        let spends = v.admitted && (one.spent || !one.store_full);
        answer.status(limit, cost, meta, v, spends);
        // The outcome of one verdict, written out: through `fill_decision`'s loops over a
        // one-element slice it cost 22 more instructions per decision (callgrind,
        // `check/hot/admitted`, 509 against 531 prepared). `one_limit_path.rs` checks that
        // both give the same decision for every outcome.
        let mut denier = None;
        if one.store_full && !one.spent {
            answer.settle(Outcome::StoreFull, None, Duration::ZERO);
        } else if !v.admitted {
            let (outcome, retry_after) = if v.never_fits {
                (Outcome::TooLarge, Duration::ZERO)
            } else {
                (Outcome::Denied, Duration::from_micros(v.retry_after_us))
            };
            answer.settle(outcome, Some((0, limit, meta)), retry_after);
            denier = Some(meta.denial);
        }
        if mode == Mode::Spend {
            self.inner.stats.record(sample, answer.outcome(), denier);
        }
        Some((one.now, Route::PRIMARY))
    }

    /// A decision of `ops` with no request id, written into `answer` (a fresh `unlimited`
    /// answer) and counted, if the store answers it at once through
    /// [`Store::decide_ops_sync`], reading the operations where they are and writing its
    /// verdicts into this decision's scratch space; `None` (nothing written, nothing counted)
    /// if it does not. The same decision as [`decide_now_general`](Self::decide_now_general)
    /// without building operations or the store's vector of verdicts. `sample` is the count
    /// begun before it.
    #[inline(always)]
    pub(crate) fn decide_now_in_place<R: Reported<S::Key> + ?Sized, A: Answer>(
        &self,
        ops: &R,
        mode: Mode,
        lease: LeaseId,
        sample: Sample<'_>,
        answer: &mut A,
    ) -> Option<(tollgate_core::Timestamp, Route)> {
        let store = &self.inner.store;
        if A::BRIEF {
            // An admission reads only what the verdicts make of the decision: the store folds
            // them as it makes them, and nothing is written out or read back.
            let mut tally = Tally::default();
            let applied = store.decide_ops_sync(ops, mode, lease, &mut tally)?;
            let denied_by = settle_outcome(ops, &tally, applied.store_full, applied.spent, answer);
            self.count(ops, denied_by, mode, sample, answer);
            return Some((applied.now, Route::PRIMARY));
        }
        let mut scratch = Scratch::new();
        let verdicts = scratch.slice(ops.len());
        let applied = store.decide_ops_sync(ops, mode, lease, verdicts)?;
        self.conclude(
            ops,
            verdicts,
            applied.store_full,
            applied.spent,
            None,
            mode,
            sample,
            answer,
        );
        Some((applied.now, Route::PRIMARY))
    }
}
