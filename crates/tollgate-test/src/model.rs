//! The property-test driver that compares stores with tollgate-core's pure algorithms: it
//! applies random [`Step`]s to one bucket (or one decision's buckets) in every store under test
//! and to a [`BucketState`] model, and checks that every verdict, spend, settlement and usage
//! agrees, to the microsecond. The memory store's and the Lua scripts' property tests both run
//! it.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tokio::runtime::Runtime;
use tollgate::key::{partition_hash, BucketName};
use tollgate::store::{Mode, Op, Route, Settlement, Store};
use tollgate::{Algorithm, Clock, ManualClock, Timestamp};
use tollgate_core::{BucketState, Limit};

use crate::strategies::Step;

/// Where every case starts.
pub const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

/// The bucket keys `store` gives the limits `labels` of one rule (`prop`, id 0) in the
/// partition `partition`, named as the limiter names them.
pub fn bucket_keys<S: Store>(store: &S, partition: &str, labels: &[&'static str]) -> Vec<S::Key> {
    labels
        .iter()
        .map(|label| {
            store.bucket_key(&BucketName {
                rule: "prop",
                rule_id: 0,
                limit: label,
                partition: &[partition],
                partition_hash: partition_hash(0, &[partition]),
                limit_salt: partition_hash(1, &[label]),
            })
        })
        .collect()
}

/// The stores under test, with their names for failure messages, and how they behave where
/// stores may differ.
pub struct Stores<'a, S: Store> {
    /// Each store, named.
    pub stores: &'a [(&'a S, &'a str)],
    /// The runtime the stores' futures run on.
    pub rt: &'a Runtime,
    /// The clock every store reads.
    pub clock: &'a ManualClock,
    /// Whether a store forgets a bucket that is full when it writes it (the memory store does;
    /// a Redis key instead expires by Redis's own clock). The model forgets it at the same
    /// moments: a full bucket equals a new one, so this only shows if time later goes
    /// backwards, which the system clock never does (it is monotonic) and the manual clock here
    /// does.
    pub forgets_full: bool,
    /// What [`Step::Sweep`] does: forget every full bucket now (the memory store's sweep), or
    /// nothing.
    pub sweep: &'a dyn Fn(),
}

fn forget_if_full(model: &mut BucketState, limit: &Limit, now: Timestamp) {
    if model.ttl_us(limit, now) == 0 {
        *model = BucketState::new(limit);
    }
}

fn op<K>(key: &K, limit: Limit, cost: u64) -> Op<K>
where
    K: Clone,
{
    Op {
        key: key.clone(),
        limit,
        cost,
        failure: Default::default(),
    }
}

impl<S: Store> Stores<'_, S> {
    /// One limit: every step on `keys[i]` in `stores[i]`, and on the model. Time may go
    /// backwards, except for concurrency: stores prune expired leases for good, where the pure
    /// function (which cannot mutate while evaluating) would count them again; both never
    /// over-admit, but they differ.
    pub fn one_limit(
        &self,
        keys: &[S::Key],
        limit: Limit,
        steps: Vec<Step>,
    ) -> Result<(), TestCaseError> {
        let (rt, clock) = (self.rt, self.clock);
        for ((store, _), key) in self.stores.iter().zip(keys) {
            rt.block_on(store.reset(std::slice::from_ref(key)))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        clock.set(T0);
        let mut model = BucketState::new(&limit);
        let mut last_spend = clock.now();
        let mut lease = 1u64;
        let forget = |model: &mut BucketState, now| {
            if self.forgets_full {
                forget_if_full(model, &limit, now);
            }
        };
        for s in steps {
            let now = clock.now();
            match s {
                Step::Advance(us) => clock.advance(Duration::from_micros(us)),
                Step::Back(us) if limit.algorithm() != Algorithm::Concurrency => {
                    clock.set(Timestamp::from_micros(now.as_micros().saturating_sub(us)));
                }
                Step::Back(_) => {}
                Step::Spend(c) | Step::Peek(c) => {
                    let spend = matches!(s, Step::Spend(_));
                    let cost = if limit.algorithm() == Algorithm::Concurrency {
                        u64::from(spend)
                    } else {
                        c
                    };
                    let mode = if spend { Mode::Spend } else { Mode::Peek };
                    if spend {
                        lease += 1;
                    }
                    let want = model.evaluate(&limit, now, cost);
                    for ((store, name), key) in self.stores.iter().zip(keys) {
                        let out = rt
                            .block_on(store.decide(&[op(key, limit, cost)], mode, lease, None))
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(out.now, now);
                        prop_assert_eq!(
                            out.verdicts[0],
                            want,
                            "{}: {:?} at {} cost {}",
                            name,
                            limit,
                            now,
                            cost
                        );
                        prop_assert_eq!(out.spent, spend && want.admitted);
                    }
                    if spend && want.admitted {
                        model.spend(&limit, now, cost, lease);
                        forget(&mut model, now);
                        last_spend = now;
                    }
                }
                Step::Refund(c) | Step::Charge(c) => {
                    let refund = matches!(s, Step::Refund(_));
                    if refund {
                        model.refund(&limit, now, last_spend, c);
                    } else {
                        model.charge(&limit, now, last_spend, c);
                    }
                    forget(&mut model, now);
                    for ((store, _), key) in self.stores.iter().zip(keys) {
                        let (key, spent_at) = (key.clone(), last_spend);
                        let item = if refund {
                            Settlement::Refund {
                                key,
                                limit,
                                spent_at,
                                cost: c,
                            }
                        } else {
                            Settlement::Charge {
                                key,
                                limit,
                                spent_at,
                                cost: c,
                            }
                        };
                        rt.block_on(store.settle(&[item], Route::PRIMARY))
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                }
                Step::Release | Step::Renew => {
                    let release = matches!(s, Step::Release);
                    let want = if release {
                        model.release(now, lease)
                    } else {
                        model.renew(&limit, now, lease)
                    };
                    forget(&mut model, now);
                    for ((store, name), key) in self.stores.iter().zip(keys) {
                        let key = key.clone();
                        let item = if release {
                            Settlement::Release { key, limit, lease }
                        } else {
                            Settlement::Renew { key, limit, lease }
                        };
                        let found = rt
                            .block_on(store.settle(&[item], Route::PRIMARY))
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(
                            found == 1,
                            want && limit.algorithm() == Algorithm::Concurrency,
                            "{}",
                            name
                        );
                    }
                }
                Step::Sweep => {
                    (self.sweep)();
                    forget(&mut model, now);
                }
            }
            let now = clock.now();
            for ((store, name), key) in self.stores.iter().zip(keys) {
                let (_, usage) = rt
                    .block_on(store.usage(&[op(key, limit, 0)]))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(
                    usage[0],
                    model.usage(&limit, now),
                    "{}: usage of {:?} at {}",
                    name,
                    limit,
                    now
                );
            }
        }
        Ok(())
    }

    /// Several limits in one decision: all spend or none, each verdict equal to the model's.
    /// Time runs forwards (concurrency, see [`one_limit`](Self::one_limit)); settlements of
    /// costs are covered one limit at a time.
    ///
    /// With `request_ids`, every decision carries a fresh id (`{request_ids}-{step}`), and the
    /// same decision is then made again a microsecond later through every store: each must
    /// answer the first decision and spend nothing (the model checks the steps after).
    pub fn several_limits(
        &self,
        keys: &[Vec<S::Key>],
        limits: &[Limit],
        steps: Vec<Step>,
        request_ids: Option<&str>,
    ) -> Result<(), TestCaseError> {
        let (rt, clock) = (self.rt, self.clock);
        for ((store, _), ks) in self.stores.iter().zip(keys) {
            rt.block_on(store.reset(ks))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        clock.set(T0);
        let mut models: Vec<BucketState> = limits.iter().map(BucketState::new).collect();
        let mut lease = 1u64;
        for (n, s) in steps.into_iter().enumerate() {
            let now = clock.now();
            match s {
                Step::Advance(us) => clock.advance(Duration::from_micros(us)),
                Step::Spend(c) | Step::Peek(c) => {
                    let spend = matches!(s, Step::Spend(_));
                    let costs: Vec<u64> = limits
                        .iter()
                        .map(|l| {
                            if l.algorithm() == Algorithm::Concurrency {
                                u64::from(spend)
                            } else {
                                c
                            }
                        })
                        .collect();
                    if spend {
                        lease += 1;
                    }
                    let want: Vec<_> = models
                        .iter()
                        .zip(limits)
                        .zip(&costs)
                        .map(|((m, l), c)| m.evaluate(l, now, *c))
                        .collect();
                    let all = want.iter().all(|v| v.admitted);
                    let mode = if spend { Mode::Spend } else { Mode::Peek };
                    let id = request_ids.map(|prefix| format!("{prefix}-{n}"));
                    for ((store, name), ks) in self.stores.iter().zip(keys) {
                        let ops: Vec<_> = ks
                            .iter()
                            .zip(limits)
                            .zip(&costs)
                            .map(|((key, limit), cost)| op(key, *limit, *cost))
                            .collect();
                        let out = rt
                            .block_on(store.decide(&ops, mode, lease, id.as_deref()))
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(out.now, now);
                        prop_assert_eq!(
                            &out.verdicts[..],
                            &want[..],
                            "{}: {:?} at {} costs {:?}",
                            name,
                            limits,
                            now,
                            &costs
                        );
                        prop_assert_eq!(out.spent, spend && all);
                        let Some(id) = id.as_deref() else {
                            continue;
                        };
                        // An admission is answered again, later, as it was first made. Anything
                        // else is decided again: asked at the same instant, with nothing spent
                        // since, it comes out the same.
                        if out.spent {
                            clock.advance(Duration::from_micros(1));
                        }
                        for (again, other) in self.stores {
                            let replay = rt
                                .block_on(again.decide(&ops, mode, lease, Some(id)))
                                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                            prop_assert_eq!(replay.now, now, "{} replayed by {}", name, other);
                            prop_assert_eq!(
                                &replay.verdicts[..],
                                &want[..],
                                "{} replayed by {}",
                                name,
                                other
                            );
                            prop_assert_eq!(
                                replay.spent,
                                out.spent,
                                "{} replayed by {}",
                                name,
                                other
                            );
                        }
                        clock.set(now);
                    }
                    if spend && all {
                        for ((m, l), c) in models.iter_mut().zip(limits).zip(&costs) {
                            m.spend(l, now, *c, lease);
                        }
                    }
                }
                Step::Release => {
                    let want = models
                        .iter_mut()
                        .zip(limits)
                        .map(|(m, l)| {
                            m.release(now, lease) && l.algorithm() == Algorithm::Concurrency
                        })
                        .filter(|found| *found)
                        .count();
                    for ((store, name), ks) in self.stores.iter().zip(keys) {
                        let items: Vec<_> = ks
                            .iter()
                            .zip(limits)
                            .map(|(key, limit)| Settlement::Release {
                                key: key.clone(),
                                limit: *limit,
                                lease,
                            })
                            .collect();
                        let found = rt
                            .block_on(store.settle(&items, Route::PRIMARY))
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(found, want, "{}", name);
                    }
                }
                Step::Sweep => (self.sweep)(),
                _ => {}
            }
            let now = clock.now();
            for ((store, name), ks) in self.stores.iter().zip(keys) {
                let ops: Vec<_> = ks
                    .iter()
                    .zip(limits)
                    .map(|(key, limit)| op(key, *limit, 0))
                    .collect();
                let (_, usage) = rt
                    .block_on(store.usage(&ops))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                for ((u, m), l) in usage.iter().zip(&models).zip(limits) {
                    prop_assert_eq!(*u, m.usage(l, now), "{}: usage of {:?} at {}", name, l, now);
                }
            }
        }
        Ok(())
    }
}
