//! Answers that must not mislead: a reset that matches nothing, a concurrency denial, a cost
//! that can never fit.

mod common;

use common::*;
use serde_json::json;

const USER_MODEL: &str = r#"
[[rules]]
name = "per-user-model"
match = { user = "*", model = "*" }
limits = [{ kind = "requests", amount = 2, per = "hour" }]

[[rules]]
name = "slots"
match = { tenant = "*" }
limits = [{ kind = "concurrency", amount = 1, lease = "5m" }]

[[rules]]
name = "tpm"
match = { team = "*" }
limits = [{ kind = "tokens", amount = 1000, per = "minute" }]
"#;

#[tokio::test]
async fn a_reset_that_matches_nothing_says_so() {
    let s = start(USER_MODEL).await;
    let alice = json!({ "user": "alice", "model": "gpt-4o" });
    for _ in 0..2 {
        assert!(s.check(None, alice.clone(), json!({})).await.allowed());
    }
    assert!(!s.check(None, alice.clone(), json!({})).await.allowed());

    // The subject lacks `model`: no rule applies, nothing is reset, and the answer says so.
    let a = s
        .post("/v1/reset", None, json!({ "subject": { "user": "alice" } }))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["reset"], false);
    assert_eq!(a.body["buckets"], 0);
    let message = a.body["message"].as_str().unwrap();
    assert!(message.starts_with("nothing matched"), "{message}");
    assert!(
        message.contains("\"per-user-model\" needs model, user"),
        "{message}"
    );
    assert!(!s.check(None, alice.clone(), json!({})).await.allowed());

    // The whole subject: one bucket, reset.
    let a = s
        .post("/v1/reset", None, json!({ "subject": alice.clone() }))
        .await;
    assert_eq!(
        (a.body["reset"].clone(), a.body["buckets"].clone()),
        (json!(true), json!(1))
    );
    assert!(s.check(None, alice.clone(), json!({})).await.allowed());

    // A rule that does not apply to the subject.
    let a = s
        .post(
            "/v1/reset",
            None,
            json!({ "subject": alice, "rule": "slots" }),
        )
        .await;
    assert_eq!(
        (a.body["reset"].clone(), a.body["buckets"].clone()),
        (json!(false), json!(0))
    );
    assert!(a.body["message"]
        .as_str()
        .unwrap()
        .contains("\"slots\" needs tenant"));

    // A rule with no bucket in use.
    let a = s.post("/v1/reset", None, json!({ "rule": "tpm" })).await;
    assert_eq!(a.body["reset"], false, "{}", a.body);
    assert!(a.body["message"]
        .as_str()
        .unwrap()
        .contains("nothing to reset"));
    s.stop().await;
}

#[tokio::test]
async fn concurrency_denials_claim_no_window() {
    let s = start(USER_MODEL).await;
    let acme = json!({ "tenant": "acme" });
    let held = s
        .post("/v1/reserve", None, json!({ "subject": acme.clone() }))
        .await;
    assert_eq!(held.status, 200, "{}", held.body);
    let limits = held.body["limits"].as_array().unwrap();
    assert!(limits[0].get("window").is_none(), "{}", held.body);

    let denied = s
        .post("/v1/reserve", None, json!({ "subject": acme.clone() }))
        .await;
    assert_eq!(denied.status, 429, "{}", denied.body);
    assert_eq!(denied.body["reason"], "concurrency");
    assert!(
        denied.body["limits"][0].get("window").is_none(),
        "{}",
        denied.body
    );
    let message = denied.body["message"].as_str().unwrap();
    assert!(!message.contains("per "), "{message}");
    assert!(message.contains("no slot is free"), "{message}");
    assert!(message.contains("acquire"), "{message}");
    // What is known: the soonest lease expiry (the lease is 5 minutes).
    assert_eq!(denied.body["retry_after_ms"], 300_000);
    assert_eq!(denied.header("retry-after"), Some("300"));
    assert_eq!(denied.header("retry-after-ms"), Some("300000"));

    let usage = s.get("/v1/usage?tenant=acme", None).await;
    let slot = &usage.body["limits"][0];
    assert_eq!(slot["kind"], "concurrency");
    assert!(slot.get("window").is_none(), "{}", usage.body);
    s.stop().await;
}

#[tokio::test]
async fn a_cost_that_can_never_fit_is_413_and_not_to_be_retried() {
    let s = start(USER_MODEL).await;
    let team = json!({ "team": "a" });
    for path in ["/v1/check", "/v1/reserve"] {
        let a = s
            .post(
                path,
                None,
                json!({ "subject": team.clone(), "cost": { "tokens": 5000 } }),
            )
            .await;
        assert_eq!(a.status, 413, "{path}: {}", a.body);
        assert_eq!(a.body["outcome"], "too_large");
        assert_eq!(a.body["error_code"], "E4413");
        assert_eq!(a.header("x-should-retry"), Some("false"), "{path}");
        assert_eq!(a.header("retry-after"), None, "{path}");
    }
    // Peek reports the same outcome without refusing anything.
    let a = s
        .post(
            "/v1/peek",
            None,
            json!({ "subject": team.clone(), "cost": { "tokens": 5000 } }),
        )
        .await;
    assert_eq!(
        (a.status, a.body["outcome"].clone()),
        (200, json!("too_large"))
    );
    // A cost that fits later is a 429 with both retry headers.
    let a = s.check(None, team.clone(), json!({ "tokens": 1000 })).await;
    assert!(a.allowed());
    let a = s.check(None, team.clone(), json!({ "tokens": 500 })).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("retry-after"), Some("30"));
    assert_eq!(a.header("retry-after-ms"), Some("30000"));
    assert_eq!(a.header("x-should-retry"), None);

    s.stop().await;

    // Forward-auth too.
    let s = start(&format!(
        "{USER_MODEL}\n[forward_auth]\nattributes = {{ team = \"x-team\" }}\n"
    ))
    .await;
    let r = s
        .http
        .get(s.url("/v1/forward-auth"))
        .header("x-team", "a")
        .header("x-estimated-tokens", "5000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.headers()["x-should-retry"], "false");
    s.stop().await;
}

#[tokio::test]
async fn the_built_in_policy_limits_agent_keyed_user_less_and_empty_calls() {
    let mut c = tollgate_server::config::Config::default();
    c.server.http = "127.0.0.1:0".parse().unwrap();
    c.server.grpc = None;
    let s = start_config(c).await;
    for (subject, rule) in [
        (
            json!({ "agent": "did:agent:abc", "provider": "anthropic" }),
            "default-agent",
        ),
        (json!({ "provider": "glm" }), "default-anonymous"),
        (json!({}), "default-anonymous"),
        (json!({ "user": "u1" }), "default-user"),
    ] {
        let a = s
            .check(None, subject.clone(), json!({ "tokens": 10 }))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let limits = a.body["limits"].as_array().unwrap();
        assert_eq!(limits.len(), 2, "{subject}: {}", a.body);
        assert_eq!(limits[0]["rule"], rule, "{subject}");
        assert_eq!(a.header("x-ratelimit-limit-requests"), Some("60"));
    }
    s.stop().await;
}

#[tokio::test]
async fn unmatched_calls_are_refused_when_the_policy_says_so() {
    let s = start(&format!("unmatched = \"deny\"\n{USER_MODEL}")).await;
    let a = s.check(None, json!({ "region": "eu" }), json!({})).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.body["outcome"], "unmatched");
    assert_eq!(a.body["error_code"], "E4403");
    assert_eq!(a.header("retry-after"), None);
    assert!(s
        .metrics()
        .await
        .contains("tollgate_unmatched_total{action=\"deny\"}"));
    // A covered call is decided as usual.
    assert!(s
        .check(None, json!({ "team": "a" }), json!({}))
        .await
        .allowed());
    s.stop().await;
}

#[tokio::test]
async fn calls_may_tighten_their_limits_and_loosen_them_only_with_the_admin_token() {
    let s = start(&format!(
        "{AUTH}\n[[rules]]\nname = \"rpm\"\nmatch = {{ tenant = \"*\" }}\nlimits = [{{ kind = \"requests\", amount = 60, per = \"minute\" }}]\n"
    ))
    .await;
    let body =
        |limits: serde_json::Value| json!({ "subject": { "tenant": "acme" }, "limits": limits });
    let two = json!([{ "kind": "requests", "amount": 2 }]);
    for _ in 0..2 {
        let a = s.post("/v1/check", Some(ACME), body(two.clone())).await;
        assert!(a.allowed(), "{}", a.body);
    }
    let a = s.post("/v1/check", Some(ACME), body(two.clone())).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.body["denied_by"]["rule"], "rpm");
    // The policy's bucket was spent too.
    assert_eq!(s.used(Some(ACME), "tenant=acme", "requests").await, 2);

    // Loosening: refused to a client, allowed to the admin token.
    let loose = json!([{ "kind": "requests", "amount": 200, "per": "minute" }]);
    let a = s.post("/v1/check", Some(ACME), body(loose.clone())).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("looser"));
    let a = s.post("/v1/check", Some(ADMIN), body(loose)).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // A limit that changes nothing, and a malformed one, are 400s naming the field.
    let hourly = json!([{ "kind": "requests", "amount": 5, "per": "hour" }]);
    let a = s.post("/v1/check", Some(ACME), body(hourly)).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("requests per hour"));
    let a = s
        .post(
            "/v1/check",
            Some(ACME),
            body(json!([{ "kind": "bytes", "amount": 5 }])),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("limits[0].kind"));
    // Reservations take them too.
    let a = s.post("/v1/reserve", Some(ACME), body(two)).await;
    assert_eq!(a.status, 429, "{}", a.body);
    s.stop().await;
}
