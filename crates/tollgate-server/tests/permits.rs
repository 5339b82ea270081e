//! Reserve, commit, cancel, renew and expiry of permits over HTTP.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const POLICY: &str = r#"
[server]
permit_ttl = "5m"

[[rules]]
name = "llm"
match = { tenant = "*" }
limits = [
  { kind = "tokens", amount = 10000, per = "day", algorithm = "fixed_window" },
  { kind = "concurrency", amount = 1 },
]
"#;

async fn reserve(s: &Service, token: Option<&str>, tenant: &str, tokens: u64) -> Answer {
    s.post(
        "/v1/reserve",
        token,
        json!({ "subject": { "tenant": tenant }, "cost": { "tokens": tokens } }),
    )
    .await
}

fn permit_id(a: &Answer) -> String {
    a.body["permit"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no permit: {}", a.body))
        .to_owned()
}

#[tokio::test]
async fn reserve_commit_refunds_and_frees_the_slot_once() {
    let s = start(POLICY).await;
    let a = reserve(&s, None, "p1", 8000).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.allowed());
    assert_eq!(a.body["permit"]["expires_in_ms"], 300_000);
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), Some("2000"));
    let id = permit_id(&a);
    assert_eq!(s.running.permits_held(), 1);

    // The single slot is taken: a second reservation is denied (concurrency), spending nothing.
    let b = reserve(&s, None, "p1", 100).await;
    assert_eq!(b.status, 429, "{}", b.body);
    assert_eq!(b.body["reason"], "concurrency");
    assert_eq!(s.used(None, "tenant=p1", "tokens").await, 8000);

    // Commit the actual usage: 6250 tokens, the rest refunded, the slot released.
    let c = s
        .post(
            &format!("/v1/permits/{id}/commit"),
            None,
            json!({ "cost": { "tokens": 6250 } }),
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["settled"], "committed");
    assert_eq!(c.body["already"], false);
    assert_eq!(s.used(None, "tenant=p1", "tokens").await, 6250);
    assert_eq!(s.running.permits_held(), 0);

    // Settlement is idempotent: a repeat (commit or cancel) does nothing more.
    let again = s
        .post(
            &format!("/v1/permits/{id}/commit"),
            None,
            json!({ "cost": { "tokens": 1 } }),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["already"], true);
    assert_eq!(again.body["settled"], "committed");
    let cancel = s
        .post(&format!("/v1/permits/{id}/cancel"), None, json!({}))
        .await;
    assert_eq!(cancel.body["already"], true);
    assert_eq!(s.used(None, "tenant=p1", "tokens").await, 6250);

    // The slot is free again.
    let d = reserve(&s, None, "p1", 100).await;
    assert_eq!(d.status, 200, "{}", d.body);
    s.stop().await;
}

#[tokio::test]
async fn cancel_refunds_everything_and_unknown_ids_are_404() {
    let s = start(POLICY).await;
    let id = permit_id(&reserve(&s, None, "p2", 5000).await);
    let c = s
        .post(&format!("/v1/permits/{id}/cancel"), None, json!({}))
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["settled"], "cancelled");
    assert_eq!(s.used(None, "tenant=p2", "tokens").await, 0);
    let nope = s.post("/v1/permits/p_0000/commit", None, json!({})).await;
    assert_eq!(nope.status, 404);
    let renew = s
        .post(&format!("/v1/permits/{id}/renew"), None, json!({}))
        .await;
    assert_eq!(renew.status, 409, "{}", renew.body);
    s.stop().await;
}

#[tokio::test]
async fn abandoned_permits_expire_and_release_their_slot() {
    let s = start(POLICY).await;
    let id = permit_id(&reserve(&s, None, "p3", 1000).await);

    // Renewing pushes the expiry out from now.
    s.clock.advance(Duration::from_secs(240));
    let r = s
        .post(&format!("/v1/permits/{id}/renew"), None, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["slots_held"], true);
    s.clock.advance(Duration::from_secs(240));
    assert_eq!(s.running.sweep_permits(), 0);

    // Then abandoned: past the TTL, the sweep releases it; the estimate stays spent.
    s.clock.advance(Duration::from_secs(61));
    assert_eq!(s.running.sweep_permits(), 1);
    assert_eq!(s.running.permits_held(), 0);
    assert_eq!(s.used(None, "tenant=p3", "tokens").await, 1000);
    let late = s
        .post(&format!("/v1/permits/{id}/commit"), None, json!({}))
        .await;
    assert_eq!(late.status, 200);
    assert_eq!(late.body["settled"], "expired");
    assert_eq!(late.body["already"], true);
    let next = reserve(&s, None, "p3", 1000).await;
    assert_eq!(next.status, 200, "{}", next.body);
    s.stop().await;
}

#[tokio::test]
async fn a_client_cannot_settle_another_clients_permit() {
    let s = start(&format!("{POLICY}{AUTH}")).await;
    let a = reserve(&s, Some(ACME), "acme", 1000).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let id = permit_id(&a);
    let theft = s
        .post(&format!("/v1/permits/{id}/cancel"), Some(GLOBEX), json!({}))
        .await;
    assert_eq!(theft.status, 403);
    assert_eq!(
        s.post(&format!("/v1/permits/{id}/cancel"), None, json!({}))
            .await
            .status,
        401
    );
    let mine = s
        .post(&format!("/v1/permits/{id}/cancel"), Some(ACME), json!({}))
        .await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    // Reserving for another tenant is refused.
    assert_eq!(reserve(&s, Some(ACME), "globex", 1).await.status, 403);
    s.stop().await;
}
