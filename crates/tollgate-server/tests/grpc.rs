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
    let mut req = tonic::Request::new(RateLimitRequest {
        domain: "edge".into(),
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
