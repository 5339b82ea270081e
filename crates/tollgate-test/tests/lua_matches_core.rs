//! The Lua scripts against tollgate-core's pure algorithms: random operations at random times
//! on a real redis-server give the same verdicts, to the microsecond (the driver is
//! [`tollgate_test::model`], shared with the memory store's tests).

use proptest::prelude::*;
use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::ManualClock;
use tollgate_test::model::{bucket_keys, Stores, T0};
use tollgate_test::strategies::{limit, step};
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
    let clock = ManualClock::new(T0);
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

impl Fixture {
    /// Both stores of the one server: the fast scripts as in production, and the general
    /// scripts. Redis forgets a key when its TTL runs out, by its own clock: nothing to sweep.
    fn stores<'a>(&'a self, both: &'a [(&'a RedisStore, &'a str); 2]) -> Stores<'a, RedisStore> {
        Stores {
            stores: both,
            rt: &self.rt,
            clock: &self.clock,
            forgets_full: false,
            sweep: &|| {},
        }
    }

    /// The keys of `labels` for the partition `{case}-{path}` in each store.
    fn keys(
        &self,
        case: &str,
        labels: &[&'static str],
    ) -> Vec<Vec<tollgate::store::redis::RedisKey>> {
        [(&self.store, "fast"), (&self.general, "general")]
            .iter()
            .map(|(store, path)| bucket_keys(*store, &format!("{case}-{path}"), labels))
            .collect()
    }
}

const LABELS: [&str; 4] = ["l0", "l1", "l2", "l3"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// One limit through both script paths.
    #[test]
    fn lua_equals_core(limit in limit(), steps in proptest::collection::vec(step(), 1..40), case in any::<u64>()) {
        FIXTURE.with(|f| {
            let both = [(&f.store, "fast"), (&f.general, "general")];
            let keys: Vec<_> = f.keys(&format!("case-{case}"), &LABELS[..1]).into_iter().flatten().collect();
            f.stores(&both).one_limit(&keys, limit, steps)
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
            let both = [(&f.store, "fast"), (&f.general, "general")];
            let keys = f.keys(&format!("multi-{case}"), &LABELS[..limits.len()]);
            f.stores(&both).several_limits(&keys, &limits, steps, None)
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Decisions with a request id through both script paths equal the model; the same id
    /// again, through either path, answers an admission as it was first made and spends
    /// nothing, and decides anything else again.
    #[test]
    fn request_ids_equal_core(
        limits in proptest::collection::vec(limit(), 1..4),
        steps in proptest::collection::vec(step(), 1..30),
        case in any::<u64>(),
    ) {
        FIXTURE.with(|f| {
            let both = [(&f.store, "fast"), (&f.general, "general")];
            let keys = f.keys(&format!("idem-{case}"), &LABELS[..limits.len()]);
            f.stores(&both).several_limits(&keys, &limits, steps, Some(&format!("req-{case}")))
        })?;
    }
}
