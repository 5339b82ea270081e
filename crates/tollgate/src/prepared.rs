//! Subjects resolved against the policy once: see [`Prepared`].

use std::fmt;

use smallvec::SmallVec;

use crate::cost::Cost;
use crate::decision::Decision;
use crate::error::Error;
use crate::limiter::{op_cost, Limiter, Meta, Plan};
use crate::permit::Reservation;
use crate::store::memory::MemoryStore;
use crate::store::{Mode, Op, Store};
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
    /// The policy version `ops` and `meta` were resolved under.
    version: u64,
    /// One operation per applicable limit, each with a cost of zero; a decision writes its
    /// own costs into a copy. A single operation is held inline, so that a decision for one
    /// of many prepared subjects reads one place in memory rather than three.
    ops: SmallVec<[Op<S::Key>; 1]>,
    /// What the decision reports about each operation.
    meta: SmallVec<[Meta; 1]>,
}

impl<S: Store> Clone for Prepared<S> {
    fn clone(&self) -> Self {
        Prepared {
            subject: self.subject.clone(),
            version: self.version,
            ops: self.ops.clone(),
            meta: self.meta.clone(),
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
        plan.ops = self
            .ops
            .iter()
            .zip(self.meta.iter())
            .map(|(op, m)| costed(op, m, cost, take_slots))
            .collect();
        plan.meta = self.meta.iter().copied().collect();
        plan
    }
}

/// `op` with the cost of a call costing `cost`.
#[inline(always)]
fn costed<K: Clone>(op: &Op<K>, m: &Meta, cost: &Cost, take_slots: bool) -> Op<K> {
    Op {
        key: op.key.clone(),
        limit: op.limit,
        cost: op_cost(m.kind, cost, take_slots),
        failure: op.failure,
    }
}

impl<S: Store> Limiter<S> {
    /// Resolves `subject` against the current policy once, for many decisions: see
    /// [`Prepared`].
    pub fn prepare(&self, subject: &Subject<'_>) -> Prepared<S> {
        let subject = Box::new(subject.clone().into_owned());
        let mut plan = Plan::new();
        let version = self.plan_into(&subject, &Cost::requests(0), false, &mut plan);
        Prepared {
            subject,
            version,
            ops: plan.ops.into_iter().collect(),
            meta: plan.meta.into_iter().collect(),
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
        let meta = &prepared.meta;
        let decided = if let ([op], [m]) = (&*prepared.ops, &**meta) {
            // The cost goes to the one-operation path beside the operation, not in a copy of
            // it; a copy is made only for a store that declines that path.
            let started = crate::stats::sample_latency().then(quanta::Instant::now);
            let spend = op_cost(m.kind, &cost, false);
            let mode = Mode::Spend;
            if self
                .decide_one_now_into(op, spend, m, mode, 0, started, &mut decision)
                .is_some()
            {
                return Some(Ok(decision));
            }
            let one = [costed(op, m, &cost, false)];
            self.decide_now_general(&one, meta, mode, 0, None, started, &mut decision)
        } else {
            // Built where they are used: a moved `SmallVec` of operations is copied whole
            // (measured with callgrind: two `memcpy`s of its inline array).
            let mut ops: SmallVec<[Op<S::Key>; 3]> = SmallVec::new();
            for (op, m) in prepared.ops.iter().zip(meta.iter()) {
                ops.push(costed(op, m, &cost, false));
            }
            self.decide_now_into(&ops, meta, Mode::Spend, 0, None, &mut decision)
        };
        match decided? {
            Ok(_) => Some(Ok(decision)),
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
