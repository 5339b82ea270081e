//! The HTTP API end to end over real sockets.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tollgate_server::config::Config;

const TWO_PER_HOUR: &str = r#"
[[rules]]
name = "two-per-hour"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 2, per = "hour" }]
"#;

#[tokio::test]
async fn the_default_policy_checks_peeks_and_reports_usage() {
    let mut c = Config::default();
    c.server.http = "127.0.0.1:0".parse().unwrap();
    c.server.grpc = Some("127.0.0.1:0".parse().unwrap());
    let s = start_config(c).await;
    let who = json!({ "tenant": "acme", "provider": "openai" });

    let a = s.check(None, who.clone(), json!({ "tokens": 1500 })).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.allowed());
    assert_eq!(a.body["outcome"], "allowed");
    assert_eq!(a.header("x-ratelimit-limit-requests"), Some("60"));
    assert_eq!(a.header("x-ratelimit-remaining-requests"), Some("59"));
    assert_eq!(a.header("x-ratelimit-limit-tokens"), Some("100000"));
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), Some("98500"));
    assert!(a
        .header("ratelimit-policy")
        .unwrap()
        .contains("default.requests"));
    assert!(a.header("ratelimit").is_some());
    assert_eq!(a.body["limits"].as_array().unwrap().len(), 2);

    // Peek answers the same without spending.
    let p = s
        .post(
            "/v1/peek",
            None,
            json!({ "subject": who, "cost": { "tokens": 1500 } }),
        )
        .await;
    assert_eq!(p.status, 200);
    assert_eq!(p.header("x-ratelimit-remaining-tokens"), Some("97000"));
    assert_eq!(
        s.used(None, "tenant=acme&provider=openai", "tokens").await,
        1500
    );
    assert_eq!(
        s.used(None, "tenant=acme&provider=openai", "requests")
            .await,
        1
    );

    // A call without a tenant is keyed on its user (the built-in policy's next rule).
    let u = s.check(None, json!({ "user": "x" }), json!({})).await;
    assert!(u.allowed());
    assert_eq!(u.body["limits"][0]["rule"], "default-user");
    s.stop().await;
}

#[tokio::test]
async fn a_denial_is_429_with_retry_after_and_the_headers() {
    let s = start(TWO_PER_HOUR).await;
    let who = json!({ "tenant": "t429" });
    for _ in 0..2 {
        assert_eq!(s.check(None, who.clone(), json!({})).await.status, 200);
    }
    let d = s.check(None, who.clone(), json!({})).await;
    assert_eq!(d.status, 429, "{}", d.body);
    assert!(!d.allowed());
    assert_eq!(d.body["reason"], "requests");
    assert_eq!(d.body["error_code"], "E4404");
    assert_eq!(d.body["denied_by"]["rule"], "two-per-hour");
    // 2 per hour: the next one frees up in 30 minutes.
    assert_eq!(d.body["retry_after_ms"], 1_800_000);
    assert_eq!(d.header("retry-after"), Some("1800"));
    assert_eq!(d.header("x-ratelimit-remaining-requests"), Some("0"));

    // Time passes (the manual clock), and the call is admitted again.
    s.clock.advance(Duration::from_secs(1800));
    assert_eq!(s.check(None, who.clone(), json!({})).await.status, 200);

    // Peek of a denial answers 200 with the decision.
    let p = s.post("/v1/peek", None, json!({ "subject": who })).await;
    assert_eq!(p.status, 200);
    assert!(!p.allowed());

    // A cost that can never fit is its own outcome: 413, not to be retried, without
    // Retry-After.
    let big = s
        .check(None, json!({ "tenant": "big" }), json!({ "requests": 5 }))
        .await;
    assert_eq!(big.status, 413);
    assert_eq!(big.header("x-should-retry"), Some("false"));
    assert_eq!(big.body["outcome"], "too_large");
    assert_eq!(big.body["error_code"], "E4413");
    assert_eq!(big.header("retry-after"), None);
    s.stop().await;
}

#[tokio::test]
async fn idempotent_checks_spend_once() {
    let s = start(TWO_PER_HOUR).await;
    let body = json!({ "subject": { "tenant": "idem" }, "request_id": "req-1" });
    for _ in 0..3 {
        assert_eq!(s.post("/v1/check", None, body.clone()).await.status, 200);
    }
    assert_eq!(s.used(None, "tenant=idem", "requests").await, 1);
    s.stop().await;
}

#[tokio::test]
async fn tokens_are_required_and_bound_to_their_tenant() {
    let s = start(&format!("{TWO_PER_HOUR}{AUTH}")).await;
    let acme = json!({ "tenant": "acme" });

    // No token, a wrong token: 401, and nothing is spent.
    let a = s.check(None, acme.clone(), json!({})).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body["error"]["code"], "unauthorized");
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    let a = s
        .check(Some("not-a-token-at-all-000"), acme.clone(), json!({}))
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(s.used(Some(ADMIN), "tenant=acme", "requests").await, 0);
    assert_eq!(s.get("/v1/usage?tenant=acme", None).await.status, 401);

    // A client bound to acme spends acme's quota, and only acme's.
    assert_eq!(
        s.check(Some(ACME), acme.clone(), json!({})).await.status,
        200
    );
    let other = s
        .check(Some(ACME), json!({ "tenant": "globex" }), json!({}))
        .await;
    assert_eq!(other.status, 403, "{}", other.body);
    assert!(other.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("acme"));
    // Without a tenant, the token's tenant is used.
    assert_eq!(s.check(Some(ACME), json!({}), json!({})).await.status, 200);
    assert_eq!(s.used(Some(ADMIN), "tenant=acme", "requests").await, 2);
    assert_eq!(s.used(Some(ADMIN), "tenant=globex", "requests").await, 0);
    // Usage is bound the same way.
    assert_eq!(
        s.get("/v1/usage?tenant=globex", Some(ACME)).await.status,
        403
    );
    assert_eq!(s.used(Some(ACME), "", "requests").await, 2);
    // An unbound client may act for any tenant.
    assert_eq!(
        s.check(Some(UNBOUND), json!({ "tenant": "globex" }), json!({}))
            .await
            .status,
        200
    );

    // Reset needs the admin token.
    let reset = json!({ "subject": { "tenant": "acme" } });
    let r = s.post("/v1/reset", Some(ACME), reset.clone()).await;
    assert_eq!(r.status, 403);
    assert_eq!(s.post("/v1/reset", None, reset.clone()).await.status, 401);
    let r = s.post("/v1/reset", Some(ADMIN), reset).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.used(Some(ADMIN), "tenant=acme", "requests").await, 0);
    s.stop().await;
}

#[tokio::test]
async fn reset_by_rule_and_subject() {
    let s = start(TWO_PER_HOUR).await;
    for t in ["r1", "r2"] {
        for _ in 0..2 {
            s.check(None, json!({ "tenant": t }), json!({})).await;
        }
    }
    let r = s
        .post(
            "/v1/reset",
            None,
            json!({ "subject": { "tenant": "r1" }, "rule": "two-per-hour" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.used(None, "tenant=r1", "requests").await, 0);
    assert_eq!(s.used(None, "tenant=r2", "requests").await, 2);
    let r = s
        .post("/v1/reset", None, json!({ "rule": "two-per-hour" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.used(None, "tenant=r2", "requests").await, 0);
    let r = s.post("/v1/reset", None, json!({ "rule": "nope" })).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = s.post("/v1/reset", None, json!({})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message_and_spends_nothing() {
    let s = start(&format!("[server]\nmax_body_bytes = 1024\n{TWO_PER_HOUR}")).await;

    // Too large a body: 413.
    let pad = "x".repeat(2000);
    let big = s
        .post(
            "/v1/check",
            None,
            json!({ "subject": { "tenant": "bad", "pad": pad } }),
        )
        .await;
    assert_eq!(big.status, 413, "{}", big.body);
    assert_eq!(big.body["error"]["code"], "payload_too_large");

    // A value over 256 bytes, too many attributes, a bad name: 400 naming the attribute.
    let long = "v".repeat(257);
    let a = s.check(None, json!({ "tenant": long }), json!({})).await;
    assert_eq!(a.status, 400);
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("subject.tenant") && msg.contains("256"),
        "{msg}"
    );
    let many: serde_json::Map<String, serde_json::Value> =
        (0..33).map(|i| (format!("a{i}"), json!("v"))).collect();
    let a = s.check(None, json!(many), json!({})).await;
    assert_eq!(a.status, 400);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("32"));
    let a = s.check(None, json!({ "bad name": "v" }), json!({})).await;
    assert_eq!(a.status, 400);

    // Malformed JSON names the field.
    let a = s
        .post_raw(
            "/v1/check",
            None,
            br#"{"subject":{"tenant":"bad"},"cost":{"tokens":"lots"}}"#.to_vec(),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cost.tokens:"),
        "{}",
        a.body
    );
    let a = s
        .post_raw("/v1/check", None, br#"{"subject":{"tenant":7}}"#.to_vec())
        .await;
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("subject.tenant:"));
    let a = s
        .post_raw("/v1/check", None, br#"{"subjet":{}}"#.to_vec())
        .await;
    assert_eq!(a.status, 400);
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("subjet"));
    for junk in [
        &b""[..],
        b"{",
        b"[]",
        b"null",
        b"\xff\xfe",
        b"{\"subject\":{}} trailing",
    ] {
        let a = s.post_raw("/v1/check", None, junk.to_vec()).await;
        assert_eq!(a.status, 400, "{junk:?}: {}", a.body);
    }
    let a = s
        .post_raw("/v1/permits/..%2F/commit", None, b"{}".to_vec())
        .await;
    assert!(a.status == 400 || a.status == 404, "{}", a.status);
    assert_eq!(s.get("/v1/nothing", None).await.status, 404);

    // None of that spent anything, and the service still answers.
    assert_eq!(s.used(None, "tenant=bad", "requests").await, 0);
    assert_eq!(s.get("/healthz", None).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let s = start(
        r#"
[[rules]]
name = "metrics-rule"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 1, per = "hour" }]
"#,
    )
    .await;
    s.check(None, json!({ "tenant": "m" }), json!({})).await;
    s.check(None, json!({ "tenant": "m" }), json!({})).await;
    let m = s.metrics().await;
    assert!(m.contains("tollgate_decisions_total{"), "{m}");
    assert!(m.contains("tollgate_decision_seconds_bucket"), "{m}");
    assert!(
        m.contains("tollgate_server_request_seconds_bucket{api=\"check\""),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("tollgate_server_decisions_total{")
                && l.contains("outcome=\"denied\"")
                && l.contains("rule=\"metrics-rule\"")
                && l.contains("limit=")),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("tollgate_active_buckets{rule=\"metrics-rule\"} 1")),
        "{m}"
    );
    let h = s.get("/healthz", None).await;
    assert_eq!((h.status, h.body["status"].as_str()), (200, Some("ok")));
    let r = s.get("/readyz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["store"], "memory");
    s.stop().await;
}

#[tokio::test]
async fn header_styles_follow_the_config() {
    let s = start(&format!("[server]\nheaders = \"ietf\"\n{TWO_PER_HOUR}")).await;
    let a = s.check(None, json!({ "tenant": "h" }), json!({})).await;
    assert!(a.header("ratelimit").is_some());
    assert!(a.header("x-ratelimit-limit-requests").is_none());
    s.stop().await;

    let s = start(&format!("[server]\nheaders = \"none\"\n{TWO_PER_HOUR}")).await;
    for _ in 0..2 {
        let a = s.check(None, json!({ "tenant": "h" }), json!({})).await;
        assert!(a.header("ratelimit").is_none());
        assert!(a.header("x-ratelimit-limit-requests").is_none());
    }
    let d = s.check(None, json!({ "tenant": "h" }), json!({})).await;
    assert_eq!(d.header("retry-after"), Some("1800"));
    s.stop().await;
}

/// A known path asked with a method it does not serve is a 405 with the JSON error every
/// other refusal has, and the `Allow` header.
#[tokio::test]
async fn a_method_a_path_does_not_serve_is_a_json_405_with_allow() {
    let s = start("").await;
    let wrong = s.get("/v1/check", None).await;
    assert_eq!(wrong.status, 405, "{}", wrong.body);
    assert_eq!(
        wrong.body["error"]["code"], "method_not_allowed",
        "{}",
        wrong.body
    );
    assert!(wrong.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("GET"));
    assert_eq!(wrong.header("allow"), Some("POST"));
    let query = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(b"QUERY").unwrap(),
            s.url("/v1/forward-auth"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 405);
    assert!(query.headers().get("allow").is_some());
    let body: serde_json::Value = query.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
}
