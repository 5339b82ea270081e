//! The memory store against tollgate-core's pure algorithms: random operations at random
//! times give the same verdicts and usage, to the microsecond, through the store's single-limit
//! GCRA path, its multi-limit path, its forgetting of full buckets and its sweeps (the driver is
//! [`tollgate_test::model`], shared with the Lua scripts' tests).

use proptest::prelude::*;
use tollgate::store::memory::MemoryKey;
use tollgate::{ManualClock, MemoryStore};
use tollgate_test::model::{bucket_keys, Stores, T0};
use tollgate_test::strategies::{limit, step};

fn keys(store: &MemoryStore, n: usize) -> Vec<MemoryKey> {
    const LABELS: [&str; 4] = ["l0", "l1", "l2", "l3"];
    bucket_keys(store, "prop", &LABELS[..n])
}

/// A fresh store on a manual clock, driven by `f`.
fn with_store<R>(f: impl FnOnce(&Stores<'_, MemoryStore>, &MemoryStore) -> R) -> R {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let clock = ManualClock::new(T0);
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .shards(4)
        .build();
    let sweep = || {
        store.sweep();
    };
    let stores = Stores {
        stores: &[(&store, "memory")],
        rt: &rt,
        clock: &clock,
        forgets_full: true,
        sweep: &sweep,
    };
    f(&stores, &store)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// One limit: the store's single-limit path (for GCRA, one probe and one pass).
    #[test]
    fn one_limit_equals_core(limit in limit(), steps in proptest::collection::vec(step(), 1..60)) {
        with_store(|s, store| s.one_limit(&keys(store, 1), limit, steps))?;
    }

    /// Several limits in one decision: all spend or none, each verdict equal to the model's.
    #[test]
    fn several_limits_equal_core(
        limits in proptest::collection::vec(limit(), 2..5),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        with_store(|s, store| s.several_limits(&[keys(store, limits.len())], &limits, steps, None))?;
    }
}
