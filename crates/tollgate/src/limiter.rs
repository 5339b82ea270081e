//! The limiter: resolves a subject against the policy and asks the store for a decision.

use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;
use tollgate_core::{Clock, LeaseId, Limit, LimitKind, Verdict};

use crate::admission::{Admission, Answer};
use crate::cost::Cost;
use crate::decision::{Decision, LimitStatus, Outcome};
use crate::error::{Error, StoreError};
use crate::key::{partition_hash, BucketName};
use crate::permit::{Permit, Reservation};
use crate::policy::{default_policy, CurrentPolicy, Policy};
use crate::scratch::Scratch;
use crate::stats::{DenialLabels, Sample, Stats, StatsSnapshot};
use crate::store::memory::MemoryStore;
use crate::store::{
    Degraded, Mode, Op, Ops, Route, Settlement, Store, StoreOutcome, Tally, VerdictSink,
};
use crate::subject::Subject;
use crate::wait::WaitQueues;

/// Decides admission for calls. Cheap to clone: clones share the policy, the store and the
/// waiters.
///
/// ```
/// use tollgate::{Cost, Limiter, Subject};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tollgate::Error> {
/// // The built-in policy: 60 requests and 100,000 tokens per minute per caller and provider.
/// let limiter = Limiter::new();
/// let who = Subject::new().tenant("acme").provider("openai");
/// let decision = limiter.check(&who, Cost::tokens(1_500)).await?;
/// assert!(decision.is_allowed());
/// # Ok(()) }
/// ```
pub struct Limiter<S: Store = MemoryStore> {
    pub(crate) inner: Arc<Inner<S>>,
}

impl<S: Store> Clone for Limiter<S> {
    fn clone(&self) -> Self {
        Limiter {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Store + std::fmt::Debug> std::fmt::Debug for Limiter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("store", &self.inner.store)
            .field("rules", &self.inner.policy.with(|p| p.rules().len()))
            .finish()
    }
}

pub(crate) struct Inner<S: Store> {
    pub(crate) store: S,
    pub(crate) policy: CurrentPolicy,
    pub(crate) waiters: WaitQueues<S::Key>,
    /// Woken whenever capacity is given back (a slot released, tokens refunded), so that
    /// waiters re-check before their timer.
    pub(crate) released: tokio::sync::Notify,
    stats: Stats,
    /// The partitions decided for, when [`Limiter::track_subjects`] turned the index on.
    pub(crate) subjects: std::sync::OnceLock<crate::subjects::SubjectIndex>,
}

/// What a decision reports about one planned operation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub(crate) rule: &'static str,
    pub(crate) label: &'static str,
    pub(crate) kind: LimitKind,
    pub(crate) denial: &'static DenialLabels,
}

/// One limit of a rule as a decision uses it, built once with the rule and shared (behind an
/// `Arc`) by every subject prepared under it ([`Prepared`](crate::Prepared)): a million
/// prepared subjects read one copy of it, which stays in the CPU's cache, instead of a copy
/// each (a prepared subject's own copies cost about four cache misses per decision at 10,000
/// subjects; callgrind's cache simulation).
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) limit: Limit,
    pub(crate) failure: crate::store::FailureMode,
    pub(crate) meta: Meta,
}

/// A subject resolved against the policy: the store's operations, and beside them (same order)
/// what the decision reports about each, so the store reads `ops` without a copy.
#[derive(Clone)]
pub(crate) struct Plan<K> {
    pub(crate) ops: SmallVec<[Op<K>; 3]>,
    pub(crate) meta: SmallVec<[Meta; 3]>,
}

impl<K> Plan<K> {
    pub(crate) fn new() -> Self {
        Plan {
            ops: SmallVec::new(),
            meta: SmallVec::new(),
        }
    }

    /// The operations and their reports, pairwise.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Op<K>, &Meta)> {
        self.ops.iter().zip(self.meta.iter())
    }
}

/// A decision's operations read by index ([`Ops`]), with what the decision reports about
/// each: a plan's, or a prepared subject's.
pub(crate) trait Reported<K>: Ops<K> {
    /// The report of operation `i`.
    fn meta(&self, i: usize) -> &Meta;
}

/// A plan's operations and their reports, side by side.
pub(crate) struct PlanOps<'a, K> {
    pub(crate) ops: &'a [Op<K>],
    pub(crate) meta: &'a [Meta],
}

impl<K> Ops<K> for PlanOps<'_, K> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.ops.len().min(self.meta.len())
    }
    #[inline(always)]
    fn key(&self, i: usize) -> &K {
        &self.ops[i].key
    }
    #[inline(always)]
    fn limit(&self, i: usize) -> &Limit {
        &self.ops[i].limit
    }
    #[inline(always)]
    fn cost(&self, i: usize) -> u64 {
        self.ops[i].cost
    }
}

impl<K> Reported<K> for PlanOps<'_, K> {
    #[inline(always)]
    fn meta(&self, i: usize) -> &Meta {
        &self.meta[i]
    }
}

impl Limiter<MemoryStore> {
    /// A limiter with the built-in default policy, an in-memory store and the system clock.
    pub fn new() -> Self {
        Limiter::with_store(default_policy(), MemoryStore::new())
    }

    /// A limiter with `policy` and an in-memory store reading `clock`.
    pub fn with_clock(policy: Policy, clock: impl Clock + 'static) -> Self {
        Limiter::with_store(policy, MemoryStore::with_clock(clock))
    }

    /// A limiter with `policy` and an in-memory store with the system clock.
    pub fn with_policy(policy: Policy) -> Self {
        Limiter::with_store(policy, MemoryStore::new())
    }
}

impl Default for Limiter<MemoryStore> {
    fn default() -> Self {
        Limiter::new()
    }
}

/// How much of one limit is in use, from [`Limiter::usage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitUsage {
    /// The rule.
    pub rule: &'static str,
    /// The limit's label within the rule.
    pub label: &'static str,
    /// What the limit counts.
    pub kind: LimitKind,
    /// The amount per window.
    pub amount: u64,
    /// The window.
    pub window: tollgate_core::Window,
    /// Units spent and not yet refilled (above `capacity` while in debt).
    pub used: u64,
    /// The most the bucket holds.
    pub capacity: u64,
    /// Units that could be spent now.
    pub available: u64,
    /// Time until the bucket is fully available again.
    pub reset_after: Duration,
}

impl<S: Store> Limiter<S> {
    /// A limiter with `policy` over `store`.
    pub fn with_store(policy: Policy, store: S) -> Self {
        Limiter {
            inner: Arc::new(Inner {
                store,
                policy: CurrentPolicy::new(policy),
                waiters: WaitQueues::new(),
                released: tokio::sync::Notify::new(),
                stats: Stats::new(),
                subjects: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.inner.policy.load_full()
    }

    /// Replaces the policy atomically. Buckets of limits that did not change keep their
    /// state; buckets of changed limits start full.
    pub fn set_policy(&self, policy: Policy) {
        self.inner.policy.store(policy);
    }

    /// Resolves `subject` into one operation per applicable limit. Concurrency limits take a
    /// slot when `take_slots`, and are only checked otherwise.
    pub(crate) fn plan(
        &self,
        subject: &Subject<'_>,
        cost: &Cost,
        take_slots: bool,
    ) -> Plan<S::Key> {
        let mut plan = Plan::new();
        self.plan_into(subject, cost, take_slots, &mut plan);
        plan
    }

    /// [`plan`](Self::plan) into an empty plan the caller owns, so that the hot path moves
    /// no plan around. Returns the version of the policy it planned under.
    #[inline]
    pub(crate) fn plan_into(
        &self,
        subject: &Subject<'_>,
        cost: &Cost,
        take_slots: bool,
        plan: &mut Plan<S::Key>,
    ) -> u64 {
        self.resolve(subject, |key, rule, rl| {
            let meta = rl.planned.meta;
            plan.ops.push(Op {
                key,
                limit: rl.limit,
                cost: op_cost(meta.kind, cost, take_slots),
                failure: rule.failure_mode,
            });
            plan.meta.push(meta);
        })
    }

    /// Walks the limits that apply to `subject` under the current policy, in plan order:
    /// `each` gets every one's bucket key, rule and limit. Returns the policy's version.
    #[inline(always)]
    pub(crate) fn resolve(
        &self,
        subject: &Subject<'_>,
        mut each: impl FnMut(S::Key, &crate::policy::Rule, &crate::policy::RuleLimit),
    ) -> u64 {
        self.inner.policy.with_version(|version, policy| {
            for rule in policy.rules() {
                let mut values: SmallVec<[&str; 4]> = SmallVec::new();
                if !rule.partition_of(subject, &mut values) {
                    continue;
                }
                let ph = partition_hash(rule.id, &values);
                if let Some(index) = self.inner.subjects.get() {
                    index.note(rule.id, ph, &values);
                }
                for rl in &rule.limits_for(subject).limits {
                    let name = BucketName {
                        rule: rule.name,
                        rule_id: rule.id,
                        limit: rl.label,
                        partition: &values,
                        partition_hash: ph,
                        limit_salt: rl.salt,
                    };
                    each(self.inner.store.bucket_key(&name), rule, rl);
                }
            }
            version
        })
    }

    /// Admits the call and spends `cost` from every applicable limit, or denies it and spends
    /// nothing. Concurrency limits are checked (a slot must be free) but no slot is held: use
    /// [`reserve`](Self::reserve) for calls that stay in flight.
    ///
    /// # Errors
    /// Only if the store fails; a denial is an `Ok` decision.
    pub async fn check(&self, subject: &Subject<'_>, cost: Cost) -> Result<Decision, Error> {
        self.decide_subject(subject, cost, Mode::Spend, None).await
    }

    /// [`check`](Self::check) without an async context, for stores that decide at once: the
    /// memory store always does. `None` means the store must be awaited (Redis): use
    /// [`check`](Self::check).
    ///
    /// ```
    /// use tollgate::{Cost, Limiter, Subject};
    /// let limiter = Limiter::new();
    /// let who = Subject::new().tenant("acme").provider("openai");
    /// let decision = limiter.check_now(&who, Cost::ONE).expect("the memory store decides at once")?;
    /// assert!(decision.is_allowed());
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[inline]
    pub fn check_now(&self, subject: &Subject<'_>, cost: Cost) -> Option<Result<Decision, Error>> {
        self.subject_now(subject, cost, Mode::Spend)
    }

    /// Begins counting a synchronous decision.
    #[inline(always)]
    pub(crate) fn stats_begin(&self) -> Sample<'_> {
        self.inner.stats.begin()
    }

    /// [`check`](Self::check) answered as an [`Admission`]: the same decision, spent and
    /// counted the same, without the status of every limit.
    ///
    /// # Errors
    /// Only if the store fails; a denial is an `Ok` admission.
    pub async fn admit(&self, subject: &Subject<'_>, cost: Cost) -> Result<Admission, Error> {
        let plan = self.plan(subject, &cost, false);
        self.admit_planned(&plan).await
    }

    /// [`admit`](Self::admit) of a resolved plan: at once if the store decides at once,
    /// otherwise waiting for it.
    pub(crate) async fn admit_planned(&self, plan: &Plan<S::Key>) -> Result<Admission, Error> {
        if let Some(decided) = self.admit_ops_now(&plan.ops, &plan.meta) {
            return decided;
        }
        Box::pin(self.decide_awaited(plan, Mode::Spend, 0, None))
            .await
            .map(|(d, _, _)| Admission::from(&d))
    }

    /// [`check_now`](Self::check_now) answered as an [`Admission`], for the hot path of a
    /// caller that only passes or refuses the call (see [`Admission`]). `None` means the
    /// store must be awaited: use [`admit`](Self::admit).
    #[inline]
    pub fn admit_now(&self, subject: &Subject<'_>, cost: Cost) -> Option<Result<Admission, Error>> {
        let mut plan = Plan::new();
        self.plan_into(subject, &cost, false, &mut plan);
        self.admit_ops_now(&plan.ops, &plan.meta)
    }

    /// The admission for `ops` (reported as `meta`) if the store decides at once: the
    /// decision of [`decide_now_into`](Self::decide_now_into), written into an [`Admission`].
    #[inline(always)]
    pub(crate) fn admit_ops_now(
        &self,
        ops: &[Op<S::Key>],
        meta: &[Meta],
    ) -> Option<Result<Admission, Error>> {
        let mut admission = Admission::unlimited();
        match self.decide_now_into(ops, meta, Mode::Spend, 0, None, &mut admission)? {
            Ok(_) => Some(Ok(admission)),
            Err(e) => Some(Err(e)),
        }
    }

    /// [`peek`](Self::peek) without an async context, for stores that decide at once (see
    /// [`check_now`](Self::check_now)).
    pub fn peek_now(&self, subject: &Subject<'_>, cost: Cost) -> Option<Result<Decision, Error>> {
        self.subject_now(subject, cost, Mode::Peek)
    }

    /// Plans and decides at once, building the plan and the decision in place. (Not through
    /// [`try_now`](Self::try_now): returning the decision inside its `Result` cost this path
    /// about a hundred instructions of copying, measured with callgrind.)
    #[inline(always)]
    fn subject_now(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        mode: Mode,
    ) -> Option<Result<Decision, Error>> {
        let mut plan = Plan::new();
        self.plan_into(subject, &cost, false, &mut plan);
        let mut decision = Decision::unlimited();
        match self.decide_now_into(&plan.ops, &plan.meta, mode, 0, None, &mut decision)? {
            Ok(_) => Some(Ok(decision)),
            Err(e) => Some(Err(e)),
        }
    }

    /// The decision if the store makes it at once; otherwise the plan, for the caller to
    /// await the store with.
    #[inline]
    fn try_now(
        &self,
        subject: &Subject<'_>,
        cost: &Cost,
        mode: Mode,
        request_id: Option<&str>,
    ) -> Result<Result<Decision, Error>, Plan<S::Key>> {
        let mut plan = Plan::new();
        self.plan_into(subject, cost, false, &mut plan);
        let mut decision = Decision::unlimited();
        match self.decide_now_into(&plan.ops, &plan.meta, mode, 0, request_id, &mut decision) {
            Some(Ok(_)) => Ok(Ok(decision)),
            Some(Err(e)) => Ok(Err(e)),
            None => Err(plan),
        }
    }

    /// Plans and decides. A store that decides at once answers before any future state is
    /// built; otherwise the plan moves into a boxed future, so that the caller's future stays
    /// small. (Measured with callgrind, this form copies less than deciding in place inside
    /// the async body, where the decision lands in the future's state.)
    async fn decide_subject(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        mode: Mode,
        request_id: Option<&str>,
    ) -> Result<Decision, Error> {
        let plan = match self.try_now(subject, &cost, mode, request_id) {
            Ok(decided) => return decided,
            Err(plan) => plan,
        };
        Box::pin(async move { self.decide_awaited(&plan, mode, 0, request_id).await })
            .await
            .map(|(d, _, _)| d)
    }

    /// [`check`](Self::check) made idempotent by `request_id`: a retry with the same id, the
    /// same subject and the same cost within the store's idempotency window answers the first
    /// admission again and spends nothing. A denial is decided again (the capacity may have
    /// come back). The id is scoped to the subject and cost: another subject or cost with the
    /// same id is another request, decided on its own.
    ///
    /// # Errors
    /// Only if the store fails.
    pub async fn check_idempotent(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        request_id: &str,
    ) -> Result<Decision, Error> {
        let scoped = crate::store::idempotency::subject_scoped(request_id, subject);
        self.decide_subject(subject, cost, Mode::Spend, Some(&scoped))
            .await
    }

    /// The decision [`check`](Self::check) would make, spending nothing.
    ///
    /// # Errors
    /// Only if the store fails.
    pub async fn peek(&self, subject: &Subject<'_>, cost: Cost) -> Result<Decision, Error> {
        self.decide_subject(subject, cost, Mode::Peek, None).await
    }

    /// Reserves `estimate` and a concurrency slot. The permit settles against the actual
    /// cost with [`Permit::commit`], refunds with [`Permit::cancel`], and releases its slot
    /// when dropped.
    ///
    /// # Errors
    /// Only if the store fails; a denial is [`Reservation::Denied`].
    pub async fn reserve(
        &self,
        subject: &Subject<'_>,
        estimate: Cost,
    ) -> Result<Reservation<S>, Error> {
        let plan = self.plan(subject, &estimate, true);
        self.reserve_planned(plan).await
    }

    pub(crate) async fn reserve_planned(
        &self,
        plan: Plan<S::Key>,
    ) -> Result<Reservation<S>, Error> {
        let lease = crate::permit::new_lease_id();
        let (decision, now, route) = self.decide(&plan, Mode::Spend, lease, None).await?;
        if !decision.is_allowed() {
            return Ok(Reservation::Denied(decision));
        }
        Ok(Reservation::Granted(Permit::new(
            self.clone(),
            decision,
            plan,
            lease,
            now,
            route,
        )))
    }

    pub(crate) async fn decide(
        &self,
        plan: &Plan<S::Key>,
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> Result<(Decision, tollgate_core::Timestamp, Route), Error> {
        if let Some(r) = self.decide_now(plan, mode, lease, request_id) {
            return r;
        }
        Box::pin(self.decide_awaited(plan, mode, lease, request_id)).await
    }

    /// The decision for `plan` if the store can make it without waiting.
    fn decide_now(
        &self,
        plan: &Plan<S::Key>,
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> Option<Result<(Decision, tollgate_core::Timestamp, Route), Error>> {
        let mut decision = Decision::unlimited();
        match self.decide_now_into(
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

    /// [`decide_now`](Self::decide_now) into `answer`, which starts as its `unlimited` answer
    /// (a [`Decision`] or an [`Admission`]). A single operation goes to the store's
    /// one-operation path first ([`Store::decide_one_sync`]).
    #[inline(always)]
    pub(crate) fn decide_now_into(
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
                let one = self.decide_one_now_into(
                    &op.key, &op.limit, op.cost, m, mode, lease, sample, answer,
                );
                if let Some(decided) = one {
                    return Some(Ok(decided));
                }
            }
            let plan = PlanOps { ops, meta };
            if let Some(decided) = self.decide_ops_now_into(&plan, mode, lease, sample, answer) {
                return Some(Ok(decided));
            }
        }
        self.decide_now_general(ops, meta, mode, lease, request_id, sample, answer)
    }

    /// A decision of `ops` with no request id, written into `answer` (a fresh `unlimited`
    /// answer) and counted, if the store answers it at once through
    /// [`Store::decide_ops_sync`], reading the operations where they are and writing its
    /// verdicts into this decision's scratch space; `None` (nothing written, nothing counted)
    /// if it does not. The same decision as [`decide_now_general`](Self::decide_now_general)
    /// without building operations or the store's vector of verdicts. `sample` is the count
    /// begun before it.
    #[inline(always)]
    pub(crate) fn decide_ops_now_into<R: Reported<S::Key> + ?Sized, A: Answer>(
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
            let denied_by = settle(ops, &tally, applied.store_full, applied.spent, answer);
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

    /// [`decide_now_into`](Self::decide_now_into) through the store's
    /// [`decide_sync`](Store::decide_sync), for operations (at least one) that the
    /// one-operation path did not take; `sample` is the count begun before it.
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

    /// A decision of one operation (bucket `key` under `limit`) spending `cost`, with no
    /// request id, written into `answer` (a fresh [`Decision::unlimited`] or
    /// [`Admission::unlimited`]) and counted, if the store answers it at once through
    /// [`Store::decide_one_sync`]; `None` (nothing written, nothing counted) if it does not.
    /// The same decision as [`decide_now_into`](Self::decide_now_into) without the store's
    /// vectors of verdicts. `sample` is the count begun before it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn decide_one_now_into<A: Answer>(
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
    fn finish<R: Reported<S::Key> + ?Sized>(
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
    fn conclude<R: Reported<S::Key> + ?Sized>(
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
    fn count<R: Reported<S::Key> + ?Sized>(
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

    /// For every applicable limit: used, capacity, available and time to reset. Spends
    /// nothing.
    ///
    /// # Errors
    /// Only if the store fails.
    pub async fn usage(&self, subject: &Subject<'_>) -> Result<Vec<LimitUsage>, Error> {
        let plan = self.plan(subject, &Cost::requests(0), false);
        let (_, usage) = self.inner.store.usage(&plan.ops).await?;
        Ok(plan
            .iter()
            .zip(usage)
            .map(|((op, m), u)| LimitUsage {
                rule: m.rule,
                label: m.label,
                kind: m.kind,
                amount: op.limit.amount(),
                window: op.limit.window(),
                used: u.used,
                capacity: u.capacity,
                available: u.available,
                reset_after: Duration::from_micros(u.reset_after_us),
            })
            .collect())
    }

    /// Forgets the buckets of every limit that applies to `subject`: they are full again.
    /// Returns how many buckets that is (one per limit of every rule that applies, whether it
    /// had been spent from or not): 0 when no rule applies to `subject`, so nothing was reset.
    ///
    /// # Errors
    /// Only if the store fails.
    pub async fn reset(&self, subject: &Subject<'_>) -> Result<u64, Error> {
        let keys: Vec<S::Key> = self
            .plan(subject, &Cost::requests(0), false)
            .ops
            .into_iter()
            .map(|op| op.key)
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner.store.reset(&keys).await?;
        self.inner.released.notify_waiters();
        Ok(u64::try_from(keys.len()).unwrap_or(u64::MAX))
    }

    /// Forgets the buckets of the rule called `rule` for `subject`'s partition only (other
    /// rules, and other partitions of this rule, keep their state). Returns how many buckets
    /// that is: 0 when the rule does not apply to `subject`.
    ///
    /// # Errors
    /// [`Error::UnknownRule`] if the policy has no such rule; or a store failure.
    pub async fn reset_in(&self, rule: &str, subject: &Subject<'_>) -> Result<u64, Error> {
        if self.inner.policy.with(|p| p.rule(rule).is_none()) {
            return Err(Error::UnknownRule(rule.to_owned()));
        }
        let plan = self.plan(subject, &Cost::requests(0), false);
        let keys: Vec<S::Key> = plan
            .iter()
            .filter(|(_, m)| m.rule == rule)
            .map(|(op, _)| op.key.clone())
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner.store.reset(&keys).await?;
        self.inner.released.notify_waiters();
        Ok(u64::try_from(keys.len()).unwrap_or(u64::MAX))
    }

    /// Forgets every bucket of the rule called `rule`, for every partition. Returns how many
    /// buckets were forgotten, where the store can tell.
    ///
    /// # Errors
    /// [`Error::UnknownRule`] if the policy has no such rule; or a store failure.
    pub async fn reset_rule(&self, rule: &str) -> Result<u64, Error> {
        let (name, id) = self
            .inner
            .policy
            .with(|p| p.rule(rule).map(|r| (r.name, r.id)))
            .ok_or_else(|| Error::UnknownRule(rule.to_owned()))?;
        let n = self.inner.store.reset_rule(name, id).await?;
        self.inner.released.notify_waiters();
        Ok(n)
    }

    /// Counts of decisions so far and, where the store can tell, active buckets per rule.
    /// Needs no metrics exporter.
    pub fn stats(&self) -> StatsSnapshot {
        let policy = self.inner.policy.load_full();
        let buckets = self.inner.store.active_buckets().map(|counts| {
            counts
                .into_iter()
                .map(|(id, n)| {
                    let name = policy
                        .rules()
                        .iter()
                        .find(|r| r.id == id)
                        .map_or("(removed rule)", |r| r.name);
                    (name, n)
                })
                .collect()
        });
        self.inner.stats.snapshot(buckets)
    }

    /// Applies settlements and wakes waiters that may now fit.
    pub(crate) async fn settle(
        &self,
        items: &[Settlement<S::Key>],
        route: Route,
    ) -> Result<usize, Error> {
        let n = self.inner.store.settle(items, route).await?;
        self.inner.released.notify_waiters();
        Ok(n)
    }

    /// Applies settlements without an async context (from `Drop`).
    pub(crate) fn settle_detached(&self, items: Vec<Settlement<S::Key>>, route: Route) {
        if let Some(r) = self.inner.store.settle_now(&items, route) {
            if r.is_err() {
                metrics::counter!("tollgate_store_errors_total").increment(1);
            }
            self.inner.released.notify_waiters();
            return;
        }
        let limiter = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    if limiter.settle(&items, route).await.is_err() {
                        metrics::counter!("tollgate_store_errors_total").increment(1);
                    }
                });
            }
            Err(_) => {
                if futures::executor::block_on(limiter.settle(&items, route)).is_err() {
                    metrics::counter!("tollgate_store_errors_total").increment(1);
                }
            }
        }
    }
}

/// What an operation on a limit of `kind` spends for a call costing `cost`: for a concurrency
/// limit, a slot when `take_slots` (else it only checks that one is free).
#[inline]
pub(crate) fn op_cost(kind: LimitKind, cost: &Cost, take_slots: bool) -> u64 {
    match kind {
        LimitKind::Concurrency => u64::from(take_slots),
        k => cost.of(k),
    }
}

/// What a limit has left after the decision. An admitting verdict reports what is left after
/// its cost; when the decision spends nothing (another limit denied), the cost is added back,
/// which is exact for every algorithm. A concurrency check that takes no slot (`cost` 0) is
/// evaluated as taking one, so its slot is added back too.
#[inline(always)]
fn remaining(cost: u64, kind: LimitKind, v: &Verdict, spends: bool) -> u64 {
    if !v.admitted {
        return v.remaining;
    }
    let back = match kind {
        LimitKind::Concurrency if cost == 0 || !spends => 1,
        LimitKind::Concurrency => 0,
        _ if spends => 0,
        _ => cost,
    };
    v.remaining.saturating_add(back).min(v.capacity)
}

/// What the decision reports about a limit whose operation spent `cost` and got `v`;
/// `spends` tells whether the decision spent.
#[inline(always)]
pub(crate) fn status_of(
    limit: &Limit,
    cost: u64,
    m: &Meta,
    v: &Verdict,
    spends: bool,
) -> LimitStatus {
    LimitStatus {
        rule: m.rule,
        label: m.label,
        kind: m.kind,
        amount: limit.amount(),
        capacity: v.capacity,
        window: limit.window(),
        quota: limit.is_quota(),
        admitted: v.admitted,
        remaining: remaining(cost, m.kind, v, spends),
        reset_after: Duration::from_micros(v.reset_after_us),
        retry_after: Duration::from_micros(v.retry_after_us),
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
    settle(ops, &tally, store_full, spent, d)
}

/// Writes the outcome that `tally` (of every verdict) makes into `d`; returns the index of the
/// denying limit, if one denied.
#[inline(always)]
fn settle<K, R: Reported<K> + ?Sized>(
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
