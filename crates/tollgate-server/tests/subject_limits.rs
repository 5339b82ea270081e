//! One subject's limits set while the service runs: applied at once, kept across reloads,
//! shared by the fleet through Redis, removed again; admin only.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tollgate_server::config::{RedisOptions, StoreConfig};
use tollgate_test::RedisServer;

const PER_USER: &str = r#"
[[rules]]
name = "glm"
match = { provider = "glm", user = "*" }
limits = [{ kind = "requests", amount = 60, per = "minute" }]

[[rules]]
name = "claude"
match = { provider = "claude", user = "*" }
limits = [{ kind = "requests", amount = 50, per = "minute" }]

[[rules]]
name = "per-tenant"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 1000, per = "minute" }]
"#;

fn premium() -> Value {
    json!({
        "subject": { "user": "premium_user" },
        "limits": [{ "kind": "requests", "amount": 3, "per": "minute" }]
    })
}

/// How many calls `user` makes on `provider` before the first denial (at most 100).
async fn admitted(s: &Service, user: &str, provider: &str) -> u32 {
    let mut n = 0;
    while n < 100 {
        let a = s
            .check(
                Some(ADMIN),
                json!({ "user": user, "provider": provider }),
                json!({}),
            )
            .await;
        if !a.allowed() {
            break;
        }
        n += 1;
    }
    n
}

async fn put(s: &Service, token: Option<&str>, body: Value) -> Answer {
    let mut rb = s.http.put(s.url("/v1/admin/subject-limits")).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    Answer {
        status,
        headers,
        body: r.json().await.unwrap_or(Value::Null),
    }
}

async fn delete(s: &Service, body: Value) -> u16 {
    s.http
        .delete(s.url("/v1/admin/subject-limits"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn subject_limits_apply_at_once_survive_reloads_and_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, format!("{PER_USER}{AUTH}")).unwrap();
    let mut c = tollgate_server::config::Config::load(&path).unwrap();
    c.server.http = "127.0.0.1:0".parse().unwrap();
    c.server.grpc = None;
    let s = start_config(c).await;

    // Admin only.
    assert_eq!(put(&s, Some(ACME), premium()).await.status, 403);
    // Set for every rule partitioned by user: glm and claude, not per-tenant.
    let a = put(&s, Some(ADMIN), premium()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["rules"], json!(["glm", "claude"]));
    assert_eq!(a.body["kept_in"], "memory");
    assert_eq!(a.body["replaced"], false);
    assert_eq!(admitted(&s, "premium_user", "glm").await, 3);
    assert_eq!(admitted(&s, "premium_user", "claude").await, 3);
    assert_eq!(admitted(&s, "someone", "claude").await, 50);

    // The file is reloaded: the setting stays.
    std::fs::write(&path, format!("{PER_USER}{AUTH}\n# edited\n")).unwrap();
    s.running.reload().unwrap();
    s.clock.advance(Duration::from_secs(60));
    assert_eq!(admitted(&s, "premium_user", "glm").await, 3);

    // Listed, then removed: the rule's own limits again.
    let l = s.get("/v1/admin/subject-limits", Some(ADMIN)).await;
    assert_eq!(l.body["settings"][0]["subject"]["user"], "premium_user");
    assert_eq!(l.body["settings"][0]["set_by"], "(admin)");
    assert_eq!(
        delete(&s, json!({ "subject": { "user": "premium_user" } })).await,
        200
    );
    assert_eq!(
        delete(&s, json!({ "subject": { "user": "premium_user" } })).await,
        404
    );
    s.clock.advance(Duration::from_secs(60));
    assert_eq!(admitted(&s, "premium_user", "glm").await, 60);

    // Bad settings are refused, naming what is wrong.
    let mut bad = premium();
    bad["limits"][0]["per"] = json!("fortnight");
    let a = put(&s, Some(ADMIN), bad).await;
    assert_eq!(a.status, 400);
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limits[0].per"));
    let a = put(
        &s,
        Some(ADMIN),
        json!({ "subject": { "model": "m" }, "limits": premium()["limits"] }),
    )
    .await;
    assert_eq!(a.status, 400, "no rule partitions by model: {}", a.body);
    let mut unknown = premium();
    unknown["rule"] = json!("nope");
    assert_eq!(put(&s, Some(ADMIN), unknown).await.status, 404);
    s.stop().await;
}

fn on_redis(url: &str) -> tollgate_server::config::Config {
    let mut c = config(PER_USER);
    c.server.grpc = None;
    c.store = StoreConfig::Redis {
        url: url.to_owned(),
        options: RedisOptions::default(),
    };
    c
}

#[tokio::test]
async fn with_redis_the_fleet_shares_subject_limits() {
    let redis = RedisServer::start().unwrap();
    let a = start_config(on_redis(&redis.url())).await;
    let b = start_config(on_redis(&redis.url())).await;
    a.until_ready().await;
    b.until_ready().await;

    let set = put(&a, None, premium()).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["kept_in"], "redis");

    // The other instance applies it within about a second (it reads Redis every second).
    eventually("instance b to apply the setting", || async {
        b.get("/v1/admin/subject-limits", None).await.body["settings"]
            .as_array()
            .is_some_and(|s| s.len() == 1)
    })
    .await;
    assert_eq!(admitted(&b, "premium_user", "claude").await, 3);

    // An instance started later reads it at start.
    let c = start_config(on_redis(&redis.url())).await;
    eventually("a new instance to read the settings", || async {
        c.get("/v1/admin/subject-limits", None).await.body["settings"]
            .as_array()
            .is_some_and(|s| s.len() == 1)
    })
    .await;

    // Removed on one, removed on all.
    assert_eq!(
        delete(&b, json!({ "subject": { "user": "premium_user" } })).await,
        200
    );
    eventually("instance a to drop the setting", || async {
        a.get("/v1/admin/subject-limits", None).await.body["settings"]
            .as_array()
            .is_some_and(|s| s.is_empty())
    })
    .await;

    // Redis gone: a setting is refused rather than applied on one instance alone.
    drop(redis);
    let refused = put(&a, None, premium()).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        a.get("/v1/admin/subject-limits", None).await.body["settings"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for s in [a, b, c] {
        s.stop().await;
    }
}

#[tokio::test]
async fn the_subjects_of_a_rule_are_listed_with_their_usage() {
    let s = start(&format!("{PER_USER}{AUTH}")).await;
    for (user, n) in [("u1", 1), ("u2", 2), ("u3", 3)] {
        for _ in 0..n {
            let a = s
                .check(
                    Some(ADMIN),
                    json!({ "user": user, "provider": "glm" }),
                    json!({}),
                )
                .await;
            assert!(a.allowed());
        }
    }
    assert_eq!(
        s.get("/v1/admin/subjects?rule=glm", Some(ACME))
            .await
            .status,
        403
    );
    let p = s
        .get("/v1/admin/subjects?rule=glm&limit=2", Some(ADMIN))
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["tracked"], 3);
    let first = p.body["subjects"].as_array().unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["subject"]["user"], "u1");
    assert_eq!(first[0]["limits"][0]["used"], 1);
    assert_eq!(first[1]["limits"][0]["used"], 2);
    let next = p.body["next"].as_str().unwrap();
    let p = s
        .http
        .get(s.url("/v1/admin/subjects"))
        .query(&[("rule", "glm"), ("limit", "2"), ("cursor", next)])
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(p["subjects"][0]["subject"]["user"], "u3");
    assert_eq!(p["subjects"][0]["limits"][0]["used"], 3);
    assert_eq!(p["next"], Value::Null);
    // Bounded pages, known rules.
    assert_eq!(
        s.get("/v1/admin/subjects?rule=glm&limit=5000", Some(ADMIN))
            .await
            .status,
        400
    );
    assert_eq!(
        s.get("/v1/admin/subjects?rule=nope", Some(ADMIN))
            .await
            .status,
        404
    );
    s.stop().await;
}
