//! The forward-auth endpoint (nginx auth_request, Traefik ForwardAuth, Envoy ext_authz) and
//! the OpenAPI document.

mod common;

use common::*;
use serde_json::json;

const POLICY: &str = r#"
[server]
trusted_proxies = ["127.0.0.1"]

[forward_auth]
attributes = { tenant = "x-tenant-id", model = "x-model" }
tokens_header = "x-estimated-tokens"
ip_attribute = "ip"

[[rules]]
name = "fa-per-tenant"
match = { tenant = "*" }
limits = [
  { kind = "requests", amount = 2, per = "hour" },
  { kind = "tokens", amount = 1000, per = "hour" },
]

[[rules]]
name = "fa-per-ip"
match = { ip = "*" }
limits = [{ kind = "requests", amount = 3, per = "hour" }]
"#;

async fn fwd(s: &Service, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut rb = s.http.get(s.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = serde_json::Value::String(resp.text().await.unwrap());
    Answer {
        status,
        headers: h,
        body,
    }
}

#[tokio::test]
async fn forward_auth_answers_200_then_429_with_retry_after() {
    let s = start(POLICY).await;
    let h = [
        ("x-tenant-id", "fa"),
        ("x-estimated-tokens", "400"),
        ("x-forwarded-for", "9.9.9.9"),
    ];
    let a = fwd(&s, "/v1/forward-auth", &h).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), Some("600"));
    // Envoy's ext_authz appends the original path; any method works.
    let b = s
        .http
        .post(s.url("/v1/forward-auth/chat/completions?stream=true"))
        .header("x-tenant-id", "fa")
        .header("x-forwarded-for", "9.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(b.status().as_u16(), 200);
    let d = fwd(&s, "/v1/forward-auth", &h).await;
    assert_eq!(d.status, 429);
    assert_eq!(d.header("retry-after"), Some("1800"));
    assert_eq!(d.header("x-tollgate-error-code"), Some("E4404"));
    assert!(d.header("ratelimit-policy").is_some());
    assert_eq!(s.used(None, "tenant=fa", "tokens").await, 400);
    // A bad token count is a 400, and spends nothing.
    let bad = fwd(
        &s,
        "/v1/forward-auth",
        &[("x-tenant-id", "fb"), ("x-estimated-tokens", "many")],
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(s.used(None, "tenant=fb", "requests").await, 0);
    s.stop().await;
}

#[tokio::test]
async fn the_client_ip_comes_from_trusted_proxies_only() {
    let s = start(POLICY).await;
    // The peer (127.0.0.1) is a trusted proxy: the client is the rightmost untrusted hop.
    for _ in 0..3 {
        let a = fwd(
            &s,
            "/v1/forward-auth",
            &[("x-forwarded-for", "6.6.6.6, 1.2.3.4")],
        )
        .await;
        assert_eq!(a.status, 200);
    }
    let d = fwd(
        &s,
        "/v1/forward-auth",
        &[("x-forwarded-for", "7.7.7.7, 1.2.3.4")],
    )
    .await;
    assert_eq!(
        d.status, 429,
        "a spoofed leftmost entry must not change the client"
    );
    let other = fwd(&s, "/v1/forward-auth", &[("x-forwarded-for", "1.2.3.5")]).await;
    assert_eq!(other.status, 200);
    let u = s.get("/v1/usage?ip=1.2.3.4", None).await;
    assert_eq!(u.body["limits"][0]["used"], 3);
    s.stop().await;
}

#[tokio::test]
async fn forward_auth_needs_a_token_when_auth_is_on() {
    let s = start(&format!("{POLICY}{AUTH}")).await;
    let h = [("x-tenant-id", "acme")];
    assert_eq!(fwd(&s, "/v1/forward-auth", &h).await.status, 401);
    let ok = fwd(
        &s,
        "/v1/forward-auth",
        &[("x-tenant-id", "acme"), ("x-tollgate-token", ACME)],
    )
    .await;
    assert_eq!(ok.status, 200);
    let ok = fwd(&s, "/v1/forward-auth", &[("x-tollgate-token", ACME)]).await;
    assert_eq!(ok.status, 200, "the token's tenant fills the subject");
    assert_eq!(s.used(Some(ADMIN), "tenant=acme", "requests").await, 2);
    // The client's own key for the upstream is not a tollgate token: with it alone the
    // call is unauthenticated, and beside the tollgate token it changes nothing.
    let upstream_key = format!("Bearer {ACME}");
    let alone = fwd(
        &s,
        "/v1/forward-auth",
        &[("authorization", upstream_key.as_str())],
    )
    .await;
    assert_eq!(alone.status, 401, "Authorization is the upstream's");
    let both = fwd(
        &s,
        "/v1/forward-auth",
        &[
            ("authorization", "Bearer sk-proj-the-clients-openai-key"),
            ("x-tollgate-token", ACME),
        ],
    )
    .await;
    // Authenticated by X-Tollgate-Token and decided: acme's two calls an hour are spent.
    assert_eq!(both.status, 429);
    assert_eq!(both.header("x-tollgate-outcome"), Some("denied"));
    let other = fwd(
        &s,
        "/v1/forward-auth",
        &[("x-tenant-id", "globex"), ("x-tollgate-token", ACME)],
    )
    .await;
    assert_eq!(other.status, 403);
    s.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_endpoint() {
    let s = start(POLICY).await;
    let doc = s.get("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    for (path, method) in tollgate_server::openapi::PATHS {
        assert!(
            doc.body["paths"][path][method].is_object(),
            "{method} {path}"
        );
        // And every documented path is served (not the 404 fallback).
        let url = path.replace("{id}", "p_00");
        let r = match method {
            "get" => s.http.get(s.url(&url)).send().await.unwrap(),
            "put" => s
                .http
                .put(s.url(&url))
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
            "delete" => s
                .http
                .delete(s.url(&url))
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
            _ => s
                .http
                .post(s.url(&url))
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
        };
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("no such endpoint"),
            "{method} {path}: {body}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn refusals_name_their_outcome_and_a_deny_status_replaces_their_status() {
    let policy = r#"
unmatched = "deny"

[forward_auth]
attributes = { tenant = "x-tenant-id" }
tokens_header = "x-estimated-tokens"
ATTRS

[[rules]]
name = "fa-outcomes"
match = { tenant = "*" }
limits = [
  { kind = "requests", amount = 1, per = "hour" },
  { kind = "tokens", amount = 100, per = "hour" },
]
"#;
    for (deny_status, statuses) in [
        ("", [429, 413, 403]),
        ("deny_status = 403", [403, 403, 403]),
    ] {
        let s = start(&policy.replace("ATTRS", deny_status)).await;
        let ok = fwd(&s, "/v1/forward-auth", &[("x-tenant-id", "o")]).await;
        assert_eq!(
            (ok.status, ok.header("x-tollgate-outcome")),
            (200, Some("allowed"))
        );
        let denied = fwd(&s, "/v1/forward-auth", &[("x-tenant-id", "o")]).await;
        let too_large = fwd(
            &s,
            "/v1/forward-auth",
            &[("x-tenant-id", "p"), ("x-estimated-tokens", "101")],
        )
        .await;
        let unmatched = fwd(&s, "/v1/forward-auth", &[]).await;
        let got = [&denied, &too_large, &unmatched].map(|a| a.status);
        assert_eq!(got, statuses, "{deny_status:?}");
        assert_eq!(denied.header("x-tollgate-outcome"), Some("denied"));
        assert!(denied.header("retry-after").is_some());
        assert!(denied.header("retry-after-ms").is_some());
        assert_eq!(too_large.header("x-tollgate-outcome"), Some("too_large"));
        assert_eq!(too_large.header("x-should-retry"), Some("false"));
        assert_eq!(unmatched.header("x-tollgate-outcome"), Some("unmatched"));
        s.stop().await;
    }
}

#[tokio::test]
async fn rule_names_can_be_kept_from_clients() {
    let policy = r#"
[server]
expose_rule_names = false

[[rules]]
name = "secret-tier-rule"
match = { tenant = "*" }
limits = [
  { kind = "requests", amount = 1, per = "hour" },
  { kind = "tokens", amount = 100, per = "minute" },
  { kind = "tokens", amount = 1000, per = "day" },
]
"#;
    let s = start(policy).await;
    fwd(&s, "/v1/forward-auth", &[("x-tenant-id", "h")]).await;
    let fa = fwd(&s, "/v1/forward-auth", &[("x-tenant-id", "h")]).await;
    assert_eq!(fa.status, 429);
    let api = s.check(None, json!({ "tenant": "h" }), json!({})).await;
    assert_eq!(api.status, 429);
    for (what, headers, body) in [
        ("forward-auth", &fa.headers, fa.body.to_string()),
        ("check", &api.headers, api.body.to_string()),
    ] {
        let all: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("")))
            .collect();
        assert!(!all.contains("secret"), "{what} headers: {all}");
        assert!(!body.contains("secret"), "{what} body: {body}");
        let policy = headers["ratelimit-policy"].to_str().unwrap();
        assert!(policy.contains("\"requests\";q=1"), "{policy}");
        assert!(policy.contains("\"tokens.minute\";q=100"), "{policy}");
        assert!(policy.contains("\"tokens.day\";q=1000"), "{policy}");
    }
    assert_eq!(api.body["denied_by"]["rule"], "");
    assert_eq!(api.body["denied_by"]["limit"], "requests");
    assert!(
        api.body["message"]
            .as_str()
            .unwrap()
            .contains("\"requests\""),
        "{}",
        api.body
    );
    s.stop().await;
}
