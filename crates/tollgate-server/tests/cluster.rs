//! The service on a six-node Redis Cluster, over real HTTP.

mod common;

use common::*;
use serde_json::json;
use tollgate_server::config::{RedisOptions, StoreConfig};
use tollgate_test::RedisCluster;

const POLICY: &str = r#"
[[rules]]
name = "cluster-tenant"
match = { tenant = "*" }
limits = [
  { kind = "requests", amount = 3, per = "hour" },
  { kind = "tokens", amount = 1000, per = "hour" },
]

[[rules]]
name = "cluster-user"
match = { user = "*" }
limits = [{ kind = "requests", amount = 1, per = "hour" }]
"#;

fn on_cluster(cluster: &RedisCluster) -> tollgate_server::config::Config {
    let mut c = config(POLICY);
    c.store = StoreConfig::RedisCluster {
        nodes: cluster.urls(),
        options: RedisOptions {
            prefix: "svc-cluster".into(),
            // A loaded test machine must not degrade to the failure modes.
            deadline: std::time::Duration::from_secs(5),
            ..Default::default()
        },
    };
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_buckets_in_a_redis_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let a = start_config(on_cluster(&cluster)).await;
    let b = start_config(on_cluster(&cluster)).await;
    // The service connects in the background; ready once the cluster answers its probe.
    for svc in [&a, &b] {
        svc.until_ready().await;
    }
    let ready = a.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["store"], "redis-cluster");

    // Buckets are shared between the instances, across many tenants (so many slots).
    for i in 0..20 {
        let who = json!({ "tenant": format!("t{i}") });
        for n in 0..3 {
            let svc = if n % 2 == 0 { &a } else { &b };
            let r = svc.check(None, who.clone(), json!({ "tokens": 10 })).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let svc = if i % 2 == 0 { &b } else { &a };
        let d = svc.check(None, who.clone(), json!({})).await;
        assert_eq!(d.status, 429, "{}", d.body);
        assert_eq!(d.body["denied_by"]["rule"], "cluster-tenant");
        assert!(d.header("retry-after").is_some());
        assert_eq!(a.used(None, &format!("tenant=t{i}"), "tokens").await, 30);
    }

    // One decision over two rules whose buckets live in different slots: the user rule
    // denies, so what the tenant rule would have spent is not spent (all or nothing).
    let who = json!({ "tenant": "multi", "user": "u1" });
    let r = a.check(None, who.clone(), json!({ "tokens": 100 })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = b.check(None, who.clone(), json!({ "tokens": 100 })).await;
    assert_eq!(d.status, 429, "{}", d.body);
    assert_eq!(d.body["denied_by"]["rule"], "cluster-user");
    assert_eq!(a.used(None, "tenant=multi", "tokens").await, 100);
    assert_eq!(b.used(None, "tenant=multi", "requests").await, 1);

    // Reset through one instance is seen by the other. (An instance's fallback remembers the
    // denials it saw until they expire: `b` saw this one, so the reset goes through `b`.)
    let r = b
        .post("/v1/reset", None, json!({ "subject": { "user": "u1" } }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a.check(None, who, json!({ "tokens": 100 })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.used(None, "tenant=multi", "tokens").await, 200);
    a.stop().await;
    b.stop().await;
}
