//! The service on Redis: two instances share their buckets through a private redis-server.

mod common;

use common::*;
use serde_json::json;
use tollgate_server::config::{RedisOptions, StoreConfig};
use tollgate_test::RedisServer;

const POLICY: &str = r#"
[[rules]]
name = "redis-two-per-hour"
match = { tenant = "*" }
limits = [
  { kind = "requests", amount = 2, per = "hour" },
  { kind = "tokens", amount = 10000, per = "hour" },
  { kind = "concurrency", amount = 1 },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_buckets_in_redis() {
    let redis = RedisServer::start().unwrap();
    // A generous deadline: a loaded test machine must not degrade to the failure modes.
    let toml = format!(
        "{POLICY}\n[redis]\nurl = \"{}\"\nprefix = \"svc-test\"\ndeadline = \"5s\"\n",
        redis.url()
    );
    let a = start(&toml).await;
    let b = start(&toml).await;
    assert!(a.running.grpc.is_some());
    // Each instance connects in the background, and decides by the failure modes (fail open:
    // spending nothing in Redis) until it has: wait until both are on Redis.
    for svc in [&a, &b] {
        svc.until_ready().await;
    }
    let ready = a.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["store"], "redis");

    let who = json!({ "tenant": "shared" });
    assert!(a
        .check(None, who.clone(), json!({ "tokens": 100 }))
        .await
        .allowed());
    assert!(b
        .check(None, who.clone(), json!({ "tokens": 100 }))
        .await
        .allowed());
    let d = a.check(None, who.clone(), json!({})).await;
    assert_eq!(d.status, 429, "{}", d.body);
    assert_eq!(d.body["denied_by"]["rule"], "redis-two-per-hour");
    assert!(d.header("retry-after").is_some());
    assert_eq!(b.used(None, "tenant=shared", "tokens").await, 200);

    // Permits on Redis: the slot is shared too, and a cancel gives it back.
    let who = json!({ "tenant": "permits" });
    let p = a
        .post(
            "/v1/reserve",
            None,
            json!({ "subject": who, "cost": { "tokens": 500 } }),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let id = p.body["permit"]["id"].as_str().unwrap().to_owned();
    let q = b.post("/v1/reserve", None, json!({ "subject": who })).await;
    assert_eq!(q.status, 429, "{}", q.body);
    assert_eq!(q.body["reason"], "concurrency");
    let c = a
        .post(&format!("/v1/permits/{id}/cancel"), None, json!({}))
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let q = b.post("/v1/reserve", None, json!({ "subject": who })).await;
    assert_eq!(q.status, 200, "{}", q.body);

    // Reset through one instance is seen by the other. (Each instance's fallback remembers
    // the denials it saw until they expire: `a` saw one, so the reset goes through `a`.)
    let r = a
        .post(
            "/v1/reset",
            None,
            json!({ "subject": { "tenant": "shared" } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(b
        .check(None, json!({ "tenant": "shared" }), json!({}))
        .await
        .allowed());
    assert!(a
        .check(None, json!({ "tenant": "shared" }), json!({}))
        .await
        .allowed());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_unreachable_redis_fails_the_start_with_a_redacted_message() {
    let mut c = config(POLICY);
    c.store = StoreConfig::Redis {
        url: "redis://user:secret@127.0.0.1:1/".into(),
        options: RedisOptions {
            fallback: false,
            ..Default::default()
        },
    };
    let e = tollgate_server::server::start(tollgate_server::server::Options {
        config: c,
        ..Default::default()
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("redis://user:***@127.0.0.1:1/"), "{e}");
    assert!(!e.contains("secret"), "{e}");
}

#[tokio::test]
async fn with_the_fallback_the_service_starts_while_redis_is_down() {
    // Rules fail open by default; `closed` ones answer 503 (not a rate-limit denial).
    let toml = format!(
        "{}\n[redis]\nurl = \"redis://127.0.0.1:1/\"\n",
        POLICY.replace(
            "name = \"redis-two-per-hour\"",
            "name = \"down\"\nfailure_mode = \"closed\""
        )
    );
    let s = start(&format!(
        "{toml}\n[[rules]]\nname = \"open-rule\"\nmatch = {{ user = \"*\" }}\nlimits = [{{ kind = \"requests\", amount = 1, per = \"hour\" }}]\n"
    ))
    .await;
    let a = s.check(None, json!({ "user": "u" }), json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = s.check(None, json!({ "tenant": "t" }), json!({})).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.body["outcome"], "unavailable");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_stays_ready_but_degraded_while_redis_is_down_behind_the_fallback() {
    let mut redis = RedisServer::start().unwrap();
    let toml = |ready_when_degraded: bool| {
        format!(
            "{POLICY}\n[server]\nready_when_degraded = {ready_when_degraded}\n[redis]\nurl = \"{}\"\nprefix = \"readyz\"\ndeadline = \"2s\"\n",
            redis.url()
        )
    };
    let s = start(&toml(true)).await;
    let strict = start(&toml(false)).await;
    for svc in [&s, &strict] {
        // It connects in the background: ready once Redis answers the probe.
        svc.until_ready().await;
        let r = svc.get("/readyz", None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["status"], "ready");
        assert_eq!(r.body["breaker"], "closed");
    }
    // Redis decides: not degraded, and no header says so.
    let a = s.check(None, json!({ "tenant": "up" }), json!({})).await;
    assert_eq!((a.status, &a.body["degraded"]), (200, &json!(false)));
    assert_eq!(a.header("x-tollgate-degraded"), None);

    redis.kill();
    // Redis is gone: the failure modes decide (by default each instance enforces its share of
    // the limit), so the service can still decide and says it is degraded.
    let r = s.get("/readyz", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "degraded");
    assert!(
        r.body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        r.body
    );
    let r = strict.get("/readyz", None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["status"], "degraded");

    // Failing calls open the breaker; decisions go on, marked degraded, and the local share
    // (2 an hour: one instance expected) is a limit still.
    for i in 0..6 {
        let a = s.check(None, json!({ "tenant": "down" }), json!({})).await;
        assert_eq!(a.status, if i < 2 { 200 } else { 429 }, "{}", a.body);
        assert_eq!(a.body["degraded"], true, "{}", a.body);
        assert_eq!(a.header("x-tollgate-degraded"), Some("true"));
        assert_eq!(
            a.body["limits"][0]["remaining"],
            json!(1u64.saturating_sub(i)),
            "what the local share knows, not a full bucket: {}",
            a.body
        );
    }
    // Usage is the shared state's, which cannot be read: it says so, not `used: 0`.
    let u = s.get("/v1/usage?tenant=down", None).await;
    assert_eq!(u.status, 503, "{}", u.body);
    assert!(
        u.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not be read")),
        "{}",
        u.body
    );
    // gRPC says so in the response metadata.
    let addr = s.running.grpc.unwrap();
    let mut rls = envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let answer = rls
        .should_rate_limit(envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor {
                entries: vec![envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry {
                    key: "tenant".into(),
                    value: "grpc-down".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        answer
            .metadata()
            .get("x-tollgate-degraded")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let r = s.get("/readyz", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "degraded");
    assert_eq!(r.body["breaker"], "open", "{}", r.body);
    let m = s.metrics().await;
    assert!(m.contains("tollgate_breaker_state 2"), "{m}");
    assert!(m.contains("tollgate_store_errors_total"), "{m}");
    assert!(m.contains("tollgate_degraded_decisions_total"), "{m}");

    // Redis returns: once the breaker has closed again (its probes are decisions), ready.
    redis.restart().unwrap();
    eventually("the breaker to close after Redis returns", || async {
        let _ = s.check(None, json!({ "tenant": "back" }), json!({})).await;
        s.get("/readyz", None).await.body["status"] == "ready"
    })
    .await;
    s.stop().await;
    strict.stop().await;
}

#[tokio::test]
async fn readyz_is_503_when_redis_without_the_fallback_stops_answering() {
    let mut redis = RedisServer::start().unwrap();
    let mut c = config(POLICY);
    c.store = StoreConfig::Redis {
        url: redis.url(),
        options: RedisOptions {
            fallback: false,
            prefix: "readyz-nofallback".into(),
            ..Default::default()
        },
    };
    let s = start_config(c).await;
    let r = s.get("/readyz", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ready");
    assert!(r.body.get("breaker").is_none(), "{}", r.body);
    redis.kill();
    let r = s.get("/readyz", None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["status"], "unavailable");
    // Decisions fail as 503 too, with a message, not a panic.
    let a = s.check(None, json!({ "tenant": "t" }), json!({})).await;
    assert_eq!(a.status, 503, "{}", a.body);
    s.stop().await;
}
