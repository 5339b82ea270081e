//! Stores keep buckets and apply one decision's operations atomically.
//!
//! The limiter resolves the policy into operations; a store evaluates them all at one instant
//! of its own clock and spends from all of them or from none.

pub mod fallback;
pub mod health;
pub(crate) mod idempotency;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;

use smallvec::SmallVec;
use tollgate_core::{LeaseId, Limit, Timestamp, Usage, Verdict};

use crate::error::StoreError;
use crate::key::BucketName;

/// One limit to evaluate for one bucket.
#[derive(Clone, Debug)]
pub struct Op<K> {
    /// The bucket.
    pub key: K,
    /// Its limit.
    pub limit: Limit,
    /// What to spend. For a concurrency limit: 1 takes a slot, 0 only checks one is free.
    pub cost: u64,
    /// What the rule wants when the store behind a fallback is failing.
    pub failure: FailureMode,
}

/// The operations of one decision as a store reads them, by index: a slice of [`Op`]s, or a
/// prepared subject's buckets with the limits it shares with every other subject, so that a
/// decision copies no [`Limit`] (a 96-byte copy per limit, measured as about a seventh of a
/// three-limit decision in memory).
pub trait Ops<K> {
    /// How many operations.
    fn len(&self) -> usize;
    /// Whether there is none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bucket of operation `i` (`i < len()`).
    fn key(&self, i: usize) -> &K;
    /// The limit of operation `i`.
    fn limit(&self, i: usize) -> &Limit;
    /// What operation `i` spends (for a concurrency limit: 1 takes a slot, 0 only checks that
    /// one is free).
    fn cost(&self, i: usize) -> u64;
}

/// Where a store puts the verdicts of a decision read through [`Ops`]
/// ([`Store::decide_ops_sync`]): a slice with one verdict per operation (a full decision), or
/// a [`Tally`] of what an admission reads.
pub trait VerdictSink {
    /// Whether only `admitted`, `never_fits`, `capacity` and `retry_after_us` of each verdict
    /// are read: a store may then leave `remaining` and `reset_after_us` 0. The decision is
    /// the same either way.
    const BRIEF: bool;
    /// Takes verdict `i` of the decision.
    fn put(&mut self, i: usize, v: &Verdict);
}

impl VerdictSink for [Verdict] {
    const BRIEF: bool = false;

    /// Writes verdict `i` into `self[i]`, field by field (a slice shorter than the operations
    /// keeps the first verdicts). A whole-struct copy also copies the padding after the two
    /// flags, which the compiler assembles on the stack from narrower stores; reading that
    /// back whole cannot be forwarded from those stores and stalls, once per limit.
    #[inline(always)]
    fn put(&mut self, i: usize, v: &Verdict) {
        if let Some(slot) = self.get_mut(i) {
            slot.admitted = v.admitted;
            slot.never_fits = v.never_fits;
            slot.capacity = v.capacity;
            slot.remaining = v.remaining;
            slot.reset_after_us = v.reset_after_us;
            slot.retry_after_us = v.retry_after_us;
        }
    }
}

/// What a decision's verdicts make of it, folded one verdict at a time: whether all admit, the
/// first that can never fit, and the denial that frees up last (each limit frees up
/// monotonically, so the call fits once the slowest one does). An admission reads only this,
/// so a store answering one folds its verdicts here instead of writing them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    /// Whether every verdict so far admits.
    pub admitted: bool,
    /// The first operation whose cost can never fit.
    pub too_large: Option<usize>,
    /// The denying operation with the longest retry-after (the first of equals).
    pub denier: Option<usize>,
    /// That retry-after, in microseconds.
    pub retry_after_us: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            admitted: true,
            too_large: None,
            denier: None,
            retry_after_us: 0,
        }
    }
}

impl VerdictSink for Tally {
    const BRIEF: bool = true;

    #[inline(always)]
    fn put(&mut self, i: usize, v: &Verdict) {
        if v.admitted {
            return;
        }
        self.admitted = false;
        if v.never_fits && self.too_large.is_none() {
            self.too_large = Some(i);
        }
        if self.denier.is_none() || v.retry_after_us > self.retry_after_us {
            self.denier = Some(i);
            self.retry_after_us = v.retry_after_us;
        }
    }
}

impl<K> Ops<K> for [Op<K>] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[Op<K>]>::len(self)
    }
    #[inline(always)]
    fn key(&self, i: usize) -> &K {
        &self[i].key
    }
    #[inline(always)]
    fn limit(&self, i: usize) -> &Limit {
        &self[i].limit
    }
    #[inline(always)]
    fn cost(&self, i: usize) -> u64 {
        self[i].cost
    }
}

/// What a rule's limits do while the shared store is failing (see
/// [`FallbackStore`](fallback::FallbackStore)).
///
/// The default is `Local`: a limit stays a limit while Redis is down (each instance enforces
/// its share), so an outage neither lets a tenant run up a provider bill (`Open`) nor turns
/// into an outage of everything behind the limiter (`Closed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FailureMode {
    /// Admit, and count the decision as degraded (fail open).
    Open,
    /// Deny with [`Outcome::Unavailable`](crate::Outcome::Unavailable), which is not a
    /// rate-limit denial (fail closed).
    Closed,
    /// Enforce a local, in-memory share of the limit: the limit divided by the expected number
    /// of instances (the default).
    #[default]
    Local,
}

impl FailureMode {
    /// The name used in configuration: `open`, `closed` or `local`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
            FailureMode::Local => "local",
        }
    }
}

impl std::str::FromStr for FailureMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(FailureMode::Open),
            "closed" => Ok(FailureMode::Closed),
            "local" => Ok(FailureMode::Local),
            other => Err(format!(
                "{other:?} is not a failure mode (open, closed, local)"
            )),
        }
    }
}

/// Where a decision was applied, handed back with its settlements so that they reach the same
/// place (a fallback store settles locally what it spent locally). Stores without a fallback
/// use [`Route::PRIMARY`] only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Route(pub u8);

impl Route {
    /// The store itself.
    pub const PRIMARY: Route = Route(0);
}

/// Whether a decision spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Spend from every bucket if all admit.
    Spend,
    /// Only evaluate.
    Peek,
}

/// What a store answers for one decision.
#[derive(Clone, Debug)]
pub struct StoreOutcome {
    /// The store's time at the decision.
    pub now: Timestamp,
    /// One verdict per operation, in order.
    pub verdicts: SmallVec<[Verdict; 3]>,
    /// Whether the cost was spent.
    pub spent: bool,
    /// The store could not track a new bucket because it is at its cap.
    pub store_full: bool,
    /// Where the decision was applied.
    pub route: Route,
    /// Set when the decision was made without the shared store, and how.
    pub degraded: Option<Degraded>,
}

/// A store's answer to a decision of one operation ([`Store::decide_one_sync`]): a
/// [`StoreOutcome`] with one verdict, applied at the primary store, not degraded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OneOutcome {
    /// The store's time at the decision.
    pub now: Timestamp,
    /// The operation's verdict.
    pub verdict: Verdict,
    /// Whether the cost was spent.
    pub spent: bool,
    /// The store could not track a new bucket because it is at its cap.
    pub store_full: bool,
}

/// A store's answer to a decision whose verdicts it put into the caller's [`VerdictSink`]
/// ([`Store::decide_ops_sync`]): applied at the primary store, not degraded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The store's time at the decision.
    pub now: Timestamp,
    /// Whether the cost was spent.
    pub spent: bool,
    /// The store could not track a new bucket because it is at its cap.
    pub store_full: bool,
}

/// How a degraded decision was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Degraded {
    /// The shared store failed or its breaker is open; the rules' failure modes decided.
    /// `unavailable` is set when a `closed` rule denied for that reason.
    FailureModes {
        /// A `closed` rule applied: the call is denied as unavailable.
        unavailable: bool,
    },
    /// A denial remembered from the shared store answered without asking it again.
    CachedDenial,
}

/// An adjustment to an earlier decision.
#[derive(Clone, Debug)]
pub enum Settlement<K> {
    /// Give back `cost` of a spend made at `spent_at`.
    Refund {
        /// The bucket.
        key: K,
        /// Its limit.
        limit: Limit,
        /// When the spend was made.
        spent_at: Timestamp,
        /// How much to give back.
        cost: u64,
    },
    /// Charge `cost` more for a spend made at `spent_at` (never refused; may cause debt).
    Charge {
        /// The bucket.
        key: K,
        /// Its limit.
        limit: Limit,
        /// When the spend was made.
        spent_at: Timestamp,
        /// How much more.
        cost: u64,
    },
    /// Free a concurrency slot.
    Release {
        /// The bucket.
        key: K,
        /// Its limit.
        limit: Limit,
        /// The lease.
        lease: LeaseId,
    },
    /// Extend a concurrency lease to a full lease from now.
    Renew {
        /// The bucket.
        key: K,
        /// Its limit.
        limit: Limit,
        /// The lease.
        lease: LeaseId,
    },
}

impl<K> Settlement<K> {
    /// The bucket the settlement concerns.
    pub fn key(&self) -> &K {
        match self {
            Settlement::Refund { key, .. }
            | Settlement::Charge { key, .. }
            | Settlement::Release { key, .. }
            | Settlement::Renew { key, .. } => key,
        }
    }

    /// The same settlement for another store's key and, if it differs there, limit.
    pub fn map<K2>(
        &self,
        key: impl FnOnce(&K) -> K2,
        limit: impl FnOnce(&Limit) -> Limit,
    ) -> Settlement<K2> {
        match self {
            Settlement::Refund {
                key: k,
                limit: l,
                spent_at,
                cost,
            } => Settlement::Refund {
                key: key(k),
                limit: limit(l),
                spent_at: *spent_at,
                cost: *cost,
            },
            Settlement::Charge {
                key: k,
                limit: l,
                spent_at,
                cost,
            } => Settlement::Charge {
                key: key(k),
                limit: limit(l),
                spent_at: *spent_at,
                cost: *cost,
            },
            Settlement::Release {
                key: k,
                limit: l,
                lease,
            } => Settlement::Release {
                key: key(k),
                limit: limit(l),
                lease: *lease,
            },
            Settlement::Renew {
                key: k,
                limit: l,
                lease,
            } => Settlement::Renew {
                key: key(k),
                limit: limit(l),
                lease: *lease,
            },
        }
    }
}

/// A place that keeps buckets.
pub trait Store: Send + Sync + 'static {
    /// How this store names a bucket.
    type Key: Clone + Eq + Hash + Send + Sync + Debug + 'static;

    /// The key of a bucket.
    fn bucket_key(&self, name: &BucketName<'_>) -> Self::Key;

    /// Evaluates every operation at one instant and, in [`Mode::Spend`], spends from all of
    /// them if all admit (a concurrency operation with cost 1 takes a slot for `lease`).
    ///
    /// With a `request_id` seen within the store's idempotency window, answers the first
    /// decision again and spends nothing.
    fn decide(
        &self,
        ops: &[Op<Self::Key>],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> impl Future<Output = Result<StoreOutcome, StoreError>> + Send;

    /// [`decide_sync`](Self::decide_sync) for a decision of one operation (bucket `key` under
    /// `limit`, spending `cost`) with no request id, for a store that answers it without
    /// building a [`StoreOutcome`]: the memory store's GCRA buckets, the commonest decision.
    /// An answer must be exactly what `decide_sync` of that one operation, with no request id,
    /// would answer (a concurrency slot taken under `lease`, for instance). `None` means this
    /// store does not answer this operation so: the limiter then uses `decide_sync` or
    /// `decide`. The key and the limit come apart (not as an [`Op`]) so that a prepared
    /// subject passes the limit it shares with others rather than a copy of it.
    ///
    /// With `brief`, the caller reads only whether the verdict admits, whether the cost never
    /// fits, and the retry-after: a store may leave the verdict's `remaining` and
    /// `reset_after_us` at zero (an [`Admission`](crate::Admission) reports neither, and
    /// working them out takes a division each).
    fn decide_one_sync(
        &self,
        key: &Self::Key,
        limit: &Limit,
        cost: u64,
        mode: Mode,
        lease: LeaseId,
        brief: bool,
    ) -> Option<OneOutcome> {
        let _ = (key, limit, cost, mode, lease, brief);
        None
    }

    /// [`decide_sync`](Self::decide_sync) with no request id for operations read through
    /// [`Ops`] (borrowed, not copied), with verdict `i` put into `verdicts` (a slice as long
    /// as `ops`, or a [`Tally`]; see [`VerdictSink`]) instead of a [`StoreOutcome`]'s vector,
    /// each once, in the operations' order (a [`Tally`] names the first of equal denials). An
    /// answer must be exactly what `decide_sync` of the same operations would answer. `None`
    /// means this store does not answer so (nothing was written): the limiter then builds
    /// [`Op`]s for `decide_sync` or `decide`.
    fn decide_ops_sync<O: Ops<Self::Key> + ?Sized, V: VerdictSink + ?Sized>(
        &self,
        ops: &O,
        mode: Mode,
        lease: LeaseId,
        verdicts: &mut V,
    ) -> Option<Applied> {
        let _ = (ops, mode, lease, verdicts);
        None
    }

    /// [`decide`](Self::decide) without waiting, if this store can (the memory store always
    /// can). `None` means the decision must be awaited through `decide`.
    fn decide_sync(
        &self,
        ops: &[Op<Self::Key>],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> Option<Result<StoreOutcome, StoreError>> {
        let _ = (ops, mode, lease, request_id);
        None
    }

    /// Applies settlements of decisions applied at `route`. Returns how many releases and
    /// renewals found their lease.
    fn settle(
        &self,
        items: &[Settlement<Self::Key>],
        route: Route,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Applies settlements without waiting, if this store can (used when a permit is dropped
    /// outside an async context). `None` means the store cannot.
    fn settle_now(
        &self,
        items: &[Settlement<Self::Key>],
        route: Route,
    ) -> Option<Result<usize, StoreError>> {
        let _ = (items, route);
        None
    }

    /// The usage of each bucket, spending nothing.
    fn usage(
        &self,
        ops: &[Op<Self::Key>],
    ) -> impl Future<Output = Result<(Timestamp, Vec<Usage>), StoreError>> + Send;

    /// Forgets buckets: they are full again.
    fn reset(&self, keys: &[Self::Key]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets every bucket of a rule. Returns how many were forgotten, if known.
    fn reset_rule(
        &self,
        rule: &'static str,
        rule_id: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many buckets each rule (by id) holds, if the store can tell cheaply enough for a
    /// stats snapshot.
    fn active_buckets(&self) -> Option<Vec<(u32, u64)>> {
        None
    }

    /// What this store sees on its connections to a shared server (requests unanswered,
    /// usual latency, connection errors, local backlog), so that a
    /// [`FallbackStore`](fallback::FallbackStore) blames a slow call on the server only when
    /// the server is at fault. `None` for a store that cannot tell (the fallback then counts
    /// every call that misses its deadline as a failure).
    fn wire_health(&self) -> Option<health::WireHealth> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(admitted: bool, never_fits: bool, retry_after_us: u64) -> Verdict {
        Verdict {
            admitted,
            never_fits,
            capacity: 10,
            remaining: 3,
            reset_after_us: 7,
            retry_after_us,
        }
    }

    fn tally(vs: &[Verdict]) -> Tally {
        let mut t = Tally::default();
        for (i, v) in vs.iter().enumerate() {
            t.put(i, v);
        }
        t
    }

    /// What a decision's verdicts make of it: all admit; the denial that frees up last (the
    /// first of equals) names the retry-after; a cost that never fits is named first.
    #[test]
    fn a_tally_names_the_slowest_denial_and_the_first_cost_that_never_fits() {
        let ok = verdict(true, false, 0);
        assert_eq!(tally(&[ok, ok]), Tally::default());
        let t = tally(&[ok, verdict(false, false, 5), verdict(false, false, 9), ok]);
        assert!(!t.admitted);
        assert_eq!(
            (t.too_large, t.denier, t.retry_after_us),
            (None, Some(2), 9)
        );
        let t = tally(&[verdict(false, false, 9), verdict(false, false, 9)]);
        assert_eq!((t.denier, t.retry_after_us), (Some(0), 9));
        let t = tally(&[
            verdict(false, false, 4),
            verdict(false, true, 0),
            verdict(false, true, 0),
        ]);
        assert_eq!(t.too_large, Some(1));
    }

    /// A slice takes each verdict at its index, and ignores those beyond its end.
    #[test]
    fn a_slice_of_verdicts_keeps_those_it_has_room_for() {
        let mut slots = [Verdict::default(); 2];
        let v = verdict(false, false, 5);
        slots[..].put(1, &v);
        slots[..].put(2, &v);
        assert_eq!(slots, [Verdict::default(), v]);
    }
}
