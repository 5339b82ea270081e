//! The Lua scripts against tollgate-core's pure algorithms: random operations at random times
//! on a real redis-server give the same verdicts, to the microsecond.

use std::time::Duration;

use proptest::prelude::*;
use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::store::{Mode, Op, Route, Settlement, Store};
use tollgate::{Algorithm, ManualClock, Timestamp};
use tollgate_core::BucketState;
use tollgate_test::strategies::{limit, step, Step};
use tollgate_test::RedisServer;

struct Fixture {
    _server: RedisServer,
    rt: tokio::runtime::Runtime,
    /// The store as it runs in production: GCRA and concurrency through the standalone scripts.
    store: RedisStore,
    /// The same server through the general scripts only.
    general: RedisStore,
    clock: ManualClock,
}

fn fixture() -> Fixture {
    let server = RedisServer::start().expect("redis-server starts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
    let store = rt
        .block_on(RedisStore::connect_with(
            &server.url(),
            RedisConfig::default(),
        ))
        .unwrap()
        .with_time_override(clock.clone());
    let general = rt
        .block_on(RedisStore::connect_with(
            &server.url(),
            RedisConfig::default(),
        ))
        .unwrap()
        .with_time_override(clock.clone())
        .with_general_scripts();
    Fixture {
        _server: server,
        rt,
        store,
        general,
        clock,
    }
}

thread_local! {
    static FIXTURE: Fixture = fixture();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn lua_equals_core(limit in limit(), steps in proptest::collection::vec(step(), 1..40), case in any::<u64>()) {
        FIXTURE.with(|f| {
            // Every step on two buckets: one through the store's fast scripts (GCRA and
            // concurrency), one through the general scripts; both must equal the model.
            let stores = [(&f.store, "fast"), (&f.general, "general")];
            let keys = stores.map(|(store, path)| store.bucket_key(&tollgate::key::BucketName {
                rule: "prop", rule_id: 0, limit: "l", partition: &[&format!("case-{case}-{path}")],
                partition_hash: 0, limit_salt: 0,
            }));
            for ((store, _), key) in stores.iter().zip(&keys) {
                f.rt.block_on(store.reset(std::slice::from_ref(key))).unwrap();
            }
            f.clock.set(Timestamp::from_secs(1_700_000_000));
            let mut model = BucketState::new(&limit);
            let mut last_spend = f.clock.now_ts();
            let mut lease = 1u64;
            for s in steps {
                let now = f.clock.now_ts();
                match s {
                    Step::Advance(us) => f.clock.advance(Duration::from_micros(us)),
                    // Redis prunes expired leases for good, where the pure function (which cannot
                    // mutate while evaluating) would count them again if time went backwards:
                    // both never over-admit, but they differ, so concurrency runs forwards only.
                    Step::Back(us) if limit.algorithm() != Algorithm::Concurrency => {
                        f.clock.set(Timestamp::from_micros(now.as_micros().saturating_sub(us)))
                    }
                    Step::Back(_) => {}
                    Step::Spend(c) | Step::Peek(c) => {
                        let spend = matches!(s, Step::Spend(_));
                        let cost = if limit.algorithm() == Algorithm::Concurrency { u64::from(spend) } else { c };
                        let mode = if spend { Mode::Spend } else { Mode::Peek };
                        if spend { lease += 1; }
                        let want = model.evaluate(&limit, now, cost);
                        for ((store, path), key) in stores.iter().zip(&keys) {
                            let op = Op { key: key.clone(), limit, cost, failure: Default::default() };
                            let out = f.rt.block_on(store.decide(std::slice::from_ref(&op), mode, lease, None)).unwrap();
                            prop_assert_eq!(out.now, now);
                            prop_assert_eq!(out.verdicts[0], want, "{} scripts: {:?} at {} cost {}", path, limit, now, cost);
                            prop_assert_eq!(out.spent, spend && want.admitted);
                        }
                        if spend && want.admitted {
                            model.spend(&limit, now, cost, lease);
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
                        for ((store, _), key) in stores.iter().zip(&keys) {
                            let item = if refund {
                                Settlement::Refund { key: key.clone(), limit, spent_at: last_spend, cost: c }
                            } else {
                                Settlement::Charge { key: key.clone(), limit, spent_at: last_spend, cost: c }
                            };
                            f.rt.block_on(store.settle(&[item], Route::PRIMARY)).unwrap();
                        }
                    }
                    Step::Release | Step::Renew => {
                        let release = matches!(s, Step::Release);
                        let want = if release { model.release(now, lease) } else { model.renew(&limit, now, lease) };
                        for ((store, path), key) in stores.iter().zip(&keys) {
                            let item = if release {
                                Settlement::Release { key: key.clone(), limit, lease }
                            } else {
                                Settlement::Renew { key: key.clone(), limit, lease }
                            };
                            let found = f.rt.block_on(store.settle(&[item], Route::PRIMARY)).unwrap();
                            prop_assert_eq!(found == 1, want && limit.algorithm() == Algorithm::Concurrency, "{} scripts", path);
                        }
                    }
                    // Redis forgets a key when its TTL runs out, by its own clock: nothing to sweep.
                    Step::Sweep => {}
                }
                let now = f.clock.now_ts();
                for ((store, path), key) in stores.iter().zip(&keys) {
                    let (_, usage) = f.rt.block_on(store.usage(&[Op { key: key.clone(), limit, cost: 0, failure: Default::default() }])).unwrap();
                    prop_assert_eq!(usage[0], model.usage(&limit, now), "{} scripts: usage of {:?} at {}", path, limit, now);
                }
            }
            Ok(())
        })?;
    }

    /// Decisions over several limits at once (all spend or none), through both script paths.
    #[test]
    fn several_limits_equal_core(
        limits in proptest::collection::vec(limit(), 1..4),
        steps in proptest::collection::vec(step(), 1..30),
        case in any::<u64>(),
    ) {
        FIXTURE.with(|f| {
            let stores = [(&f.store, "fast"), (&f.general, "general")];
            let names = &["l0", "l1", "l2", "l3"][..limits.len()];
            let keys: Vec<Vec<_>> = stores.iter().map(|(store, path)| {
                let partition = format!("multi-{case}-{path}");
                names.iter().map(|name| store.bucket_key(&tollgate::key::BucketName {
                    rule: "prop", rule_id: 0, limit: name, partition: &[&partition],
                    partition_hash: 0, limit_salt: 0,
                })).collect()
            }).collect();
            for ((store, _), ks) in stores.iter().zip(&keys) {
                f.rt.block_on(store.reset(ks)).unwrap();
            }
            f.clock.set(Timestamp::from_secs(1_700_000_000));
            let mut models: Vec<BucketState> = limits.iter().map(BucketState::new).collect();
            let mut lease = 1u64;
            for s in steps {
                let now = f.clock.now_ts();
                match s {
                    Step::Advance(us) => f.clock.advance(Duration::from_micros(us)),
                    Step::Spend(c) | Step::Peek(c) => {
                        let spend = matches!(s, Step::Spend(_));
                        let costs: Vec<u64> = limits.iter().map(|l| {
                            if l.algorithm() == Algorithm::Concurrency { u64::from(spend) } else { c }
                        }).collect();
                        if spend { lease += 1; }
                        let want: Vec<_> = models.iter().zip(&limits).zip(&costs)
                            .map(|((m, l), c)| m.evaluate(l, now, *c)).collect();
                        let all = want.iter().all(|v| v.admitted);
                        for ((store, path), ks) in stores.iter().zip(&keys) {
                            let ops: Vec<_> = ks.iter().zip(&limits).zip(&costs)
                                .map(|((key, limit), cost)| Op { key: key.clone(), limit: *limit, cost: *cost, failure: Default::default() })
                                .collect();
                            let mode = if spend { Mode::Spend } else { Mode::Peek };
                            let out = f.rt.block_on(store.decide(&ops, mode, lease, None)).unwrap();
                            prop_assert_eq!(out.now, now);
                            prop_assert_eq!(&out.verdicts[..], &want[..], "{} scripts: {:?} at {} costs {:?}", path, limits, now, costs);
                            prop_assert_eq!(out.spent, spend && all);
                        }
                        if spend && all {
                            for ((m, l), c) in models.iter_mut().zip(&limits).zip(&costs) {
                                m.spend(l, now, *c, lease);
                            }
                        }
                    }
                    Step::Release => {
                        let want: Vec<bool> = models.iter_mut().zip(&limits)
                            .map(|(m, l)| m.release(now, lease) && l.algorithm() == Algorithm::Concurrency)
                            .collect();
                        let want = want.iter().filter(|w| **w).count();
                        for ((store, path), ks) in stores.iter().zip(&keys) {
                            let items: Vec<_> = ks.iter().zip(&limits)
                                .map(|(key, limit)| Settlement::Release { key: key.clone(), limit: *limit, lease })
                                .collect();
                            let found = f.rt.block_on(store.settle(&items, Route::PRIMARY)).unwrap();
                            prop_assert_eq!(found, want, "{} scripts", path);
                        }
                    }
                    // Time runs forwards here (concurrency, see above); settlements of costs are
                    // covered one limit at a time.
                    _ => {}
                }
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Decisions with a request id (every cluster decision has one) through both script
    /// paths equal the model; the same id again, through either path, returns the first
    /// decision and spends nothing.
    #[test]
    fn request_ids_equal_core(
        limits in proptest::collection::vec(limit(), 1..4),
        steps in proptest::collection::vec(step(), 1..30),
        case in any::<u64>(),
    ) {
        FIXTURE.with(|f| {
            let stores = [(&f.store, "fast"), (&f.general, "general")];
            let names = &["l0", "l1", "l2", "l3"][..limits.len()];
            let keys: Vec<Vec<_>> = stores.iter().map(|(store, path)| {
                let partition = format!("idem-{case}-{path}");
                names.iter().map(|name| store.bucket_key(&tollgate::key::BucketName {
                    rule: "prop", rule_id: 0, limit: name, partition: &[&partition],
                    partition_hash: 0, limit_salt: 0,
                })).collect()
            }).collect();
            for ((store, _), ks) in stores.iter().zip(&keys) {
                f.rt.block_on(store.reset(ks)).unwrap();
            }
            f.clock.set(Timestamp::from_secs(1_700_000_000));
            let mut models: Vec<BucketState> = limits.iter().map(BucketState::new).collect();
            let mut lease = 1u64;
            for (n, s) in steps.into_iter().enumerate() {
                let now = f.clock.now_ts();
                match s {
                    Step::Advance(us) => f.clock.advance(Duration::from_micros(us)),
                    Step::Spend(c) | Step::Peek(c) => {
                        let spend = matches!(s, Step::Spend(_));
                        let costs: Vec<u64> = limits.iter().map(|l| {
                            if l.algorithm() == Algorithm::Concurrency { u64::from(spend) } else { c }
                        }).collect();
                        if spend { lease += 1; }
                        let want: Vec<_> = models.iter().zip(&limits).zip(&costs)
                            .map(|((m, l), c)| m.evaluate(l, now, *c)).collect();
                        let all = want.iter().all(|v| v.admitted);
                        let mode = if spend { Mode::Spend } else { Mode::Peek };
                        for ((store, path), ks) in stores.iter().zip(&keys) {
                            let ops: Vec<_> = ks.iter().zip(&limits).zip(&costs)
                                .map(|((key, limit), cost)| Op { key: key.clone(), limit: *limit, cost: *cost, failure: Default::default() })
                                .collect();
                            let id = format!("req-{case}-{n}");
                            let out = f.rt.block_on(store.decide(&ops, mode, lease, Some(&id))).unwrap();
                            prop_assert_eq!(out.now, now);
                            prop_assert_eq!(&out.verdicts[..], &want[..], "{} scripts: {:?} at {} costs {:?}", path, limits, now, costs);
                            prop_assert_eq!(out.spent, spend && all);
                            // The same request again, later, through each path: the first
                            // decision, nothing spent (the model checks the next steps).
                            f.clock.advance(Duration::from_micros(1));
                            for (again, other) in &stores {
                                let replay = f.rt.block_on(again.decide(&ops, mode, lease, Some(&id))).unwrap();
                                prop_assert_eq!(replay.now, now, "{} replayed by {}", path, other);
                                prop_assert_eq!(&replay.verdicts[..], &want[..], "{} replayed by {}", path, other);
                                prop_assert_eq!(replay.spent, out.spent, "{} replayed by {}", path, other);
                            }
                            f.clock.set(now);
                        }
                        if spend && all {
                            for ((m, l), c) in models.iter_mut().zip(&limits).zip(&costs) {
                                m.spend(l, now, *c, lease);
                            }
                        }
                    }
                    // Time runs forwards here (concurrency, see above).
                    _ => {}
                }
            }
            Ok(())
        })?;
    }
}

trait NowTs {
    fn now_ts(&self) -> Timestamp;
}
impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        tollgate::Clock::now(self)
    }
}
