//! Decisions: the answer to one call, with the status of every limit that applied.

use std::fmt;
use std::time::Duration;

use smallvec::SmallVec;
use tollgate_core::{LimitKind, Window};

/// The status of one limit in a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitStatus {
    /// The rule the limit belongs to.
    pub rule: &'static str,
    /// The limit's stable label within the rule.
    pub label: &'static str,
    /// What the limit counts.
    pub kind: LimitKind,
    /// The amount per window (for concurrency, the slots).
    pub amount: u64,
    /// The most that can be spent at once (the burst for GCRA).
    pub capacity: u64,
    /// The window.
    pub window: Window,
    /// Whether the limit is a budget of a day or more.
    pub quota: bool,
    /// Whether this limit admitted the call.
    pub admitted: bool,
    /// Units left after this decision.
    pub remaining: u64,
    /// Time until the limit is fully available again.
    pub reset_after: Duration,
    /// Time until this limit would admit the same call (zero if it admits it now).
    pub retry_after: Duration,
}

/// How a decision came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Every applicable limit admitted the call; it has been spent from all of them.
    Allowed,
    /// At least one limit denied the call; nothing was spent. Retry after `retry_after`.
    Denied,
    /// The cost exceeds what a limit can ever hold: waiting will never help.
    TooLarge,
    /// The in-memory store is at its bucket cap and cannot track a new bucket.
    StoreFull,
    /// The shared store is failing and a rule in `closed` failure mode applies: the call is
    /// refused as unavailable, which is not a rate-limit denial.
    Unavailable,
    /// No rule's limits apply to the call and the policy says `unmatched = "deny"`: the call
    /// is refused as not covered, which waiting will not change.
    Unmatched,
}

impl Outcome {
    /// A stable name: `allowed`, `denied`, `too_large`, `store_full`, `unavailable` or
    /// `unmatched`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::TooLarge => "too_large",
            Outcome::StoreFull => "store_full",
            Outcome::Unavailable => "unavailable",
            Outcome::Unmatched => "unmatched",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call was denied. Each reason has a stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// A requests limit (per second, minute or hour).
    Requests,
    /// A tokens limit (total, input or output).
    Tokens,
    /// No concurrency slot is free.
    Concurrency,
    /// A budget of a day or more is spent.
    Quota,
    /// The cost can never fit.
    TooLarge,
    /// The store cannot track more buckets.
    StoreFull,
    /// The shared store is failing and the rule fails closed.
    Unavailable,
    /// No rule applies to the call and the policy denies such calls.
    Unmatched,
}

impl DenyReason {
    /// The stable machine-readable code: `requests`, `tokens`, `concurrency`, `quota`,
    /// `too_large`, `store_full`, `unavailable` or `unmatched`.
    pub const fn code(self) -> &'static str {
        match self {
            DenyReason::Requests => "requests",
            DenyReason::Tokens => "tokens",
            DenyReason::Concurrency => "concurrency",
            DenyReason::Quota => "quota",
            DenyReason::TooLarge => "too_large",
            DenyReason::StoreFull => "store_full",
            DenyReason::Unavailable => "unavailable",
            DenyReason::Unmatched => "unmatched",
        }
    }

    /// The numeric error code in the `E44xx` family gateways already use: `E4404` requests
    /// per window, `E4405` tokens per window, `E4406` concurrency, `E4407` quota, `E4413` too
    /// large, `E4503` unavailable, `E4403` unmatched, `E4400` anything else.
    pub const fn error_code(self) -> &'static str {
        match self {
            DenyReason::Requests => "E4404",
            DenyReason::Tokens => "E4405",
            DenyReason::Concurrency => "E4406",
            DenyReason::Quota => "E4407",
            DenyReason::TooLarge => "E4413",
            DenyReason::StoreFull => "E4400",
            DenyReason::Unavailable => "E4503",
            DenyReason::Unmatched => "E4403",
        }
    }

    /// The reason a denial by `status` has.
    pub fn of(status: &LimitStatus) -> DenyReason {
        DenyReason::of_limit(status.kind, status.quota)
    }

    /// The reason of a decision that came out as `outcome`; `by_limit` names the reason of
    /// a denial by a limit (`None` if no limit is named).
    pub(crate) fn of_outcome(
        outcome: Outcome,
        by_limit: impl FnOnce() -> Option<DenyReason>,
    ) -> Option<DenyReason> {
        match outcome {
            Outcome::Allowed => None,
            Outcome::TooLarge => Some(DenyReason::TooLarge),
            Outcome::StoreFull => Some(DenyReason::StoreFull),
            Outcome::Unavailable => Some(DenyReason::Unavailable),
            Outcome::Unmatched => Some(DenyReason::Unmatched),
            Outcome::Denied => by_limit(),
        }
    }

    /// The reason a denial by a limit of `kind` has (`quota`: a budget of a day or more).
    pub(crate) const fn of_limit(kind: LimitKind, quota: bool) -> DenyReason {
        match kind {
            LimitKind::Concurrency => DenyReason::Concurrency,
            _ if quota => DenyReason::Quota,
            LimitKind::Requests => DenyReason::Requests,
            LimitKind::Tokens | LimitKind::InputTokens | LimitKind::OutputTokens => {
                DenyReason::Tokens
            }
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The answer to one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub(crate) outcome: Outcome,
    pub(crate) statuses: SmallVec<[LimitStatus; 3]>,
    pub(crate) denied_by: Option<usize>,
    pub(crate) retry_after: Duration,
    pub(crate) degraded: bool,
}

impl Decision {
    /// A decision with no applicable limit: allowed.
    pub(crate) fn unlimited() -> Self {
        Decision {
            outcome: Outcome::Allowed,
            statuses: SmallVec::new(),
            denied_by: None,
            retry_after: Duration::ZERO,
            degraded: false,
        }
    }

    /// Whether the decision was made without the shared store, by the rules' failure modes
    /// while it failed. (A denial remembered from the shared store is exact and answers as
    /// the store would: it is not degraded.)
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// Whether the call may go ahead.
    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }

    /// How the decision came out.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The status of every limit that applied, in policy order.
    pub fn statuses(&self) -> &[LimitStatus] {
        &self.statuses
    }

    /// The limit that denied the call: for a denial, the one that frees up last.
    pub fn denied_by(&self) -> Option<&LimitStatus> {
        self.denied_by.and_then(|i| self.statuses.get(i))
    }

    /// For a denial by a limit ([`Outcome::Denied`]): the earliest time after which the same
    /// call would be admitted if nothing else happened. For a denial by a concurrency limit,
    /// that is when the soonest lease expires: a slot frees earlier when a call ends, which
    /// [`Limiter::acquire`](crate::Limiter::acquire) waits for. `None` for every other outcome:
    /// allowed, a cost that can never be admitted, the store at its cap, the store
    /// unavailable.
    pub fn retry_after(&self) -> Option<Duration> {
        (self.outcome == Outcome::Denied).then_some(self.retry_after)
    }

    /// Why the call was denied.
    pub fn reason(&self) -> Option<DenyReason> {
        DenyReason::of_outcome(self.outcome, || self.denied_by().map(DenyReason::of))
    }

    /// The most constrained status of `kind`: the one with the least remaining.
    pub fn tightest(&self, kind: LimitKind) -> Option<&LimitStatus> {
        self.statuses
            .iter()
            .filter(|s| s.kind == kind)
            .min_by_key(|s| (s.remaining, std::cmp::Reverse(s.reset_after)))
    }
}

/// A denial can travel as an error (`reservation.into_result()?`).
impl std::error::Error for Decision {}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.outcome, self.denied_by()) {
            (Outcome::Allowed, _) => f.write_str("allowed"),
            // A slot frees when a call in flight ends, which nobody can foresee: what is
            // known is when the soonest lease expires, at the latest.
            (Outcome::Denied, Some(s)) if s.kind == LimitKind::Concurrency => write!(
                f,
                "denied by rule {:?} (at most {} in flight): no slot is free; one frees \
                 when a call ends, and at the latest when the soonest lease expires, in {:?} \
                 (acquire waits for it)",
                s.rule, s.amount, self.retry_after
            ),
            (Outcome::Denied, Some(s)) => write!(
                f,
                "denied by rule {:?} ({} {} per {}): retry after {:?}",
                s.rule, s.amount, s.kind, s.window, self.retry_after
            ),
            (Outcome::TooLarge, Some(s)) => write!(
                f,
                "cost exceeds what rule {:?} ({} {}) can ever admit",
                s.rule, s.capacity, s.kind
            ),
            (Outcome::StoreFull, _) => f.write_str("denied: the store is at its bucket cap"),
            (Outcome::Unavailable, _) => f.write_str("denied: the rate limit store is unavailable"),
            (Outcome::Unmatched, _) => f.write_str(
                "denied: no rule applies to this call, and the policy denies unmatched calls",
            ),
            (_, None) => f.write_str("denied"),
        }
    }
}
