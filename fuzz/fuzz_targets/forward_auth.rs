//! The forward-auth endpoint's header reader: `/v1/forward-auth` with arbitrary headers,
//! through the service's router (from a trusted proxy's address, so that `X-Forwarded-For` is
//! read too).
//!
//! Input: lines. The first is the method and the path below `/v1/forward-auth`; each other
//! line is a header, `name: value` (value bytes as given, so not always visible ASCII). Lines
//! that are not a valid header are skipped, as the HTTP server would refuse them. Every answer
//! passes [`tollgate_fuzz::check_answer`]; 200 and 429 are decisions.

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{split_once, Service};

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(Service::new)
}

fuzz_target!(|data: &[u8]| {
    let (first, mut rest) = split_once(data, b'\n');
    let (method, path) = split_once(first, b' ');
    let method = Method::from_bytes(method).unwrap_or(Method::GET);
    let mut uri = b"/v1/forward-auth".to_vec();
    uri.extend_from_slice(path);
    let uri = Uri::try_from(uri).unwrap_or_else(|_| Uri::from_static("/v1/forward-auth"));
    let mut request = Request::builder().method(method).uri(uri);
    while !rest.is_empty() {
        let (line, next) = split_once(rest, b'\n');
        rest = next;
        let (name, value) = split_once(line, b':');
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            request = request.header(n, v);
        }
    }
    let Ok(request) = request.body(Body::empty()) else {
        return;
    };
    let (status, _) = service().http(request);
    if !status.is_client_error() || status == StatusCode::TOO_MANY_REQUESTS {
        assert!(
            matches!(status, StatusCode::OK | StatusCode::TOO_MANY_REQUESTS),
            "forward-auth answered {status}"
        );
    }
});
