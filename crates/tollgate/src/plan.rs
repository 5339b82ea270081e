//! A subject resolved against the policy, as a decision uses it: the store's operations and,
//! beside them, what the decision reports about each. The policy builds these parts once per
//! rule ([`Planned`]); the limiter, prepared subjects and call limits put them together per
//! call ([`Plan`]). Below both the policy and the limiter, so that neither depends on the
//! other for them.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use smallvec::SmallVec;
use tollgate_core::{LeaseId, Limit, LimitKind};

use crate::cost::Cost;
use crate::stats::DenialLabels;
use crate::store::{FailureMode, Op, Ops};

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
    pub(crate) failure: FailureMode,
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

/// What an operation on a limit of `kind` spends for a call costing `cost`: for a concurrency
/// limit, a slot when `take_slots` (else it only checks that one is free).
#[inline]
pub(crate) fn op_cost(kind: LimitKind, cost: &Cost, take_slots: bool) -> u64 {
    match kind {
        LimitKind::Concurrency => u64::from(take_slots),
        k => cost.of(k),
    }
}

/// A random lease id from a per-thread generator (unique across processes with
/// overwhelming probability, without a shared counter).
pub(crate) fn new_lease_id() -> LeaseId {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}
