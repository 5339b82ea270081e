//! Envoy's rate limit request mapped to subjects and costs (`RateLimitRequest` → one subject
//! and cost per descriptor), through the gRPC service without a listener.
//!
//! Input: UTF-8 lines (protobuf strings are UTF-8; the transport refuses anything else):
//! `token N` (0 none, 1 the client's, 2 the admin's, 3 unknown), `domain D`, `hits N` (the
//! request's `hits_addend`), `descriptor [N]` (starts a descriptor, with its own `hits_addend`
//! when a number follows), and `key=value` (an entry of the current descriptor). The service
//! answers with a status per descriptor, or a status code that blames the request
//! (`INVALID_ARGUMENT`, `UNAUTHENTICATED`, `PERMISSION_DENIED`), never `INTERNAL`.

#![no_main]

use std::sync::OnceLock;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::google::protobuf::UInt64Value;
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{token, Service};
use tonic::Code as GrpcCode;

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(Service::new)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut request = RateLimitRequest::default();
    let mut selector = 0u8;
    for line in text.split('\n') {
        if let Some(n) = line.strip_prefix("token ") {
            selector = n.trim().parse().unwrap_or(0);
        } else if let Some(d) = line.strip_prefix("domain ") {
            request.domain = d.to_owned();
        } else if let Some(n) = line.strip_prefix("hits ") {
            request.hits_addend = n.trim().parse().unwrap_or(u32::MAX);
        } else if let Some(rest) = line.strip_prefix("descriptor") {
            let hits = rest.trim().parse().ok().map(|value| UInt64Value { value });
            request.descriptors.push(RateLimitDescriptor {
                hits_addend: hits,
                ..RateLimitDescriptor::default()
            });
        } else if let Some((key, value)) = line.split_once('=') {
            if request.descriptors.is_empty() {
                request.descriptors.push(RateLimitDescriptor::default());
            }
            if let Some(d) = request.descriptors.last_mut() {
                d.entries.push(Entry {
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
        }
    }
    let asked = request.descriptors.len();
    let s = service();
    let answer = s.block_on(tollgate_server::fuzzing::grpc_should_rate_limit(
        s.app().clone(),
        request,
        token(selector),
    ));
    match answer {
        Ok(r) => {
            assert_eq!(r.statuses.len(), asked, "one status per descriptor");
            let over = r.statuses.iter().any(|s| s.code == Code::OverLimit as i32);
            let expected = if over { Code::OverLimit } else { Code::Ok };
            assert_eq!(r.overall_code, expected as i32, "{r:?}");
        }
        Err(status) => assert!(
            matches!(
                status.code(),
                GrpcCode::InvalidArgument | GrpcCode::Unauthenticated | GrpcCode::PermissionDenied
            ),
            "gRPC status {:?}: {}",
            status.code(),
            status.message()
        ),
    }
});
