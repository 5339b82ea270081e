//! The conformance suite against every store: memory, Redis, Redis Cluster.

use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::{Limiter, ManualClock, Policy};
use tollgate_test::conformance::{run_all, Harness, MemoryHarness};
use tollgate_test::{RedisCluster, RedisServer};

/// Redis (standalone or cluster): every limiter gets its own key prefix, so scenarios never see
/// each other's buckets.
struct RedisHarness {
    urls: Vec<String>,
    cluster: bool,
    next: std::sync::atomic::AtomicU32,
}

impl Harness for RedisHarness {
    type S = RedisStore;
    async fn limiter(&self, policy: Policy, clock: ManualClock) -> Limiter<RedisStore> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = RedisConfig {
            prefix: format!("conformance{n}"),
            ..RedisConfig::default()
        };
        let store = if self.cluster {
            RedisStore::connect_cluster(&self.urls, config).await
        } else {
            RedisStore::connect_with(&self.urls[0], config).await
        }
        .expect("connects")
        .with_time_override(clock);
        Limiter::with_store(policy, store)
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
