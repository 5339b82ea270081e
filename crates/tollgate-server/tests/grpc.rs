//! Envoy's rate limit service over gRPC, with a real tonic client.

mod common;

use common::*;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use tonic::transport::Channel;

const POLICY: &str = r#"
[grpc]
domain_attribute = "domain"
descriptors = { user_id = "user" }
hits_addend = "tokens"

[[rules]]
name = "rls-requests"
match = { domain = "edge", user = "*" }
limits = [{ kind = "requests", amount = 2, per = "hour" }]

[[rules]]
name = "rls-tokens"
match = { domain = "edge", model = "*" }
limits = [{ kind = "tokens", amount = 100, per = "minute" }]
"#;

fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

async fn client(s: &Service) -> RateLimitServiceClient<Channel> {
    let addr = s.running.grpc.unwrap();
    RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn ask(
    c: &mut RateLimitServiceClient<Channel>,
    token: Option<&str>,
    descriptors: Vec<RateLimitDescriptor>,
    hits: u32,
) -> Result<RateLimitResponse, tonic::Status> {
    ask_in(c, "edge", token, descriptors, hits).await
}

async fn ask_in(
    c: &mut RateLimitServiceClient<Channel>,
    domain: &str,
    token: Option<&str>,
    descriptors: Vec<RateLimitDescriptor>,
    hits: u32,
) -> Result<RateLimitResponse, tonic::Status> {
    let mut req = tonic::Request::new(RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: hits,
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    c.should_rate_limit(req)
        .await
        .map(tonic::Response::into_inner)
}

fn header<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

#[tokio::test]
async fn descriptors_map_to_subjects_and_over_limit_carries_headers() {
    let s = start(POLICY).await;
    let mut c = client(&s).await;
    let d = || vec![desc(&[("user_id", "alice")])];
    let r = ask(&mut c, None, d(), 0).await.unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    let st = &r.statuses[0];
    assert_eq!(st.code, Code::Ok as i32);
    assert_eq!(st.limit_remaining, 1);
    let limit = st.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, limit.unit),
        (2, Unit::Hour as i32)
    );
    assert!(limit.name.starts_with("rls-requests."));
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), Some("1"));

    ask(&mut c, None, d(), 0).await.unwrap();
    let over = ask(&mut c, None, d(), 0).await.unwrap();
    assert_eq!(over.overall_code, Code::OverLimit as i32);
    assert_eq!(over.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(over.statuses[0].limit_remaining, 0);
    let reset = over.statuses[0].duration_until_reset.unwrap();
    assert_eq!(reset.seconds, 3600);
    assert_eq!(header(&over, "retry-after"), Some("1800"));
    assert_eq!(s.used(None, "domain=edge&user=alice", "requests").await, 2);
    s.stop().await;
}

#[tokio::test]
async fn hits_addend_is_the_token_cost_and_descriptors_are_all_or_nothing() {
    let s = start(POLICY).await;
    let mut c = client(&s).await;
    // hits_addend 60 → 60 tokens against 100/minute.
    let r = ask(&mut c, None, vec![desc(&[("model", "m1")])], 60)
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].limit_remaining, 40);
    // A descriptor's own hits_addend wins; 0 means 1.
    let mut own = desc(&[("model", "m1")]);
    own.hits_addend = Some(UInt64Value { value: 0 });
    let r = ask(&mut c, None, vec![own], 60).await.unwrap();
    assert_eq!(r.statuses[0].limit_remaining, 39);

    // Two descriptors: the second is over its limit, so the first spends nothing either.
    let both = vec![desc(&[("user_id", "bob")]), desc(&[("model", "m1")])];
    let r = ask(&mut c, None, both, 50).await.unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses.len(), 2);
    assert_eq!(r.statuses[0].code, Code::Ok as i32);
    assert_eq!(r.statuses[1].code, Code::OverLimit as i32);
    assert_eq!(s.used(None, "domain=edge&user=bob", "requests").await, 0);
    assert_eq!(s.used(None, "domain=edge&model=m1", "tokens").await, 61);
    let both = vec![desc(&[("user_id", "bob")]), desc(&[("model", "m1")])];
    let r = ask(&mut c, None, both, 30).await.unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(s.used(None, "domain=edge&user=bob", "requests").await, 1);
    assert_eq!(s.used(None, "domain=edge&model=m1", "tokens").await, 91);
    s.stop().await;
}

#[tokio::test]
async fn grpc_needs_a_token_and_validates_input() {
    let s = start(&format!("{POLICY}{AUTH}")).await;
    let mut c = client(&s).await;
    let e = ask(&mut c, None, vec![desc(&[("user_id", "a")])], 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let r = ask(&mut c, Some(UNBOUND), vec![desc(&[("user_id", "a")])], 0)
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    let e = ask(&mut c, Some(ACME), vec![desc(&[("tenant", "globex")])], 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = ask(&mut c, Some(UNBOUND), vec![], 0).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let long = "x".repeat(300);
    let e = ask(
        &mut c,
        Some(UNBOUND),
        vec![desc(&[("user_id", long.as_str())])],
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("256"), "{}", e.message());
    s.stop().await;
}

/// Envoy's route pattern: one request carries `(tenant)` and `(tenant, model)`.
const NESTED: &str = r#"
[[rules]]
name = "tenant"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 3, per = "hour" }]

[[rules]]
name = "tenant-model"
match = { tenant = "*", model = "*" }
limits = [{ kind = "requests", amount = 2, per = "hour" }]
"#;

fn route(tenant: &str, model: &str) -> Vec<RateLimitDescriptor> {
    vec![
        desc(&[("tenant", tenant)]),
        desc(&[("tenant", tenant), ("model", model)]),
    ]
}

fn remaining(r: &RateLimitResponse) -> Vec<u32> {
    r.statuses.iter().map(|s| s.limit_remaining).collect()
}

fn codes(r: &RateLimitResponse) -> Vec<i32> {
    r.statuses.iter().map(|s| s.code).collect()
}

#[tokio::test]
async fn nested_descriptors_spend_each_rule_once_and_domains_do_not_share_buckets() {
    let s = start(NESTED).await;
    let mut c = client(&s).await;
    let r = ask(&mut c, None, route("t", "m"), 0).await.unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    // The tenant's limit is spent once (3 → 2), not once per descriptor.
    assert_eq!(remaining(&r), [2, 1]);
    let names: Vec<&str> = r
        .statuses
        .iter()
        .map(|s| s.current_limit.as_ref().unwrap().name.as_str())
        .collect();
    assert!(names[0].starts_with("tenant.") && names[1].starts_with("tenant-model."));
    let r = ask(&mut c, None, route("t", "m"), 0).await.unwrap();
    assert_eq!(remaining(&r), [1, 0]);

    // The model's limit is over: the request is denied, and the tenant's descriptor, which
    // would have admitted, reports its remaining unspent.
    let r = ask(&mut c, None, route("t", "m"), 0).await.unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(codes(&r), [Code::Ok as i32, Code::OverLimit as i32]);
    assert_eq!(remaining(&r), [1, 0]);
    // ... and nothing was spent: another model still has the tenant's last request.
    let r = ask(&mut c, None, route("t", "m2"), 0).await.unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(remaining(&r), [0, 1]);

    // Without domain_attribute, another domain has buckets of its own.
    let r = ask_in(&mut c, "other", None, route("t", "m"), 0)
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(remaining(&r), [2, 1]);

    // A rule that asks for subset matching meets every depth (and spends twice).
    s.stop().await;
    let s = start(&NESTED.replace(
        "match = { tenant = \"*\" }",
        "match = { tenant = \"*\" }\nmatch_mode = \"subset\"",
    ))
    .await;
    let mut c = client(&s).await;
    let r = ask(&mut c, None, route("t", "m"), 0).await.unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    let r = ask(&mut c, None, vec![desc(&[("tenant", "t")])], 0)
        .await
        .unwrap();
    assert_eq!(remaining(&r), [0], "3 - 2 - 1: {r:?}");
    s.stop().await;
}

#[tokio::test]
async fn hits_addend_counts_requests_by_default_and_bad_requests_are_refused() {
    let s = start(NESTED).await;
    let mut c = client(&s).await;
    let r = ask(&mut c, None, vec![desc(&[("tenant", "a")])], 2)
        .await
        .unwrap();
    assert_eq!(remaining(&r), [1]);
    let r = ask(&mut c, None, vec![desc(&[("tenant", "a")])], 2)
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);

    let e = ask_in(&mut c, "", None, vec![desc(&[("tenant", "a")])], 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("domain"), "{}", e.message());
    let e = ask(
        &mut c,
        None,
        vec![desc(&[("tenant", "a"), ("tenant", "b")])],
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("repeated"), "{}", e.message());
    let e = ask(&mut c, None, vec![desc(&[])], 0).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Nothing was spent by the refused requests.
    let r = ask(&mut c, None, vec![desc(&[("tenant", "b")])], 0)
        .await
        .unwrap();
    assert_eq!(remaining(&r), [2]);
    s.stop().await;
}

#[tokio::test]
async fn a_descriptors_own_limit_replaces_the_configured_one() {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
    let s = start(NESTED).await;
    let mut c = client(&s).await;
    let own = |tenant: &str, n: u32, unit: Unit| {
        let mut d = desc(&[("tenant", tenant)]);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: n,
            unit: unit as i32,
        });
        d
    };
    for left in [4, 3, 2, 1, 0] {
        let r = ask(&mut c, None, vec![own("a", 5, Unit::Minute)], 0)
            .await
            .unwrap();
        assert_eq!(r.overall_code, Code::Ok as i32);
        let st = &r.statuses[0];
        assert_eq!(st.limit_remaining, left);
        let l = st.current_limit.as_ref().unwrap();
        assert_eq!((l.requests_per_unit, l.unit), (5, Unit::Minute as i32));
    }
    let r = ask(&mut c, None, vec![own("a", 5, Unit::Minute)], 0)
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // The configured limit of that tenant was not touched; another amount or unit is
    // another bucket; a week and a year are units too.
    let r = ask(&mut c, None, vec![desc(&[("tenant", "a")])], 0)
        .await
        .unwrap();
    assert_eq!(remaining(&r), [2]);
    let r = ask(&mut c, None, vec![own("a", 1, Unit::Hour)], 0)
        .await
        .unwrap();
    assert_eq!((r.overall_code, remaining(&r)), (Code::Ok as i32, vec![0]));
    for unit in [Unit::Week, Unit::Year, Unit::Day, Unit::Second, Unit::Month] {
        let r = ask(&mut c, None, vec![own("a", 7, unit)], 0).await.unwrap();
        let l = r.statuses[0].current_limit.as_ref().unwrap();
        assert_eq!((l.requests_per_unit, l.unit), (7, unit as i32), "{unit:?}");
    }
    // Zero requests per unit is always over; an unknown unit is refused.
    let r = ask(&mut c, None, vec![own("b", 0, Unit::Second)], 0)
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    let e = ask(&mut c, None, vec![own("b", 3, Unit::Unknown)], 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    s.stop().await;
}

const ENVOY_FEATURES: &str = r#"
[[rules]]
name = "ldap"
match = { service = "ldap" }
unlimited = true

[[rules]]
name = "ip"
match = { remote_address = "*" }
limits = [{ kind = "requests", amount = 10, per = "second" }]

[[rules.overrides]]
match = { remote_address = "50.0.0.5" }
deny = true

[[rules]]
name = "soft"
match = { user = "*" }
shadow = true
detailed_metric = true
limits = [{ kind = "requests", amount = 1, per = "hour" }]

[[rules]]
name = "specific_limit"
match = { key_1 = "value_1", user = "bkthomps" }
limits = [{ kind = "requests", amount = 5, per = "second" }]

[[rules]]
name = "replacing"
match = { key_2 = "value_2", user = "bkthomps" }
replaces = ["specific_limit"]
limits = [{ kind = "requests", amount = 10, per = "second" }]
"#;

#[tokio::test]
async fn unlimited_deny_shadow_replaces_and_detailed_metrics() {
    let s = start(ENVOY_FEATURES).await;
    let mut c = client(&s).await;
    // Unlimited: OK with the largest remaining, as envoyproxy/ratelimit answers.
    let r = ask(&mut c, None, vec![desc(&[("service", "ldap")])], 0)
        .await
        .unwrap();
    assert_eq!(
        (r.overall_code, remaining(&r)),
        (Code::Ok as i32, vec![u32::MAX])
    );
    // Deny (requests_per_unit 0): always over, and the other descriptor spends nothing.
    let r = ask(
        &mut c,
        None,
        vec![
            desc(&[("remote_address", "50.0.0.1")]),
            desc(&[("remote_address", "50.0.0.5")]),
        ],
        0,
    )
    .await
    .unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(codes(&r), [Code::Ok as i32, Code::OverLimit as i32]);
    assert_eq!(r.statuses[0].limit_remaining, 10, "unspent");
    let r = ask(
        &mut c,
        None,
        vec![desc(&[("remote_address", "50.0.0.1")])],
        0,
    )
    .await
    .unwrap();
    assert_eq!(remaining(&r), [9]);

    // Shadow: over its limit, the descriptor is OK and still shows the limit it broke.
    for _ in 0..2 {
        ask(&mut c, None, vec![desc(&[("user", "u1")])], 0)
            .await
            .unwrap();
    }
    let r = ask(&mut c, None, vec![desc(&[("user", "u1")])], 0)
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    let st = &r.statuses[0];
    let l = st.current_limit.as_ref().expect("the shadow rule's limit");
    assert!(l.name.starts_with("soft."), "{l:?}");
    assert_eq!((l.requests_per_unit, st.limit_remaining), (1, 0));
    let m = s.metrics().await;
    assert!(
        m.contains("tollgate_grpc_descriptor_decisions_total{")
            && m.contains("descriptor=\"edge.user_u1\""),
        "{m}"
    );

    // Replaces: with both descriptors, only the replacing rule applies.
    let user = ("user", "bkthomps");
    let both = || {
        vec![
            desc(&[("key_1", "value_1"), user]),
            desc(&[("key_2", "value_2"), user]),
        ]
    };
    for _ in 0..6 {
        let r = ask(&mut c, None, both(), 0).await.unwrap();
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert!(r.statuses[0].current_limit.is_none());
    }
    // Alone, the replaced rule still has its 5.
    let r = ask(&mut c, None, vec![desc(&[("key_1", "value_1"), user])], 0)
        .await
        .unwrap();
    assert_eq!(remaining(&r), [4]);
    s.stop().await;
}
