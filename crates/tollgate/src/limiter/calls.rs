//! The public decisions by subject: `check`, `admit`, `peek` (each also `_now`, for a store
//! that decides at once), `check_idempotent` and `reserve`. Each resolves the subject
//! (`resolve.rs`) and hands the plan to the one decision path (`decide.rs`).

use super::handle::Limiter;
use crate::admission::Admission;
use crate::cost::Cost;
use crate::decision::Decision;
use crate::error::Error;
use crate::permit::{Permit, Reservation};
use crate::plan::{new_lease_id, Meta, Plan};
use crate::store::{Mode, Op, Store};
use crate::subject::Subject;

impl<S: Store> Limiter<S> {
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
    /// decision of [`decide_now`](Self::decide_now), written into an [`Admission`].
    #[inline(always)]
    pub(crate) fn admit_ops_now(
        &self,
        ops: &[Op<S::Key>],
        meta: &[Meta],
    ) -> Option<Result<Admission, Error>> {
        let mut admission = Admission::unlimited();
        match self.decide_now(ops, meta, Mode::Spend, 0, None, &mut admission)? {
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
        match self.decide_now(&plan.ops, &plan.meta, mode, 0, None, &mut decision)? {
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
        match self.decide_now(&plan.ops, &plan.meta, mode, 0, request_id, &mut decision) {
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
        let lease = new_lease_id();
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
}
