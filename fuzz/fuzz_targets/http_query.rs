//! The HTTP API's query-string decoder: `GET /v1/usage?<query>` through the service's router.
//!
//! Input: one byte choosing the token, then the query. A query that is not a valid URI is
//! skipped (the HTTP server rejects it before routing). Every answer passes
//! [`tollgate_fuzz::check_answer`].

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode, Uri};
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{token, Service};

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(Service::new)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, query)) = data.split_first() else {
        return;
    };
    let mut uri = b"/v1/usage?".to_vec();
    uri.extend_from_slice(query);
    let Ok(uri) = Uri::try_from(uri) else {
        return;
    };
    let mut request = Request::get(uri);
    if let Some(t) = token(selector) {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let request = request.body(Body::empty()).expect("a request");
    let (status, answer) = service().http(request);
    if status == StatusCode::OK {
        let v: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON answer");
        assert!(v["limits"].is_array(), "usage without limits: {v}");
    }
});
