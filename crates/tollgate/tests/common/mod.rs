//! Helpers shared by the integration tests of this crate.

use tollgate::{AtCapacity, Limiter, ManualClock, MemoryStore, Policy};

/// A limiter on `clock` over a memory store of one shard holding at most `cap` buckets.
pub(crate) fn capped_limiter(
    policy: Policy,
    clock: &ManualClock,
    cap: usize,
    at_capacity: AtCapacity,
) -> Limiter {
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .shards(1)
        .max_buckets(cap)
        .at_capacity(at_capacity)
        .build();
    Limiter::with_store(policy, store)
}
