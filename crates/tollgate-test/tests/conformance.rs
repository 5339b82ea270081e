//! The conformance suite against every store: memory, Redis, Redis Cluster, and the fallback
//! store in front of Redis and of memory.

use tollgate::store::fallback::{FallbackConfig, FallbackStore};
use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::{Limiter, ManualClock, MemoryStore, Policy};
use tollgate_test::conformance::{run_all, Harness, MemoryHarness};
use tollgate_test::{RedisCluster, RedisServer};

/// Redis (standalone or cluster): every limiter gets its own key prefix, so scenarios never see
/// each other's buckets.
struct RedisHarness {
    urls: Vec<String>,
    cluster: bool,
    next: std::sync::atomic::AtomicU32,
}

impl RedisHarness {
    /// A store with a key prefix of its own, on `clock`.
    async fn store(&self, clock: ManualClock) -> RedisStore {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = RedisConfig {
            prefix: format!("conformance{n}"),
            ..RedisConfig::default()
        };
        if self.cluster {
            RedisStore::connect_cluster(&self.urls, config).await
        } else {
            RedisStore::connect_with(&self.urls[0], config).await
        }
        .expect("connects")
        .with_time_override(clock)
    }
}

impl Harness for RedisHarness {
    type S = RedisStore;
    async fn limiter(&self, policy: Policy, clock: ManualClock) -> Limiter<RedisStore> {
        Limiter::with_store(policy, self.store(clock).await)
    }
}

/// The fallback store's settings for the suite: its denial cache expires on the real clock,
/// which the scenarios' manual clock does not move, so it is off (the cache has its own tests).
fn fallback_config() -> FallbackConfig {
    FallbackConfig {
        denial_cache: false,
        ..FallbackConfig::default()
    }
}

/// The fallback store in front of Redis, as the service runs it.
struct FallbackHarness(RedisHarness);

impl Harness for FallbackHarness {
    type S = FallbackStore<RedisStore>;
    async fn limiter(&self, policy: Policy, clock: ManualClock) -> Limiter<Self::S> {
        let primary = self.0.store(clock.clone()).await;
        Limiter::with_store(
            policy,
            FallbackStore::with_config(primary, fallback_config(), clock),
        )
    }
}

/// The fallback store in front of the memory store.
struct FallbackMemoryHarness;

impl Harness for FallbackMemoryHarness {
    type S = FallbackStore<MemoryStore>;
    async fn limiter(&self, policy: Policy, clock: ManualClock) -> Limiter<Self::S> {
        let primary = MemoryStore::with_clock(clock.clone());
        Limiter::with_store(
            policy,
            FallbackStore::with_config(primary, fallback_config(), clock),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    run_all(&MemoryHarness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conforms() {
    let server = RedisServer::start().expect("redis-server starts");
    let h = RedisHarness {
        urls: vec![server.url()],
        cluster: false,
        next: 0.into(),
    };
    run_all(&h).await;
    // Every key the suite left behind has a TTL.
    let keys = server
        .cli(&["--scan", "--pattern", "conformance*"])
        .unwrap();
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let ttl: i64 = server.cli(&["PTTL", key]).unwrap().trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_conforms() {
    let cluster = RedisCluster::start().expect("cluster starts");
    let h = RedisHarness {
        urls: cluster.urls(),
        cluster: true,
        next: 0.into(),
    };
    run_all(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_store_over_redis_conforms() {
    let server = RedisServer::start().expect("redis-server starts");
    let h = FallbackHarness(RedisHarness {
        urls: vec![server.url()],
        cluster: false,
        next: 0.into(),
    });
    run_all(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_store_over_memory_conforms() {
    run_all(&FallbackMemoryHarness).await;
}
