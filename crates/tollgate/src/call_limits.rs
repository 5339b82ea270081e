//! Limits one call asks for itself: "this call, at most 30 requests per minute".
//!
//! A caller may tighten the limits that apply to its call (an agent that must stay well under
//! its provider's limit, a batch job that should leave room for interactive traffic). A
//! tightened limit never gives more than the policy: the call is decided against the policy's
//! bucket *and* a bucket of the tighter limit, and admitted only if both admit it. Loosening (a
//! premium agent's 200 requests per minute where the policy says 60) replaces the policy's
//! limit with the looser one, and only when the caller has been allowed to loosen
//! ([`CallLimits::allow_loosening`]; the HTTP service allows it to the admin token).
//!
//! The bucket of a changed limit belongs to the rule's partition and the amount asked: the
//! calls of one agent that all ask for 30 requests per minute share one bucket of 30 per
//! minute; calls asking for another amount have another bucket. At most
//! [`MAX_CALL_LIMIT_NAMES`] distinct (limit, amount) pairs are named per process.
//!
//! ```
//! use tollgate::{CallLimits, Cost, Limiter, Subject};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollgate::Error> {
//! let limiter = Limiter::new(); // 60 requests per minute per caller and provider
//! let who = Subject::new().agent("did:agent:batch").provider("openai");
//! let mine = CallLimits::new().requests_per_minute(2);
//! assert!(limiter.check_with(&who, Cost::ONE, &mine).await?.is_allowed());
//! assert!(limiter.check_with(&who, Cost::ONE, &mine).await?.is_allowed());
//! assert!(!limiter.check_with(&who, Cost::ONE, &mine).await?.is_allowed());
//! // Calls that ask for nothing still have the policy's 60 (58 left).
//! assert!(limiter.check(&who, Cost::ONE).await?.is_allowed());
//! # Ok(()) }
//! ```

use std::fmt;

use smallvec::SmallVec;
use tollgate_core::{Algorithm, Limit, LimitKind, LimitSpec, Window};

use crate::cost::Cost;
use crate::decision::Decision;
pub use crate::error::CallLimitsError;
use crate::error::Error;
use crate::key::{partition_hash, salt_of, BucketName};
use crate::limiter::handle::Limiter;
use crate::permit::Reservation;
use crate::plan::{op_cost, Meta, Plan};
use crate::policy::intern::intern;
use crate::store::{Mode, Op, Store};
use crate::subject::Subject;

/// One limit a call asks for: at most `amount` of `kind` per `window` (the window is
/// ignored for concurrency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimit {
    /// What it counts.
    pub kind: LimitKind,
    /// How much per window (for concurrency: calls in flight).
    pub amount: u64,
    /// The window; it must equal the window of the policy's limit it changes.
    pub window: Window,
}

/// The limits one call asks for. See the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallLimits {
    limits: SmallVec<[CallLimit; 2]>,
    loosen: bool,
}

impl CallLimit {
    fn field(&self) -> String {
        if self.kind == LimitKind::Concurrency {
            "concurrency".to_owned()
        } else {
            format!("{} per {}", self.kind, self.window)
        }
    }

    /// Whether this call limit changes `limit`.
    fn applies_to(&self, limit: &Limit) -> bool {
        limit.kind() == self.kind
            && (self.kind == LimitKind::Concurrency || limit.window() == self.window)
    }
}

impl fmt::Display for CallLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.field())
    }
}

impl CallLimits {
    /// No limits of the call's own.
    pub fn new() -> Self {
        CallLimits::default()
    }

    /// At most `amount` of `kind` per `window` for this call (replacing an earlier limit of
    /// the same kind and window).
    pub fn limit(mut self, kind: LimitKind, amount: u64, window: Window) -> Self {
        let new = CallLimit {
            kind,
            amount,
            window,
        };
        match self
            .limits
            .iter_mut()
            .find(|l| l.kind == kind && (kind == LimitKind::Concurrency || l.window == window))
        {
            Some(l) => *l = new,
            None => self.limits.push(new),
        }
        self
    }

    /// At most `n` requests per minute (an "RPM limit" for this call).
    pub fn requests_per_minute(self, n: u64) -> Self {
        self.limit(LimitKind::Requests, n, Window::MINUTE)
    }

    /// At most `n` tokens per minute (a "TPM limit" for this call).
    pub fn tokens_per_minute(self, n: u64) -> Self {
        self.limit(LimitKind::Tokens, n, Window::MINUTE)
    }

    /// Allows limits looser than the policy's (default: refused with
    /// [`CallLimitsError::Loosens`]). Give it only to trusted callers.
    pub fn allow_loosening(mut self, yes: bool) -> Self {
        self.loosen = yes;
        self
    }

    /// The limits asked for.
    pub fn limits(&self) -> &[CallLimit] {
        &self.limits
    }

    /// Whether the call asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}

/// The limit `base` changed to `amount` per the same window, with the burst scaled alike.
fn changed(base: &Limit, amount: u64, field: &str) -> Result<Limit, CallLimitsError> {
    let mut spec: LimitSpec = base.spec();
    spec.amount = amount;
    spec.burst = if base.algorithm() == Algorithm::Gcra {
        let scaled = u128::from(base.burst()) * u128::from(amount) / u128::from(base.amount());
        Some(u64::try_from(scaled).unwrap_or(u64::MAX).max(1))
    } else {
        None
    };
    spec.build().map_err(|e| CallLimitsError::Invalid {
        field: field.to_owned(),
        message: e.to_string(),
    })
}

/// The most distinct call-limit buckets (policy limit and amount) a process names: each
/// name is kept for the life of the process, so they are bounded.
pub const MAX_CALL_LIMIT_NAMES: usize = 10_000;

/// The label of the bucket of a call limit of `amount` changing the limit labelled `label`:
/// calls asking the same amount of the same limit share it.
fn call_label(label: &str, amount: u64, field: &str) -> Result<&'static str, CallLimitsError> {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let name = format!("{label}~call{amount}");
    let mut names = NAMES
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.get(name.as_str()) {
        return Ok(known);
    }
    if names.len() >= MAX_CALL_LIMIT_NAMES {
        return Err(CallLimitsError::Invalid {
            field: field.to_owned(),
            message: format!(
                "too many distinct call limits in use ({MAX_CALL_LIMIT_NAMES}); ask for fewer distinct amounts"
            ),
        });
    }
    let interned = intern(&name).0;
    names.insert(interned);
    Ok(interned)
}

impl<S: Store> Limiter<S> {
    /// The plan of `subject` with `call`'s limits applied (see the [module docs](crate::call_limits)).
    fn plan_with(
        &self,
        subject: &Subject<'_>,
        cost: &Cost,
        take_slots: bool,
        call: &CallLimits,
    ) -> Result<Plan<S::Key>, CallLimitsError> {
        let mut plan = Plan::new();
        let mut used: SmallVec<[bool; 2]> = SmallVec::from_elem(false, call.limits.len());
        self.inner.policy.with(|policy| {
            for rule in policy.rules() {
                let mut values: SmallVec<[&str; 4]> = SmallVec::new();
                if !rule.partition_of(subject, &mut values) {
                    continue;
                }
                let ph = partition_hash(rule.id, &values);
                for rl in &rule.limits_for(subject).limits {
                    let name = |label: &'static str, salt| BucketName {
                        rule: rule.name,
                        rule_id: rule.id,
                        limit: label,
                        partition: &values,
                        partition_hash: ph,
                        limit_salt: salt,
                    };
                    let meta = rl.planned.meta;
                    let mut push = |key, limit: Limit, meta: Meta| {
                        plan.ops.push(Op {
                            key,
                            limit,
                            cost: op_cost(meta.kind, cost, take_slots),
                            failure: rule.failure_mode,
                        });
                        plan.meta.push(meta);
                    };
                    let asked = call.limits.iter().position(|c| c.applies_to(&rl.limit));
                    let Some(i) = asked else {
                        push(
                            self.inner.store.bucket_key(&name(rl.label, rl.salt)),
                            rl.limit,
                            meta,
                        );
                        continue;
                    };
                    used[i] = true;
                    let c = call.limits[i];
                    let field = c.field();
                    if c.amount == 0 {
                        return Err(CallLimitsError::Invalid {
                            field,
                            message: "must be at least 1".into(),
                        });
                    }
                    if c.amount == rl.limit.amount() {
                        push(
                            self.inner.store.bucket_key(&name(rl.label, rl.salt)),
                            rl.limit,
                            meta,
                        );
                        continue;
                    }
                    if c.amount > rl.limit.amount() && !call.loosen {
                        return Err(CallLimitsError::Loosens {
                            field,
                            rule: rule.name,
                            policy: rl.limit.amount(),
                            asked: c.amount,
                        });
                    }
                    let label = call_label(rl.label, c.amount, &field)?;
                    let limit = changed(&rl.limit, c.amount, &field)?;
                    let call_meta = Meta { label, ..meta };
                    let key = self
                        .inner
                        .store
                        .bucket_key(&name(label, salt_of(rule.name, label)));
                    if c.amount < rl.limit.amount() {
                        // Tighter: the policy's bucket still applies.
                        push(
                            self.inner.store.bucket_key(&name(rl.label, rl.salt)),
                            rl.limit,
                            meta,
                        );
                    }
                    push(key, limit, call_meta);
                }
            }
            Ok(())
        })?;
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(CallLimitsError::NothingToChange {
                field: call.limits[i].field(),
            });
        }
        Ok(plan)
    }

    /// [`check`](Self::check) with the call's own limits (see [`CallLimits`]).
    ///
    /// # Errors
    /// [`Error::CallLimits`] if a limit would loosen the policy without permission, or
    /// changes no limit that applies; or a store failure.
    pub async fn check_with(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        call: &CallLimits,
    ) -> Result<Decision, Error> {
        if call.is_empty() {
            return self.check(subject, cost).await;
        }
        let plan = self.plan_with(subject, &cost, false, call)?;
        Ok(self.decide(&plan, Mode::Spend, 0, None).await?.0)
    }

    /// [`peek`](Self::peek) with the call's own limits.
    ///
    /// # Errors
    /// As [`check_with`](Self::check_with).
    pub async fn peek_with(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        call: &CallLimits,
    ) -> Result<Decision, Error> {
        if call.is_empty() {
            return self.peek(subject, cost).await;
        }
        let plan = self.plan_with(subject, &cost, false, call)?;
        Ok(self.decide(&plan, Mode::Peek, 0, None).await?.0)
    }

    /// [`reserve`](Self::reserve) with the call's own limits.
    ///
    /// # Errors
    /// As [`check_with`](Self::check_with).
    pub async fn reserve_with(
        &self,
        subject: &Subject<'_>,
        estimate: Cost,
        call: &CallLimits,
    ) -> Result<Reservation<S>, Error> {
        if call.is_empty() {
            return self.reserve(subject, estimate).await;
        }
        let plan = self.plan_with(subject, &estimate, true, call)?;
        self.reserve_planned(plan).await
    }
}
