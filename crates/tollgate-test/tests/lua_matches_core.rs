//! The Lua scripts against tollgate-core's pure algorithms: random operations at random times
//! on a real redis-server give the same verdicts, to the microsecond.

use std::time::Duration;

use proptest::prelude::*;
use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::store::{Mode, Op, Route, Settlement, Store};
use tollgate::{Algorithm, LimitKind, LimitSpec, ManualClock, Timestamp, UtcOffset, Window};
use tollgate_core::{BucketState, Limit};
use tollgate_test::RedisServer;

#[derive(Clone, Debug)]
enum Step {
    Advance(u64),
    Back(u64),
    Spend(u64),
    Peek(u64),
    Refund(u64),
    Charge(u64),
    Release,
    Renew,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..5_000_000).prop_map(Step::Advance),
        1 => (0u64..2_000_000).prop_map(Step::Back),
        6 => (0u64..40).prop_map(Step::Spend),
        2 => (0u64..40).prop_map(Step::Peek),
        2 => (0u64..40).prop_map(Step::Refund),
        1 => (0u64..60).prop_map(Step::Charge),
        1 => Just(Step::Release),
        1 => Just(Step::Renew),
    ]
}

fn limit() -> impl Strategy<Value = Limit> {
    let windows = prop_oneof![
        Just(Window::SECOND),
        Just(Window::MINUTE),
        Just(Window::Length(Duration::from_millis(1500))),
        Just(Window::HOUR),
    ];
    (0usize..5, 1u64..30, windows, 1u64..40, -86_399i32..86_400).prop_map(
        |(alg, amount, window, burst, off)| {
            let spec = match alg {
                0 => LimitSpec::new(LimitKind::Tokens, amount, window).burst(burst),
                1 => LimitSpec::new(LimitKind::Tokens, amount, window)
                    .algorithm(Algorithm::SlidingWindow),
                2 => LimitSpec::new(LimitKind::Tokens, amount, window)
                    .algorithm(Algorithm::SlidingLog),
                3 => LimitSpec::new(
                    LimitKind::Tokens,
                    amount,
                    if off % 2 == 0 {
                        Window::Month
                    } else {
                        Window::DAY
                    },
                )
                .algorithm(Algorithm::FixedWindow)
                .utc_offset(UtcOffset::from_seconds(off).unwrap()),
                _ => LimitSpec::concurrency(amount % 5 + 1).lease(Duration::from_secs(3)),
            };
            spec.build().unwrap()
        },
    )
}

struct Fixture {
    _server: RedisServer,
    rt: tokio::runtime::Runtime,
    store: RedisStore,
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
    Fixture {
        _server: server,
        rt,
        store,
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
            let key = f.store.bucket_key(&tollgate::key::BucketName {
                rule: "prop", rule_id: 0, limit: "l", partition: &[&format!("case-{case}")],
                partition_hash: 0, limit_salt: 0,
            });
            f.rt.block_on(f.store.reset(std::slice::from_ref(&key))).unwrap();
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
                        let op = Op { key: key.clone(), limit, cost, failure: Default::default() };
                        let mode = if spend { Mode::Spend } else { Mode::Peek };
                        if spend { lease += 1; }
                        let out = f.rt.block_on(f.store.decide(std::slice::from_ref(&op), mode, lease, None)).unwrap();
                        let want = model.evaluate(&limit, now, cost);
                        prop_assert_eq!(out.now, now);
                        prop_assert_eq!(out.verdicts[0], want, "{:?} at {} cost {}", limit, now, cost);
                        if spend && want.admitted {
                            model.spend(&limit, now, cost, lease);
                            last_spend = now;
                        }
                        prop_assert_eq!(out.spent, spend && want.admitted);
                    }
                    Step::Refund(c) | Step::Charge(c) => {
                        let item = if matches!(s, Step::Refund(_)) {
                            model.refund(&limit, now, last_spend, c);
                            Settlement::Refund { key: key.clone(), limit, spent_at: last_spend, cost: c }
                        } else {
                            model.charge(&limit, now, last_spend, c);
                            Settlement::Charge { key: key.clone(), limit, spent_at: last_spend, cost: c }
                        };
                        f.rt.block_on(f.store.settle(&[item], Route::PRIMARY)).unwrap();
                    }
                    Step::Release | Step::Renew => {
                        let (want, item) = if matches!(s, Step::Release) {
                            (model.release(now, lease), Settlement::Release { key: key.clone(), limit, lease })
                        } else {
                            (model.renew(&limit, now, lease), Settlement::Renew { key: key.clone(), limit, lease })
                        };
                        let found = f.rt.block_on(f.store.settle(&[item], Route::PRIMARY)).unwrap();
                        prop_assert_eq!(found == 1, want && limit.algorithm() == Algorithm::Concurrency);
                    }
                }
                let now = f.clock.now_ts();
                let (_, usage) = f.rt.block_on(f.store.usage(&[Op { key: key.clone(), limit, cost: 0, failure: Default::default() }])).unwrap();
                prop_assert_eq!(usage[0], model.usage(&limit, now), "usage of {:?} at {}", limit, now);
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
