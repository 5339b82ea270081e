//! The in-memory store: sharded, lock-light, bounded.
//!
//! Buckets live in shards, each a small hash map behind its own mutex; all limits of one rule
//! partition share a shard, so a typical decision takes one lock. A decision over several
//! shards locks them in ascending order (no deadlock) and spends from all or none.
//!
//! Memory is bounded two ways. A bucket that has fully refilled equals no bucket at all: it is
//! evicted by a sweep that runs whenever a shard has doubled since its last sweep (amortised
//! O(1) per insert). And a cap on the number of buckets: when a new bucket would exceed it,
//! the shard is swept, and if that frees nothing the decision follows [`AtCapacity`] and
//! `tollgate_memory_store_full_total` counts it.
//!
//! GCRA buckets, the common case, cost 32 bytes of map entry (a 128-bit key and the
//! theoretical arrival time split into whole microseconds and a remainder), so that the
//! sweep can tell a full bucket without knowing its limit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::sync::{Mutex, MutexGuard};
use smallvec::SmallVec;
use tollgate_core::algorithms::gcra::Gcra;
use tollgate_core::{
    Algorithm, BucketState, Clock, LeaseId, Limit, SystemClock, Timestamp, Usage, Verdict,
};

use super::idempotency::{local_fingerprint, Seen};
use super::{
    Applied, Mode, OneOutcome, Op, Ops, Route, Settlement, Store, StoreOutcome, VerdictSink,
};
use crate::error::StoreError;
use crate::key::BucketName;
use crate::scratch::Scratch;

/// What the memory store does when a decision needs a new bucket and the cap is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AtCapacity {
    /// Deny the call with [`Outcome::StoreFull`](crate::Outcome::StoreFull) (the default:
    /// never admit what cannot be counted).
    #[default]
    Deny,
    /// Admit the call without tracking the new bucket (fail open).
    Admit,
}

/// The key of a bucket in the memory store: 128 bits, the rule id in the top 32, then 96 bits
/// of keyed hash. Its low 16 bits come from the partition alone, so every limit of one
/// partition lands in the same shard. Held as two 64-bit halves rather than a `u128`, so that
/// it is aligned to 8 bytes, not 16: a map entry or a prepared subject holding it carries no
/// padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemoryKey {
    hi: u64,
    lo: u64,
}

impl MemoryKey {
    fn rule_id(self) -> u32 {
        u32::try_from(self.hi >> 32).unwrap_or(u32::MAX)
    }

    /// The low 16 bits, which pick the shard.
    fn shard_bits(self) -> u64 {
        self.lo & 0xFFFF
    }
}

impl std::hash::Hash for MemoryKey {
    /// Keys are already keyed hashes: the map hashes bits 16..80, which vary between limits
    /// and partitions (below them sit the shard bits, above them the rule id).
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((self.lo >> 16) | (self.hi << 48));
    }
}

const MASK_96: u128 = (1u128 << 96) - 1;
const PARTITION_BITS: u128 = 0xFFFF;

/// Hashes a [`MemoryKey`] by taking the 64 bits it writes as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type KeyMap<V> = HashMap<MemoryKey, V, BuildHasherDefault<KeyHasher>>;

/// GCRA state as `tat = micros * scale + rem`: whole microseconds tell when it is full.
#[derive(Clone, Copy, Debug)]
struct GcraCell {
    micros: u64,
    rem: u64,
}

impl GcraCell {
    #[inline]
    fn to_state(self, limit: &Limit) -> Gcra {
        let scale64 = limit.gcra().scale;
        if scale64 == 1 {
            return Gcra {
                tat: u128::from(self.micros),
            };
        }
        let scale = u128::from(scale64);
        Gcra {
            tat: u128::from(self.micros)
                .saturating_mul(scale)
                .saturating_add(u128::from(self.rem)),
        }
    }

    #[inline]
    fn from_state(g: Gcra, limit: &Limit) -> Self {
        let scale64 = limit.gcra().scale.max(1);
        if let Ok(tat) = u64::try_from(g.tat) {
            // The usual cases: no division at all, or a 64-bit one instead of a 128-bit one.
            if scale64 == 1 {
                return GcraCell {
                    micros: tat,
                    rem: 0,
                };
            }
            return GcraCell {
                micros: tat / scale64,
                rem: tat % scale64,
            };
        }
        let scale = u128::from(scale64);
        let micros = g.tat.checked_div(scale).unwrap_or(0);
        match u64::try_from(micros) {
            Ok(m) => GcraCell {
                micros: m,
                rem: u64::try_from(g.tat.checked_rem(scale).unwrap_or(0)).unwrap_or(0),
            },
            Err(_) => GcraCell {
                micros: u64::MAX,
                rem: 0,
            },
        }
    }

    /// Full (equal to no bucket) at `now`: `tat <= now * scale`, with `0 <= rem < scale`.
    fn is_full(self, now: Timestamp) -> bool {
        let now = now.as_micros();
        self.micros < now || (self.micros == now && self.rem == 0)
    }
}

/// How many buckets each rule holds in one shard: `(rule id, buckets)`, kept as buckets come
/// and go, so that counting a store's buckets by rule costs O(rules × shards), not a walk over
/// every bucket (a `/metrics` scrape asks for it). A rule's entry stays at 0 once its buckets
/// are gone, so that its gauge reads 0 rather than its last count.
#[derive(Default)]
struct RuleCounts(SmallVec<[(u32, u64); 4]>);

impl RuleCounts {
    #[inline]
    fn add(&mut self, key: MemoryKey) {
        let rule = key.rule_id();
        match self.0.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => self.0.push((rule, 1)),
        }
    }

    #[inline]
    fn remove(&mut self, key: MemoryKey) {
        self.remove_n(key.rule_id(), 1);
    }

    fn remove_n(&mut self, rule: u32, n: u64) {
        if let Some((_, held)) = self.0.iter_mut().find(|(r, _)| *r == rule) {
            *held = held.saturating_sub(n);
        }
    }
}

#[derive(Default)]
struct Shard {
    gcra: KeyMap<GcraCell>,
    /// Other algorithms, with the instant they become full again.
    other: KeyMap<(BucketState, u64)>,
    sweep_at: usize,
    /// Buckets held, by rule, kept by every insertion into and removal from the maps above
    /// ([`Shard::insert_gcra`], [`Shard::remove_gcra`], [`Shard::update`], the sweeps).
    held: RuleCounts,
}

const MIN_SWEEP: usize = 64;

impl Shard {
    fn len(&self) -> usize {
        self.gcra.len().saturating_add(self.other.len())
    }

    /// The bucket of another algorithm than GCRA at `key`, if held. (Most policies have
    /// none: an empty map is not probed.)
    #[inline(always)]
    fn other_bucket(&self, key: &MemoryKey) -> Option<&BucketState> {
        if self.other.is_empty() {
            return None;
        }
        self.other.get(key).map(|(s, _)| s)
    }

    fn contains(&self, key: &MemoryKey, limit: &Limit) -> bool {
        if limit.algorithm() == Algorithm::Gcra {
            self.gcra.contains_key(key)
        } else {
            self.other.contains_key(key)
        }
    }

    /// Stores a GCRA bucket's state after a change: a full bucket (`tat` 0, as
    /// [`Gcra::evaluate_spend`] leaves it) is forgotten.
    fn put_gcra(&mut self, key: MemoryKey, limit: &Limit, after: Gcra) {
        if after.tat == 0 {
            self.remove_gcra(key);
            return;
        }
        let cell = GcraCell::from_state(after, limit);
        match self.gcra.get_mut(&key) {
            Some(c) => *c = cell,
            None => self.insert_gcra(key, cell),
        }
    }

    /// Inserts a GCRA bucket the shard does not hold.
    #[inline]
    fn insert_gcra(&mut self, key: MemoryKey, cell: GcraCell) {
        if self.gcra.insert(key, cell).is_none() {
            self.held.add(key);
        }
    }

    /// Forgets a GCRA bucket.
    #[inline]
    fn remove_gcra(&mut self, key: MemoryKey) {
        if self.gcra.remove(&key).is_some() {
            self.held.remove(key);
        }
    }

    /// Applies `f` to the bucket's state, creating it if needed and removing it if it ends up
    /// full.
    fn update(
        &mut self,
        key: MemoryKey,
        limit: &Limit,
        now: Timestamp,
        f: impl FnOnce(&mut BucketState),
    ) {
        if limit.algorithm() == Algorithm::Gcra {
            let mut state = BucketState::Gcra(
                self.gcra
                    .get(&key)
                    .map(|c| c.to_state(limit))
                    .unwrap_or_default(),
            );
            f(&mut state);
            if let BucketState::Gcra(mut g) = state {
                if g.ttl_us(limit, now) == 0 {
                    g.tat = 0;
                }
                self.put_gcra(key, limit, g);
            }
            return;
        }
        let held = self.other.remove(&key).map(|(s, _)| s);
        let existed = held.is_some();
        let mut state = held.unwrap_or_else(|| BucketState::new(limit));
        f(&mut state);
        let ttl = state.ttl_us(limit, now);
        if ttl > 0 {
            self.other
                .insert(key, (state, now.as_micros().saturating_add(ttl)));
            if !existed {
                self.held.add(key);
            }
        } else if existed {
            self.held.remove(key);
        }
    }

    /// Drops every bucket that is full at `now`. Returns how many were dropped.
    fn sweep(&mut self, now: Timestamp) -> usize {
        let before = self.len();
        let held = &mut self.held;
        self.gcra.retain(|k, c| {
            let keep = !c.is_full(now);
            if !keep {
                held.remove(*k);
            }
            keep
        });
        let t = now.as_micros();
        self.other.retain(|k, (_, full_at)| {
            let keep = *full_at > t;
            if !keep {
                held.remove(*k);
            }
            keep
        });
        let after = self.len();
        self.sweep_at = after.saturating_mul(2).max(MIN_SWEEP);
        before.saturating_sub(after)
    }

    fn remove(&mut self, key: &MemoryKey) {
        self.remove_gcra(*key);
        if self.other.remove(key).is_some() {
            self.held.remove(*key);
        }
    }

    /// Forgets every bucket of a rule; how many there were.
    fn remove_rule(&mut self, rule_id: u32) -> u64 {
        let before = self.len();
        self.gcra.retain(|k, _| k.rule_id() != rule_id);
        self.other.retain(|k, _| k.rule_id() != rule_id);
        let removed = u64::try_from(before.saturating_sub(self.len())).unwrap_or(u64::MAX);
        self.held.remove_n(rule_id, removed);
        removed
    }
}

/// Padding that keeps each shard's lock on its own cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// Settings of a [`MemoryStore`].
#[derive(Clone, Debug)]
pub struct MemoryStoreBuilder {
    clock: Arc<dyn Clock>,
    shards: usize,
    max_buckets: usize,
    at_capacity: AtCapacity,
    idempotency_window: std::time::Duration,
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        MemoryStoreBuilder {
            clock: Arc::new(SystemClock::new()),
            shards: 128,
            max_buckets: 10_000_000,
            at_capacity: AtCapacity::Deny,
            idempotency_window: std::time::Duration::from_secs(60),
        }
    }
}

impl MemoryStoreBuilder {
    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// A shared clock.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The number of shards, rounded up to a power of two (default 128).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n.clamp(1, 1 << 16).next_power_of_two();
        self
    }

    /// The most buckets the store holds (default 10 million). The cap is split evenly
    /// between shards, so a shard may fill before the total is reached.
    pub fn max_buckets(mut self, n: usize) -> Self {
        self.max_buckets = n.max(1);
        self
    }

    /// What happens when a new bucket would exceed the cap (default: deny).
    pub fn at_capacity(mut self, at: AtCapacity) -> Self {
        self.at_capacity = at;
        self
    }

    /// How long an admission made with a request id is remembered (default 60 s).
    pub fn idempotency_window(mut self, window: std::time::Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let shards: Vec<Padded<Mutex<Shard>>> = (0..self.shards)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    sweep_at: MIN_SWEEP,
                    ..Shard::default()
                }))
            })
            .collect();
        MemoryStore {
            mask: self.shards.saturating_sub(1),
            per_shard_cap: self.max_buckets.div_ceil(self.shards).max(1),
            shards: shards.into_boxed_slice(),
            system_clock: self.clock.as_system().cloned(),
            clock: self.clock,
            at_capacity: self.at_capacity,
            seen: Seen::new(self.idempotency_window),
        }
    }
}

/// The in-memory store. See the [module docs](self).
pub struct MemoryStore {
    shards: Box<[Padded<Mutex<Shard>>]>,
    mask: usize,
    clock: Arc<dyn Clock>,
    /// The clock again, when it is the system clock ([`Clock::as_system`]; see
    /// [`MemoryStore::now`]).
    system_clock: Option<SystemClock>,
    per_shard_cap: usize,
    at_capacity: AtCapacity,
    seen: Seen,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("per_shard_cap", &self.per_shard_cap)
            .field("at_capacity", &self.at_capacity)
            .field("clock", &self.clock)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::builder().build()
    }
}

impl MemoryStore {
    /// A store with the system clock and default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store reading `clock`.
    pub fn with_clock(clock: impl Clock + 'static) -> Self {
        MemoryStore::builder().clock(clock).build()
    }

    /// Settings for a store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    /// The time now, by the store's clock. The system clock (the default) is read directly
    /// rather than through the `dyn Clock`, so that its few instructions are inlined into
    /// every decision instead of a call through a vtable.
    #[inline(always)]
    fn now(&self) -> Timestamp {
        match &self.system_clock {
            Some(system) => system.now(),
            None => self.clock.now(),
        }
    }

    /// The store's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// How many buckets the store holds now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().len())
            .fold(0, usize::saturating_add)
    }

    /// Whether the store holds no bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every bucket that is full now, in every shard. Returns how many were dropped.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        self.shards
            .iter()
            .map(|s| s.0.lock().sweep(now))
            .fold(0, usize::saturating_add)
    }

    fn shard_index(&self, key: MemoryKey) -> usize {
        usize::try_from(key.shard_bits()).unwrap_or(0) & self.mask
    }

    fn shard(&self, i: usize) -> &Mutex<Shard> {
        // `i` comes from `shard_index`, which masks into range.
        &self.shards[i & self.mask].0
    }

    /// Locks the shards of the operations' keys, in ascending order. The usual decision
    /// (every limit of one rule partition) needs one shard: it is locked without sorting.
    #[inline(always)]
    fn lock_all<O: Ops<MemoryKey> + ?Sized>(&self, ops: &O) -> Locked<'_> {
        if ops.is_empty() {
            return Locked::Many(SmallVec::new());
        }
        let first = self.shard_index(*ops.key(0));
        let mut i = 1;
        while i < ops.len() && self.shard_index(*ops.key(i)) == first {
            i += 1;
        }
        if i == ops.len() {
            return Locked::One(first, self.shard(first).lock());
        }
        let mut idx: SmallVec<[usize; 4]> = SmallVec::new();
        idx.push(first);
        for j in i..ops.len() {
            let shard = self.shard_index(*ops.key(j));
            if !idx.contains(&shard) {
                idx.push(shard);
            }
        }
        idx.sort_unstable();
        Locked::Many(idx.into_iter().map(|i| (i, self.shard(i).lock())).collect())
    }

    /// Evaluates and, if all admit and `mode` spends, spends: the synchronous core of
    /// [`Store::decide`].
    #[inline(always)]
    pub fn decide_now(&self, ops: &[Op<MemoryKey>], mode: Mode, lease: LeaseId) -> StoreOutcome {
        if let [op] = ops {
            if op.limit.algorithm() == Algorithm::Gcra {
                let now = self.now();
                let one = self.decide_one_gcra(op.key, &op.limit, op.cost, mode, now, false);
                let mut outcome = unspent(now, smallvec::smallvec![one.verdict]);
                outcome.spent = one.spent;
                outcome.store_full = one.store_full;
                return outcome;
            }
        }
        let mut verdicts: SmallVec<[Verdict; 3]> =
            smallvec::smallvec![Verdict::default(); ops.len()];
        let applied = self.decide_ops_now(ops, mode, lease, &mut verdicts[..]);
        let mut outcome = unspent(applied.now, verdicts);
        outcome.spent = applied.spent;
        outcome.store_full = applied.store_full;
        outcome
    }

    /// [`decide_now`](Self::decide_now) for operations read through [`Ops`], with verdict `i`
    /// put into `verdicts` (written into a slice's `verdicts[i]`, or folded into a
    /// [`Tally`](super::Tally), which asks for brief verdicts): the synchronous core of
    /// [`Store::decide_ops_sync`]. A slice shorter than `ops` gets the first verdicts only;
    /// the decision is the same.
    #[inline(always)]
    pub fn decide_ops_now<O: Ops<MemoryKey> + ?Sized, V: VerdictSink + ?Sized>(
        &self,
        ops: &O,
        mode: Mode,
        lease: LeaseId,
        verdicts: &mut V,
    ) -> Applied {
        let mut steps = Scratch::new();
        self.decide_steps(ops, mode, lease, verdicts, steps.slice(ops.len()))
    }

    /// The decision of [`decide_ops_now`](Self::decide_ops_now) in two passes over `ops`,
    /// with `steps` (one per operation) to remember what the first pass did.
    ///
    /// The first pass evaluates every operation and, while all so far admit, spends from
    /// each GCRA bucket that exists in place (one probe of the map for both), remembering
    /// the cell it replaced; a later denial puts those cells back. It records in `steps` all
    /// that the rest needs: the second pass, once all admit, creates the new buckets (the cap
    /// applies to them alone), forgets the ones left full, and spends from the other
    /// algorithms' buckets. A decision is made under its
    /// shards' locks, so nobody sees a cell spent by a decision that is then undone.
    ///
    /// Kept out of line: inlined into the limiter's decisions, it made the one-limit path
    /// (which never comes here) about 70 instructions longer (callgrind, `check/hot/admitted`).
    #[inline(never)]
    fn decide_steps<O: Ops<MemoryKey> + ?Sized, V: VerdictSink + ?Sized>(
        &self,
        ops: &O,
        mode: Mode,
        lease: LeaseId,
        verdicts: &mut V,
        steps: &mut [Step],
    ) -> Applied {
        let now = self.now();
        let mut locked = self.lock_all(ops);
        let spend = mode == Mode::Spend;
        let mut admitted = true;
        let mut written = false;
        let mut creates = false;
        // Whether the second pass has anything to do.
        let mut second = false;
        for (i, step) in steps.iter_mut().enumerate() {
            let (key, limit, cost) = (*ops.key(i), ops.limit(i), ops.cost(i));
            let shard = locked.shard_of(self, key);
            let verdict = if limit.algorithm() == Algorithm::Gcra {
                match shard.gcra.get_mut(&key) {
                    Some(cell) => {
                        let (v, after) =
                            gcra_evaluate_spend(cell.to_state(limit), V::BRIEF, limit, now, cost);
                        if let (Some(after), true) = (after, admitted && spend) {
                            let full = after.tat == 0;
                            *step = Step::Spent { old: *cell, full };
                            *cell = GcraCell::from_state(after, limit);
                            written = true;
                            second |= full;
                        }
                        v
                    }
                    None => {
                        let (v, after) =
                            gcra_evaluate_spend(Gcra::default(), V::BRIEF, limit, now, cost);
                        if let Some(after) = after.filter(|a| a.tat != 0) {
                            *step = Step::Create(GcraCell::from_state(after, limit));
                            creates = true;
                        }
                        v
                    }
                }
            } else {
                let bucket = shard.other_bucket(&key);
                // Spent from in the second pass, unless it only checks for a free slot.
                if !creates_nothing(limit, cost) {
                    *step = Step::SpendLater {
                        exists: bucket.is_some(),
                    };
                    second = true;
                    creates |= bucket.is_none();
                }
                match bucket {
                    Some(s) => s.evaluate(limit, now, cost),
                    None => BucketState::evaluate_new(limit, now, cost),
                }
            };
            admitted &= verdict.admitted;
            verdicts.put(i, &verdict);
        }
        let mut applied = Applied {
            now,
            spent: false,
            store_full: false,
        };
        if !admitted || !spend {
            if written {
                undo(self, &mut locked, ops, steps);
            }
            return applied;
        }
        // Only a decision that creates a bucket can meet the cap.
        let fits = !creates || self.make_room(&mut locked, ops, steps, now);
        if !fits {
            self.count_full();
            applied.store_full = true;
            if self.at_capacity == AtCapacity::Deny {
                undo(self, &mut locked, ops, steps);
                return applied;
            }
        }
        applied.spent = true;
        if !(second || creates) {
            return applied;
        }
        for (i, step) in steps.iter().enumerate() {
            let key = *ops.key(i);
            let shard = locked.shard_of(self, key);
            match *step {
                Step::Spent { full: true, .. } => shard.remove_gcra(key),
                Step::Spent { full: false, .. } => {}
                Step::Create(cell) => {
                    if fits {
                        shard.insert_gcra(key, cell);
                    }
                }
                Step::SpendLater { exists } => {
                    // Without room, only buckets still held after the sweep are spent from.
                    if fits || (exists && shard.other.contains_key(&key)) {
                        let (limit, cost) = (ops.limit(i), ops.cost(i));
                        shard.update(key, limit, now, |s| s.spend(limit, now, cost, lease));
                    }
                }
                Step::Untouched => {}
            }
        }
        applied
    }

    /// [`decide_now`](Self::decide_now) for a single GCRA limit spending `cost`, the most
    /// common decision: one lock, one probe of the map, one pass of arithmetic.
    #[inline(always)]
    fn decide_one_gcra(
        &self,
        key: MemoryKey,
        limit: &Limit,
        cost: u64,
        mode: Mode,
        now: Timestamp,
        brief: bool,
    ) -> OneOutcome {
        use std::collections::hash_map::Entry;
        let mut shard = self.shard(self.shard_index(key)).lock();
        let entry = shard.gcra.entry(key);
        let state = match &entry {
            Entry::Occupied(e) => e.get().to_state(limit),
            Entry::Vacant(_) => Gcra::default(),
        };
        let (verdict, after) = gcra_evaluate_spend(state, brief, limit, now, cost);
        let mut outcome = OneOutcome {
            now,
            verdict,
            spent: false,
            store_full: false,
        };
        let Some(after) = after else {
            return outcome;
        };
        if mode == Mode::Peek {
            return outcome;
        }
        match entry {
            Entry::Occupied(e) if after.tat == 0 => {
                e.remove();
                shard.held.remove(key);
            }
            Entry::Occupied(mut e) => *e.get_mut() = GcraCell::from_state(after, limit),
            Entry::Vacant(_) if after.tat == 0 => {}
            Entry::Vacant(_) => {
                // A new bucket: the cap applies (and the map is probed again to insert).
                if self.room_in(&mut shard, 1, now) {
                    shard.insert_gcra(key, GcraCell::from_state(after, limit));
                } else {
                    self.count_full();
                    outcome.store_full = true;
                    if self.at_capacity == AtCapacity::Deny {
                        return outcome;
                    }
                }
            }
        }
        outcome.spent = true;
        outcome
    }

    fn count_full(&self) {
        metrics::counter!("tollgate_memory_store_full_total").increment(1);
    }

    /// [`decide_now`](Self::decide_now), answering a request id whose admission of the same
    /// buckets and costs is remembered (within the idempotency window) with that admission; a
    /// denial is decided again.
    #[inline(always)]
    fn decide_once(
        &self,
        ops: &[Op<MemoryKey>],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> StoreOutcome {
        let Some(id) = request_id else {
            return self.decide_now(ops, mode, lease);
        };
        // The id names this request only: these buckets, costs and mode.
        let fingerprint = local_fingerprint(ops, mode);
        // One call with this id at a time, from lookup to remember (see `Seen::turn`).
        let _turn = self.seen.turn(id, fingerprint);
        if let Some(replay) = self.seen.get(id, fingerprint, self.now()) {
            return replay;
        }
        let outcome = self.decide_now(ops, mode, lease);
        self.seen.remember(id, fingerprint, &outcome);
        outcome
    }

    /// Ensures every shard can take the new buckets `ops` would create (the missing buckets
    /// the first pass of [`decide_steps`](Self::decide_steps) found a spend for), sweeping if
    /// needed.
    fn make_room<O: Ops<MemoryKey> + ?Sized>(
        &self,
        locked: &mut Locked<'_>,
        ops: &O,
        steps: &[Step],
        now: Timestamp,
    ) -> bool {
        let mut fits = true;
        for (i, shard) in locked.iter_mut() {
            let new = steps
                .iter()
                .enumerate()
                .filter(|&(j, step)| step.creates() && self.shard_index(*ops.key(j)) == i)
                .count();
            if new > 0 && !self.room_in(shard, new, now) {
                fits = false;
            }
        }
        fits
    }

    /// Whether `shard` can take `new` more buckets under the cap, sweeping it first when it
    /// has doubled since its last sweep or would pass the cap.
    fn room_in(&self, shard: &mut Shard, new: usize, now: Timestamp) -> bool {
        let wanted = shard.len().saturating_add(new);
        if wanted > shard.sweep_at || wanted > self.per_shard_cap {
            let evicted = shard.sweep(now);
            if evicted > 0 {
                metrics::counter!("tollgate_memory_evicted_total")
                    .increment(u64::try_from(evicted).unwrap_or(u64::MAX));
            }
        }
        shard.len().saturating_add(new) <= self.per_shard_cap
    }

    /// Applies settlements now: the synchronous core of [`Store::settle`].
    pub fn settle_sync(&self, items: &[Settlement<MemoryKey>]) -> usize {
        let now = self.now();
        let mut found = 0usize;
        for item in items {
            let (key, limit) = match item {
                Settlement::Refund { key, limit, .. }
                | Settlement::Charge { key, limit, .. }
                | Settlement::Release { key, limit, .. }
                | Settlement::Renew { key, limit, .. } => (*key, *limit),
            };
            let mut shard = self.shard(self.shard_index(key)).lock();
            if !shard.contains(&key, &limit) && !matches!(item, Settlement::Charge { .. }) {
                continue;
            }
            let mut hit = false;
            shard.update(key, &limit, now, |s| match item {
                Settlement::Refund { spent_at, cost, .. } => {
                    s.refund(&limit, now, *spent_at, *cost)
                }
                Settlement::Charge { spent_at, cost, .. } => {
                    s.charge(&limit, now, *spent_at, *cost)
                }
                Settlement::Release { lease, .. } => hit = s.release(now, *lease),
                Settlement::Renew { lease, .. } => hit = s.renew(&limit, now, *lease),
            });
            if hit {
                found = found.saturating_add(1);
            }
        }
        found
    }

    /// The usage of each bucket now: the synchronous core of [`Store::usage`].
    pub fn usage_now(&self, ops: &[Op<MemoryKey>]) -> (Timestamp, Vec<Usage>) {
        let now = self.now();
        let mut locked = self.lock_all(ops);
        let usage = ops
            .iter()
            .map(|op| {
                let shard = locked.shard_of(self, op.key);
                if op.limit.algorithm() == Algorithm::Gcra {
                    let g = shard
                        .gcra
                        .get(&op.key)
                        .map(|c| c.to_state(&op.limit))
                        .unwrap_or_default();
                    return g.usage(&op.limit, now);
                }
                match shard.other.get(&op.key) {
                    Some((s, _)) => s.usage(&op.limit, now),
                    None => BucketState::new(&op.limit).usage(&op.limit, now),
                }
            })
            .collect();
        (now, usage)
    }
}

/// The store's answer before anything is spent.
#[inline]
fn unspent(now: Timestamp, verdicts: SmallVec<[Verdict; 3]>) -> StoreOutcome {
    StoreOutcome {
        now,
        verdicts,
        spent: false,
        store_full: false,
        route: Route::PRIMARY,
        degraded: None,
    }
}

/// [`Gcra::evaluate_spend`], or its brief form when the caller reads only whether the cost
/// is admitted and the retry-after ([`VerdictSink::BRIEF`], or `brief` of
/// [`Store::decide_one_sync`]).
#[inline(always)]
fn gcra_evaluate_spend(
    state: Gcra,
    brief: bool,
    limit: &Limit,
    now: Timestamp,
    cost: u64,
) -> (Verdict, Option<Gcra>) {
    if brief {
        state.evaluate_spend_brief(limit, now, cost)
    } else {
        state.evaluate_spend(limit, now, cost)
    }
}

/// A concurrency check that takes no slot: it spends nothing, so it never creates a bucket.
fn creates_nothing(limit: &Limit, cost: u64) -> bool {
    limit.algorithm() == Algorithm::Concurrency && cost == 0
}

/// What the first pass of [`MemoryStore::decide_steps`] did with one operation.
#[derive(Clone, Copy, Debug, Default)]
enum Step {
    /// Nothing to spend: a denial, a peek, or a concurrency check that takes no slot.
    #[default]
    Untouched,
    /// A GCRA bucket spent in place; `old` is the cell it replaced, `full` says the bucket is
    /// full after it (a spend of nothing), so it is forgotten.
    Spent { old: GcraCell, full: bool },
    /// A GCRA bucket that does not exist yet and would hold this cell after spending.
    Create(GcraCell),
    /// A bucket of another algorithm, spent from in the second pass; `exists` says whether
    /// the store held it.
    SpendLater { exists: bool },
}

impl Step {
    /// Whether the second pass creates a bucket for this operation.
    fn creates(self) -> bool {
        matches!(self, Step::Create(_) | Step::SpendLater { exists: false })
    }
}

/// Puts back the cells the first pass of a decision spent in place, when the decision spends
/// nothing after all. Last first, so that a bucket named twice in one decision (no policy
/// builds one, but a caller of [`Store::decide_ops_sync`] may) ends with the cell it had
/// before the first spend.
#[cold]
fn undo<O: Ops<MemoryKey> + ?Sized>(
    store: &MemoryStore,
    locked: &mut Locked<'_>,
    ops: &O,
    steps: &[Step],
) {
    for (i, step) in steps.iter().enumerate().rev() {
        if let Step::Spent { old, .. } = *step {
            let key = *ops.key(i);
            if let Some(cell) = locked.shard_of(store, key).gcra.get_mut(&key) {
                *cell = old;
            }
        }
    }
}

/// The shards a decision holds locked.
enum Locked<'a> {
    /// One shard: the usual case.
    One(usize, MutexGuard<'a, Shard>),
    /// Several, locked in ascending order.
    Many(SmallVec<[(usize, MutexGuard<'a, Shard>); 4]>),
}

impl<'a> Locked<'a> {
    /// The locked shard of `key`, one of the keys these shards were locked for. When they
    /// are one shard it is that one, with no index to compute.
    #[inline(always)]
    fn shard_of(&mut self, store: &MemoryStore, key: MemoryKey) -> &mut Shard {
        let found = match self {
            Locked::One(_, g) => Some(&mut **g),
            Locked::Many(guards) => {
                let i = store.shard_index(key);
                guards
                    .iter_mut()
                    .find(|(j, _)| *j == i)
                    .map(|(_, g)| &mut **g)
            }
        };
        match found {
            Some(g) => g,
            // Every op's shard was locked by `lock_all` from the same keys.
            None => unreachable!("the shard of {key:?} was not locked"),
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Shard)> + use<'_, 'a> {
        let (one, many) = match self {
            Locked::One(i, g) => (Some((*i, &mut **g)), None),
            Locked::Many(guards) => (None, Some(guards.iter_mut().map(|(i, g)| (*i, &mut **g)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl Store for MemoryStore {
    type Key = MemoryKey;

    fn bucket_key(&self, name: &BucketName<'_>) -> MemoryKey {
        let mixed = (name.partition_hash & PARTITION_BITS)
            | ((name.partition_hash ^ name.limit_salt) & MASK_96 & !PARTITION_BITS);
        let key = (u128::from(name.rule_id) << 96) | mixed;
        MemoryKey {
            hi: u64::try_from(key >> 64).unwrap_or(u64::MAX),
            lo: u64::try_from(key & u128::from(u64::MAX)).unwrap_or(0),
        }
    }

    async fn decide(
        &self,
        ops: &[Op<MemoryKey>],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> Result<StoreOutcome, StoreError> {
        Ok(self.decide_once(ops, mode, lease, request_id))
    }

    /// GCRA only: the other algorithms go through [`decide_now`](Self::decide_now) (a GCRA
    /// bucket has no use for the lease).
    #[inline(always)]
    fn decide_one_sync(
        &self,
        key: &MemoryKey,
        limit: &Limit,
        cost: u64,
        mode: Mode,
        _lease: LeaseId,
        brief: bool,
    ) -> Option<OneOutcome> {
        if limit.algorithm() != Algorithm::Gcra {
            return None;
        }
        Some(self.decide_one_gcra(*key, limit, cost, mode, self.now(), brief))
    }

    #[inline(always)]
    fn decide_ops_sync<O: Ops<MemoryKey> + ?Sized, V: VerdictSink + ?Sized>(
        &self,
        ops: &O,
        mode: Mode,
        lease: LeaseId,
        verdicts: &mut V,
    ) -> Option<Applied> {
        Some(self.decide_ops_now(ops, mode, lease, verdicts))
    }

    #[inline(always)]
    fn decide_sync(
        &self,
        ops: &[Op<MemoryKey>],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> Option<Result<StoreOutcome, StoreError>> {
        Some(Ok(self.decide_once(ops, mode, lease, request_id)))
    }

    async fn settle(
        &self,
        items: &[Settlement<MemoryKey>],
        _route: Route,
    ) -> Result<usize, StoreError> {
        Ok(self.settle_sync(items))
    }

    fn settle_now(
        &self,
        items: &[Settlement<MemoryKey>],
        _route: Route,
    ) -> Option<Result<usize, StoreError>> {
        Some(Ok(self.settle_sync(items)))
    }

    async fn usage(&self, ops: &[Op<MemoryKey>]) -> Result<(Timestamp, Vec<Usage>), StoreError> {
        Ok(self.usage_now(ops))
    }

    async fn reset(&self, keys: &[MemoryKey]) -> Result<(), StoreError> {
        for key in keys {
            self.shard(self.shard_index(*key)).lock().remove(key);
        }
        Ok(())
    }

    async fn reset_rule(&self, _rule: &'static str, rule_id: u32) -> Result<u64, StoreError> {
        let removed = self
            .shards
            .iter()
            .map(|s| s.0.lock().remove_rule(rule_id))
            .fold(0, u64::saturating_add);
        Ok(removed)
    }

    /// The buckets held per rule, from counts kept as buckets come and go: O(rules) per
    /// shard, however many buckets there are. A bucket that has refilled counts until a
    /// sweep drops it ([`MemoryStore::sweep`]); a rule whose buckets are all gone reads 0.
    fn active_buckets(&self) -> Option<Vec<(u32, u64)>> {
        let mut counts: SmallVec<[(u32, u64); 8]> = SmallVec::new();
        for s in self.shards.iter() {
            let shard = s.0.lock();
            for &(rule, n) in &shard.held.0 {
                match counts.iter_mut().find(|(r, _)| *r == rule) {
                    Some((_, total)) => *total = total.saturating_add(n),
                    None => counts.push((rule, n)),
                }
            }
        }
        let mut v = counts.into_vec();
        v.sort_unstable();
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of handing the store the system clock takes the direct path, even behind
    /// `Arc<dyn Clock>` (as the service and the fallback store do); other clocks do not.
    #[test]
    fn the_system_clock_is_read_directly_however_it_is_given() {
        let shared: Arc<dyn Clock> = Arc::new(SystemClock::new());
        assert!(MemoryStore::new().system_clock.is_some());
        assert!(MemoryStore::builder()
            .shared_clock(shared.clone())
            .build()
            .system_clock
            .is_some());
        assert!(MemoryStore::with_clock(shared).system_clock.is_some());
        let manual = tollgate_core::ManualClock::new(Timestamp::from_secs(1));
        assert!(MemoryStore::with_clock(manual).system_clock.is_none());
    }

    /// The buckets held per rule are counted as buckets come and go, whichever path makes or
    /// drops them, and a rule whose buckets are all gone reads 0 (not its last count).
    #[test]
    fn buckets_are_counted_by_rule_as_they_come_and_go() {
        use tollgate_core::{Algorithm, LimitKind, LimitSpec, ManualClock, Window};
        let clock = ManualClock::new(Timestamp::from_secs(1_000));
        let store = MemoryStore::builder()
            .clock(clock.clone())
            .shards(4)
            .build();
        let limit = |algorithm| {
            LimitSpec::new(LimitKind::Requests, 10, Window::MINUTE)
                .algorithm(algorithm)
                .build()
                .expect("a valid limit")
        };
        let key = |rule_id: u32, partition: u128, salt: u128| {
            store.bucket_key(&BucketName {
                rule: "r",
                rule_id,
                limit: "l",
                partition: &[],
                partition_hash: partition,
                limit_salt: salt << 20,
            })
        };
        let op = |key, algorithm, cost| Op {
            key,
            limit: limit(algorithm),
            cost,
            failure: super::super::FailureMode::Open,
        };
        let held = |store: &MemoryStore| store.active_buckets().unwrap_or_default();
        // One GCRA limit (the one-limit path), 100 partitions of rule 1.
        for p in 0..100 {
            store.decide_now(&[op(key(1, p, 1), Algorithm::Gcra, 1)], Mode::Spend, 0);
        }
        // Two limits of rule 2 (GCRA and a fixed window), 10 partitions: the general path.
        for p in 0..10 {
            let ops = [
                op(key(2, p, 1), Algorithm::Gcra, 1),
                op(key(2, p, 2), Algorithm::FixedWindow, 1),
            ];
            store.decide_now(&ops, Mode::Spend, 0);
        }
        // A peek and a denied decision make nothing.
        store.decide_now(&[op(key(3, 0, 1), Algorithm::Gcra, 1)], Mode::Peek, 0);
        store.decide_now(&[op(key(3, 1, 1), Algorithm::Gcra, 11)], Mode::Spend, 0);
        assert_eq!(held(&store), [(1, 100), (2, 20)]);
        assert_eq!(store.len(), 120);

        // Settling a refund that leaves a bucket full forgets it.
        let refund = Settlement::Refund {
            key: key(1, 0, 1),
            limit: limit(Algorithm::Gcra),
            spent_at: clock.now(),
            cost: 1,
        };
        store.settle_sync(&[refund]);
        assert_eq!(held(&store), [(1, 99), (2, 20)]);
        // Resets, by key and by rule.
        futures::executor::block_on(store.reset(&[key(1, 1, 1), key(2, 0, 2)])).unwrap();
        assert_eq!(held(&store), [(1, 98), (2, 19)]);
        let n = futures::executor::block_on(store.reset_rule("r", 2)).unwrap();
        assert_eq!((n, held(&store)), (19, vec![(1, 98), (2, 0)]));

        // Once every bucket has refilled, a sweep drops them, and the counts say so.
        clock.advance(std::time::Duration::from_secs(3_600));
        assert_eq!(store.sweep(), 98);
        assert_eq!(held(&store), [(1, 0), (2, 0)]);
        assert!(store.is_empty());
    }

    /// A caller's slice of verdicts shorter than its operations gets the first verdicts, and
    /// the decision is the same as with a slice of the right length: no panic.
    #[test]
    fn a_short_slice_of_verdicts_gets_the_first_verdicts() {
        let clock = tollgate_core::ManualClock::new(Timestamp::from_secs(1_000));
        let store = MemoryStore::with_clock(clock);
        let limit = |n| {
            tollgate_core::LimitSpec::new(
                tollgate_core::LimitKind::Requests,
                n,
                tollgate_core::Window::MINUTE,
            )
            .build()
            .expect("a valid limit")
        };
        let key = |salt: u128| {
            store.bucket_key(&BucketName {
                rule: "r",
                rule_id: 1,
                limit: "l",
                partition: &[],
                partition_hash: 7,
                limit_salt: salt << 20,
            })
        };
        let ops = [
            Op {
                key: key(1),
                limit: limit(5),
                cost: 1,
                failure: super::super::FailureMode::Open,
            },
            Op {
                key: key(2),
                limit: limit(1),
                cost: 2,
                failure: super::super::FailureMode::Open,
            },
        ];
        let mut one = [Verdict::default(); 1];
        let applied = store.decide_ops_now(&ops[..], Mode::Spend, 0, &mut one[..]);
        assert!(!applied.spent, "the second limit never fits two");
        assert!(one[0].admitted);
        assert_eq!(one[0].remaining, 4);
        assert_eq!(store.len(), 0, "nothing spent");
        let mut none: [Verdict; 0] = [];
        let applied = store.decide_ops_now(&ops[..1], Mode::Spend, 0, &mut none[..]);
        assert!(applied.spent);
        assert_eq!(store.len(), 1);
    }
}
