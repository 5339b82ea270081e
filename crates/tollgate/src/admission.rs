//! The lean answer of a decision: see [`Admission`].

use std::time::Duration;

use tollgate_core::{Limit, LimitKind, Verdict};

use crate::decision::{Decision, DenyReason, LimitStatus, Outcome};
use crate::plan::Meta;

/// A decision without the status of every limit: whether the call may go ahead and, if not,
/// why, when to retry, and which limit denied it.
///
/// It is what [`Limiter::admit_now`](crate::Limiter::admit_now) and
/// [`Limiter::admit_prepared_now`](crate::Limiter::admit_prepared_now) answer, for the hot path
/// of a gateway that only needs to pass or refuse a call (a 429 with `Retry-After`): the same
/// decision as [`Limiter::check_now`](crate::Limiter::check_now), spending and counting the
/// same, without building a [`LimitStatus`] per limit (about a fifth of a memory-store decision,
/// measured with callgrind). Use [`Decision`] where the remaining capacity is reported (the
/// `x-ratelimit-*` and `RateLimit` headers).
///
/// ```
/// use tollgate::{Cost, Limiter, Subject};
/// let limiter = Limiter::new();
/// let who = Subject::new().tenant("acme").provider("openai");
/// let admission = limiter.admit_now(&who, Cost::ONE).expect("the memory store decides at once")?;
/// assert!(admission.is_allowed());
/// assert_eq!(admission.retry_after(), None);
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    outcome: Outcome,
    degraded: bool,
    retry_after: Duration,
    denied_by: Option<Denier>,
}

/// The limit that denied a call, as an [`Admission`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Denier {
    /// The rule the limit belongs to.
    pub rule: &'static str,
    /// The limit's stable label within the rule.
    pub label: &'static str,
    /// What the limit counts.
    pub kind: LimitKind,
    /// Whether the limit is a budget of a day or more.
    pub quota: bool,
}

impl Admission {
    /// An admission with no applicable limit: allowed.
    pub(crate) fn unlimited() -> Self {
        Admission {
            outcome: Outcome::Allowed,
            degraded: false,
            retry_after: Duration::ZERO,
            denied_by: None,
        }
    }

    /// Whether the call may go ahead.
    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }

    /// How the decision came out.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// For a denial by a limit ([`Outcome::Denied`]): the earliest time after which the same
    /// call would be admitted if nothing else happened (as [`Decision::retry_after`]). `None`
    /// for every other outcome.
    pub fn retry_after(&self) -> Option<Duration> {
        (self.outcome == Outcome::Denied).then_some(self.retry_after)
    }

    /// The limit that denied the call (as [`Decision::denied_by`]).
    pub fn denied_by(&self) -> Option<&Denier> {
        self.denied_by.as_ref()
    }

    /// Why the call was denied (as [`Decision::reason`]).
    pub fn reason(&self) -> Option<DenyReason> {
        DenyReason::of_outcome(self.outcome, || {
            self.denied_by
                .map(|d| DenyReason::of_limit(d.kind, d.quota))
        })
    }

    /// Whether the decision was made by the rules' failure modes while the shared store
    /// failed (as [`Decision::is_degraded`]).
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }
}

impl From<&Decision> for Admission {
    fn from(d: &Decision) -> Self {
        Admission {
            outcome: d.outcome(),
            degraded: d.is_degraded(),
            retry_after: d.retry_after,
            denied_by: d.denied_by().map(Denier::of),
        }
    }
}

impl From<Decision> for Admission {
    fn from(d: Decision) -> Self {
        Admission::from(&d)
    }
}

impl Denier {
    fn of(s: &LimitStatus) -> Self {
        Denier {
            rule: s.rule,
            label: s.label,
            kind: s.kind,
            quota: s.quota,
        }
    }
}

/// What a decision is written into: a [`Decision`] (with every limit's status) or an
/// [`Admission`] (without). Both start as their `unlimited` answer.
pub(crate) trait Answer {
    /// Whether this answer reads only what the verdicts make of the decision (a
    /// [`Tally`](crate::store::Tally)), not each limit's status.
    const BRIEF: bool;
    /// Records what limit `limit` (reported as `meta`) answered `v` for `cost`; `spends` tells
    /// whether the decision spent.
    fn status(&mut self, limit: &Limit, cost: u64, meta: &Meta, v: &Verdict, spends: bool);
    /// Sets how the decision came out: `denier` is the denying limit (its index in the
    /// decision's limits, the limit and its report), `retry_after` the wait of a denial.
    fn settle(
        &mut self,
        outcome: Outcome,
        denier: Option<(usize, &Limit, &Meta)>,
        retry_after: Duration,
    );
    /// Marks the decision as made by the rules' failure modes.
    fn mark_degraded(&mut self);
    /// The rules' failure modes decided while the shared store failed; `unavailable` when a
    /// `closed` rule refused the call for that.
    fn degrade(&mut self, unavailable: bool) {
        self.mark_degraded();
        if unavailable {
            self.settle(Outcome::Unavailable, None, Duration::ZERO);
        }
    }
    /// How the decision came out, for counting it.
    fn outcome(&self) -> Outcome;
}

impl Answer for Decision {
    const BRIEF: bool = false;

    #[inline(always)]
    fn status(&mut self, limit: &Limit, cost: u64, meta: &Meta, v: &Verdict, spends: bool) {
        self.statuses.push(status_of(limit, cost, meta, v, spends));
    }

    #[inline(always)]
    fn settle(
        &mut self,
        outcome: Outcome,
        denier: Option<(usize, &Limit, &Meta)>,
        retry_after: Duration,
    ) {
        self.outcome = outcome;
        self.denied_by = denier.map(|(i, _, _)| i);
        self.retry_after = retry_after;
    }

    fn mark_degraded(&mut self) {
        self.degraded = true;
    }

    #[inline(always)]
    fn outcome(&self) -> Outcome {
        self.outcome
    }
}

impl Answer for Admission {
    const BRIEF: bool = true;

    #[inline(always)]
    fn status(&mut self, _: &Limit, _: u64, _: &Meta, _: &Verdict, _: bool) {}

    #[inline(always)]
    fn settle(
        &mut self,
        outcome: Outcome,
        denier: Option<(usize, &Limit, &Meta)>,
        retry_after: Duration,
    ) {
        self.outcome = outcome;
        self.denied_by = denier.map(|(_, limit, meta)| Denier {
            rule: meta.rule,
            label: meta.label,
            kind: meta.kind,
            quota: limit.is_quota(),
        });
        self.retry_after = retry_after;
    }

    fn mark_degraded(&mut self) {
        self.degraded = true;
    }

    #[inline(always)]
    fn outcome(&self) -> Outcome {
        self.outcome
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
