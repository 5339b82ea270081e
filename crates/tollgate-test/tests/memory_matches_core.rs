//! The memory store against tollgate-core's pure algorithms: random operations at random
//! times give the same verdicts and usage, to the microsecond, through the store's single-limit
//! GCRA path, its multi-limit path, its forgetting of full buckets and its sweeps.

use std::time::Duration;

use proptest::prelude::*;
use tollgate::key::BucketName;
use tollgate::store::{Mode, Op, Settlement, Store};
use tollgate::{Algorithm, Clock, ManualClock, MemoryStore, Timestamp};
use tollgate_core::{BucketState, Limit};
use tollgate_test::strategies::{limit, step, Step};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

fn keys(store: &MemoryStore, n: usize) -> Vec<tollgate::store::memory::MemoryKey> {
    const LABELS: [&str; 4] = ["l0", "l1", "l2", "l3"];
    let partition = tollgate::key::partition_hash(0, &["prop"]);
    LABELS[..n]
        .iter()
        .map(|label| {
            store.bucket_key(&BucketName {
                rule: "prop",
                rule_id: 0,
                limit: label,
                partition: &["prop"],
                partition_hash: partition,
                limit_salt: tollgate::key::partition_hash(1, &[label]),
            })
        })
        .collect()
}

/// The store forgets a bucket that is full at `now` whenever it writes the bucket, and a sweep
/// forgets every full bucket: the model forgets it at the same moments. A full bucket equals a
/// new one, so this only shows if time later goes backwards, which the system clock never does
/// (it is monotonic); the manual clock here does.
fn forget_if_full(model: &mut BucketState, limit: &Limit, now: Timestamp) {
    if model.ttl_us(limit, now) == 0 {
        *model = BucketState::new(limit);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// One limit: the store's single-limit path (for GCRA, one probe and one pass).
    #[test]
    fn one_limit_equals_core(limit in limit(), steps in proptest::collection::vec(step(), 1..60)) {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::builder().clock(clock.clone()).shards(4).build();
        let key = keys(&store, 1).remove(0);
        let mut model = BucketState::new(&limit);
        let mut last_spend = clock.now();
        let mut lease = 1u64;
        for s in steps {
            let now = clock.now();
            match s {
                Step::Advance(us) => clock.advance(Duration::from_micros(us)),
                // The store prunes expired leases for good, where the pure function (which
                // cannot mutate while evaluating) would count them again if time went
                // backwards: both never over-admit, but they differ, so concurrency runs
                // forwards only.
                Step::Back(us) if limit.algorithm() != Algorithm::Concurrency => {
                    clock.set(Timestamp::from_micros(now.as_micros().saturating_sub(us)));
                }
                Step::Back(_) => {}
                Step::Spend(c) | Step::Peek(c) => {
                    let spend = matches!(s, Step::Spend(_));
                    let cost = if limit.algorithm() == Algorithm::Concurrency { u64::from(spend) } else { c };
                    let mode = if spend { Mode::Spend } else { Mode::Peek };
                    if spend { lease += 1; }
                    let want = model.evaluate(&limit, now, cost);
                    let op = Op { key, limit, cost, failure: Default::default() };
                    let out = store.decide_now(std::slice::from_ref(&op), mode, lease);
                    prop_assert_eq!(out.now, now);
                    prop_assert_eq!(out.verdicts[0], want, "{:?} at {} cost {}", limit, now, cost);
                    prop_assert_eq!(out.spent, spend && want.admitted);
                    if spend && want.admitted {
                        model.spend(&limit, now, cost, lease);
                        forget_if_full(&mut model, &limit, now);
                        last_spend = now;
                    }
                }
                Step::Refund(c) | Step::Charge(c) => {
                    let item = if matches!(s, Step::Refund(_)) {
                        model.refund(&limit, now, last_spend, c);
                        Settlement::Refund { key, limit, spent_at: last_spend, cost: c }
                    } else {
                        model.charge(&limit, now, last_spend, c);
                        Settlement::Charge { key, limit, spent_at: last_spend, cost: c }
                    };
                    store.settle_sync(&[item]);
                    forget_if_full(&mut model, &limit, now);
                }
                Step::Release | Step::Renew => {
                    let (want, item) = if matches!(s, Step::Release) {
                        (model.release(now, lease), Settlement::Release { key, limit, lease })
                    } else {
                        (model.renew(&limit, now, lease), Settlement::Renew { key, limit, lease })
                    };
                    let found = store.settle_sync(&[item]);
                    forget_if_full(&mut model, &limit, now);
                    prop_assert_eq!(found == 1, want && limit.algorithm() == Algorithm::Concurrency);
                }
                Step::Sweep => {
                    store.sweep();
                    forget_if_full(&mut model, &limit, now);
                }
            }
            let now = clock.now();
            let (_, usage) = store.usage_now(&[Op { key, limit, cost: 0, failure: Default::default() }]);
            prop_assert_eq!(usage[0], model.usage(&limit, now), "usage of {:?} at {}", limit, now);
        }
    }

    /// Several limits in one decision: all spend or none, each verdict equal to the model's.
    #[test]
    fn several_limits_equal_core(
        limits in proptest::collection::vec(limit(), 2..5),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::builder().clock(clock.clone()).shards(4).build();
        let keys = keys(&store, limits.len());
        let mut models: Vec<BucketState> = limits.iter().map(BucketState::new).collect();
        let mut lease = 1u64;
        for s in steps {
            let now = clock.now();
            match s {
                Step::Advance(us) => clock.advance(Duration::from_micros(us)),
                Step::Spend(c) | Step::Peek(c) => {
                    let spend = matches!(s, Step::Spend(_));
                    let costs: Vec<u64> = limits.iter().map(|l| {
                        if l.algorithm() == Algorithm::Concurrency { u64::from(spend) } else { c }
                    }).collect();
                    if spend { lease += 1; }
                    let want: Vec<_> = models.iter().zip(&limits).zip(&costs)
                        .map(|((m, l), c)| m.evaluate(l, now, *c)).collect();
                    let all = want.iter().all(|v| v.admitted);
                    let ops: Vec<_> = keys.iter().zip(&limits).zip(&costs)
                        .map(|((key, limit), cost)| Op { key: *key, limit: *limit, cost: *cost, failure: Default::default() })
                        .collect();
                    let mode = if spend { Mode::Spend } else { Mode::Peek };
                    let out = store.decide_now(&ops, mode, lease);
                    prop_assert_eq!(&out.verdicts[..], &want[..], "{:?} at {} costs {:?}", limits, now, costs);
                    prop_assert_eq!(out.spent, spend && all);
                    if spend && all {
                        for ((m, l), c) in models.iter_mut().zip(&limits).zip(&costs) {
                            m.spend(l, now, *c, lease);
                        }
                    }
                }
                Step::Release => {
                    let want = models.iter_mut().zip(&limits)
                        .map(|(m, l)| m.release(now, lease) && l.algorithm() == Algorithm::Concurrency)
                        .filter(|found| *found)
                        .count();
                    let items: Vec<_> = keys.iter().zip(&limits)
                        .map(|(key, limit)| Settlement::Release { key: *key, limit: *limit, lease })
                        .collect();
                    prop_assert_eq!(store.settle_sync(&items), want);
                }
                Step::Sweep => {
                    store.sweep();
                    for (m, l) in models.iter_mut().zip(&limits) {
                        forget_if_full(m, l, now);
                    }
                }
                // Time runs forwards here (concurrency, see above); settlements of costs are
                // covered one limit at a time.
                _ => {}
            }
            let now = clock.now();
            let ops: Vec<_> = keys.iter().zip(&limits)
                .map(|(key, limit)| Op { key: *key, limit: *limit, cost: 0, failure: Default::default() })
                .collect();
            let (_, usage) = store.usage_now(&ops);
            for ((u, m), l) in usage.iter().zip(&models).zip(&limits) {
                prop_assert_eq!(*u, m.usage(l, now), "usage of {:?} at {}", l, now);
            }
        }
    }
}
