//! Subjects resolved against the policy once: see [`Prepared`].

use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;
use tollgate_core::Limit;

use crate::admission::{Admission, Answer};
use crate::cost::Cost;
use crate::decision::Decision;
use crate::error::Error;
use crate::limiter::handle::Limiter;
use crate::permit::Reservation;
use crate::plan::{op_cost, Meta, Plan, Planned, Reported};
use crate::store::memory::MemoryStore;
use crate::store::{Mode, Op, Ops, Store};
use crate::subject::Subject;

/// A subject resolved against a limiter's policy once, for callers that decide for the same
/// subject again and again (an agent's session, a tenant's connection, a per-key handle in a
/// gateway).
///
/// Resolving a subject (matching every rule, hashing its partition values, naming each
/// bucket) is about half of what a decision costs in memory; a prepared subject keeps the
/// result, and a decision for it only checks that the policy has not changed since. When it
/// has (or when the prepared subject comes from another limiter), the decision resolves the
/// subject again from the copy it keeps, so a prepared subject is never stale: it is only
/// slower until it is prepared again ([`Limiter::refresh`]). Its decisions are the ones the
/// same calls by subject make.
///
/// ```
/// use tollgate::{Cost, Limiter, Subject};
/// let limiter = Limiter::new();
/// let agent = limiter.prepare(&Subject::new().tenant("acme").provider("openai"));
/// for _ in 0..3 {
///     let decision = limiter
///         .check_prepared_now(&agent, Cost::tokens(500))
///         .expect("the memory store decides at once")?;
///     assert!(decision.is_allowed());
/// }
/// # Ok::<(), tollgate::Error>(())
/// ```
pub struct Prepared<S: Store = MemoryStore> {
    /// The subject, kept to resolve it again once the policy changes. Boxed: it is read only
    /// then, and a prepared subject stays small for callers that hold millions.
    subject: Box<Subject<'static>>,
    /// The policy version `ops` were resolved under.
    version: u64,
    /// One bucket per applicable limit. A single one is held inline, so that a prepared
    /// subject of one limit is 48 bytes with the memory store's keys, within one cache line:
    /// at 10,000 subjects and more, a decision reads that and the limit every subject shares,
    /// and 10,000 subjects with their buckets stay within a core's 1 MiB L2 cache.
    ops: SmallVec<[PreparedOp<S::Key>; 1]>,
}

/// One bucket of a prepared subject: its key, and its limit as the policy built it (shared by
/// every subject prepared under that policy, not copied into each).
struct PreparedOp<K> {
    key: K,
    planned: Arc<Planned>,
}

impl<K: Clone> Clone for PreparedOp<K> {
    fn clone(&self) -> Self {
        PreparedOp {
            key: self.key.clone(),
            planned: Arc::clone(&self.planned),
        }
    }
}

impl<S: Store> Clone for Prepared<S> {
    fn clone(&self) -> Self {
        Prepared {
            subject: self.subject.clone(),
            version: self.version,
            ops: self.ops.clone(),
        }
    }
}

impl<S: Store> fmt::Debug for Prepared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("subject", &self.subject)
            .field("limits", &self.ops.len())
            .finish()
    }
}

impl<S: Store> Prepared<S> {
    /// The subject this was prepared for.
    pub fn subject(&self) -> &Subject<'static> {
        &self.subject
    }

    /// How many limits apply to the subject (under the policy it was prepared with).
    pub fn limits(&self) -> usize {
        self.ops.len()
    }

    /// The operations for a call costing `cost`, as a plan of its own.
    fn plan_for(&self, cost: &Cost, take_slots: bool) -> Plan<S::Key> {
        let mut plan = Plan::new();
        for op in &self.ops {
            plan.ops.push(costed(op, cost, take_slots));
            plan.meta.push(op.planned.meta);
        }
        plan
    }
}

/// `op` as a store operation for a call costing `cost`.
#[inline(always)]
fn costed<K: Clone>(op: &PreparedOp<K>, cost: &Cost, take_slots: bool) -> Op<K> {
    let p = &*op.planned;
    Op {
        key: op.key.clone(),
        limit: p.limit,
        cost: op_cost(p.meta.kind, cost, take_slots),
        failure: p.failure,
    }
}

/// A prepared subject's buckets as the operations of a call costing `cost` (concurrency
/// limits checked, no slot taken), read where they are: the key in the prepared subject, the
/// limit and its report in the policy's shared [`Planned`].
struct PreparedOps<'a, K> {
    ops: &'a [PreparedOp<K>],
    cost: &'a Cost,
}

impl<K> Ops<K> for PreparedOps<'_, K> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.ops.len()
    }
    #[inline(always)]
    fn key(&self, i: usize) -> &K {
        &self.ops[i].key
    }
    #[inline(always)]
    fn limit(&self, i: usize) -> &Limit {
        &self.ops[i].planned.limit
    }
    #[inline(always)]
    fn cost(&self, i: usize) -> u64 {
        op_cost(self.ops[i].planned.meta.kind, self.cost, false)
    }
}

impl<K> Reported<K> for PreparedOps<'_, K> {
    #[inline(always)]
    fn meta(&self, i: usize) -> &Meta {
        &self.ops[i].planned.meta
    }
}

impl<S: Store> Limiter<S> {
    /// Resolves `subject` against the current policy once, for many decisions: see
    /// [`Prepared`].
    pub fn prepare(&self, subject: &Subject<'_>) -> Prepared<S> {
        let subject = Box::new(subject.clone().into_owned());
        let mut ops = SmallVec::new();
        let version = self.resolve(&subject, |key, _, rl| {
            ops.push(PreparedOp {
                key,
                planned: Arc::clone(&rl.planned),
            });
        });
        Prepared {
            subject,
            version,
            ops,
        }
    }

    /// Resolves `prepared` again if the policy changed since it was prepared, so that its
    /// decisions take the fast path again.
    pub fn refresh(&self, prepared: &mut Prepared<S>) {
        if !self.is_current(prepared) {
            *prepared = self.prepare(&prepared.subject);
        }
    }

    /// Whether `prepared` was resolved under this limiter's current policy.
    #[inline(always)]
    fn is_current(&self, prepared: &Prepared<S>) -> bool {
        prepared.version == self.inner.policy.version()
    }

    /// [`check`](Self::check) for a prepared subject: the same decision.
    ///
    /// # Errors
    /// Only if the store fails.
    pub async fn check_prepared(
        &self,
        prepared: &Prepared<S>,
        cost: Cost,
    ) -> Result<Decision, Error> {
        if !self.is_current(prepared) {
            return self.check(&prepared.subject, cost).await;
        }
        if let Some(decided) = self.check_current_now(prepared, cost) {
            return decided;
        }
        let plan = prepared.plan_for(&cost, false);
        Box::pin(self.decide_awaited(&plan, Mode::Spend, 0, None))
            .await
            .map(|(d, _, _)| d)
    }

    /// [`check_now`](Self::check_now) for a prepared subject: the same decision, for stores
    /// that decide at once (`None` means the store must be awaited: use
    /// [`check_prepared`](Self::check_prepared)).
    #[inline(always)]
    pub fn check_prepared_now(
        &self,
        prepared: &Prepared<S>,
        cost: Cost,
    ) -> Option<Result<Decision, Error>> {
        if !self.is_current(prepared) {
            return self.check_now(&prepared.subject, cost);
        }
        self.check_current_now(prepared, cost)
    }

    /// [`check_prepared_now`](Self::check_prepared_now) for a prepared subject known to be
    /// current.
    #[inline(always)]
    fn check_current_now(
        &self,
        prepared: &Prepared<S>,
        cost: Cost,
    ) -> Option<Result<Decision, Error>> {
        let mut decision = Decision::unlimited();
        match self.decide_current_now(prepared, cost, &mut decision)? {
            Ok(()) => Some(Ok(decision)),
            Err(e) => Some(Err(e)),
        }
    }

    /// The decision for a prepared subject known to be current, written into `answer` (a
    /// fresh `unlimited` answer), if the store makes it at once.
    #[inline(always)]
    fn decide_current_now(
        &self,
        prepared: &Prepared<S>,
        cost: Cost,
        answer: &mut impl Answer,
    ) -> Option<Result<(), Error>> {
        let decided = if let [one] = &*prepared.ops {
            // The shared limit and the cost go to the one-operation path as they are; an
            // operation is built only for a store that declines that path.
            let p = &*one.planned;
            let sample = self.stats_begin();
            let spend = op_cost(p.meta.kind, &cost, false);
            let mode = Mode::Spend;
            if self
                .decide_now_single(&one.key, &p.limit, spend, &p.meta, mode, 0, sample, answer)
                .is_some()
            {
                return Some(Ok(()));
            }
            let op = [costed(one, &cost, false)];
            let meta = [p.meta];
            self.decide_now_general(&op, &meta, mode, 0, None, sample, answer)
        } else if prepared.ops.is_empty() {
            // No limit applies: answered at once, unmeasured, as a decision by subject is.
            self.decide_now(&[], &[], Mode::Spend, 0, None, answer)
        } else {
            // The store reads the prepared buckets and their shared limits where they are.
            let view = PreparedOps {
                ops: &prepared.ops,
                cost: &cost,
            };
            let sample = self.stats_begin();
            if self
                .decide_now_in_place(&view, Mode::Spend, 0, sample, answer)
                .is_some()
            {
                return Some(Ok(()));
            }
            // A store that declines reads operations built where they are used: a moved
            // `SmallVec` of operations is copied whole (measured with callgrind: two
            // `memcpy`s of its inline array).
            let mut ops: SmallVec<[Op<S::Key>; 3]> = SmallVec::new();
            let mut meta: SmallVec<[Meta; 3]> = SmallVec::new();
            for op in &prepared.ops {
                ops.push(costed(op, &cost, false));
                meta.push(op.planned.meta);
            }
            self.decide_now_general(&ops, &meta, Mode::Spend, 0, None, sample, answer)
        };
        Some(decided?.map(|_| ()))
    }

    /// [`admit`](Self::admit) for a prepared subject: the same admission.
    ///
    /// # Errors
    /// Only if the store fails.
    pub async fn admit_prepared(
        &self,
        prepared: &Prepared<S>,
        cost: Cost,
    ) -> Result<Admission, Error> {
        if !self.is_current(prepared) {
            return self.admit(&prepared.subject, cost).await;
        }
        self.admit_planned(&prepared.plan_for(&cost, false)).await
    }

    /// [`admit_now`](Self::admit_now) for a prepared subject: the same admission, for stores
    /// that decide at once (`None` means the store must be awaited: use
    /// [`admit_prepared`](Self::admit_prepared)).
    ///
    /// ```
    /// use tollgate::{Cost, Limiter, Subject};
    /// let limiter = Limiter::new();
    /// let agent = limiter.prepare(&Subject::new().tenant("acme").provider("openai"));
    /// let admission = limiter
    ///     .admit_prepared_now(&agent, Cost::tokens(500))
    ///     .expect("the memory store decides at once")?;
    /// assert!(admission.is_allowed());
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[inline(always)]
    pub fn admit_prepared_now(
        &self,
        prepared: &Prepared<S>,
        cost: Cost,
    ) -> Option<Result<Admission, Error>> {
        if !self.is_current(prepared) {
            return self.admit_now(&prepared.subject, cost);
        }
        let mut admission = Admission::unlimited();
        match self.decide_current_now(prepared, cost, &mut admission)? {
            Ok(()) => Some(Ok(admission)),
            Err(e) => Some(Err(e)),
        }
    }

    /// [`reserve`](Self::reserve) for a prepared subject: the same reservation.
    ///
    /// # Errors
    /// Only if the store fails; a denial is [`Reservation::Denied`].
    pub async fn reserve_prepared(
        &self,
        prepared: &Prepared<S>,
        estimate: Cost,
    ) -> Result<Reservation<S>, Error> {
        if !self.is_current(prepared) {
            return self.reserve(&prepared.subject, estimate).await;
        }
        self.reserve_planned(prepared.plan_for(&estimate, true))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway holds a prepared subject per tenant, agent or connection, and a decision
    /// reads it: the struct (holding one limit inline) must stay 48 bytes, with the
    /// limits shared with every other subject rather than copied in.
    #[test]
    fn a_prepared_subject_is_48_bytes_and_shares_its_limits() {
        assert!(std::mem::size_of::<Prepared<MemoryStore>>() <= 48);
        let limiter = Limiter::new();
        let a = limiter.prepare(&Subject::new().tenant("a").provider("openai"));
        let b = limiter.prepare(&Subject::new().tenant("b").provider("openai"));
        assert_eq!(a.limits(), 2);
        for (x, y) in a.ops.iter().zip(&b.ops) {
            assert!(Arc::ptr_eq(&x.planned, &y.planned));
            assert_ne!(x.key, y.key);
        }
    }
}
