//! The HTTP API's JSON bodies: `/v1/check`, `/v1/peek`, `/v1/reserve`, a permit's commit and
//! `/v1/reset`, through the service's router.
//!
//! Input: one byte choosing the endpoint (low 3 bits) and the token (next 2 bits), then the
//! body. Every answer passes [`tollgate_fuzz::check_answer`]; a body the decoder accepts
//! gets a decision, never an error about the decision itself.

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{token, Service, ADMIN_TOKEN};

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(Service::new)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let path = match selector & 7 {
        0 | 5 => "/v1/check",
        1 => "/v1/peek",
        2 | 6 => "/v1/reserve",
        3 => "/v1/permits/p_1/commit",
        _ => "/v1/reset",
    };
    let mut request = Request::post(path).header("content-type", "application/json");
    if let Some(t) = token(selector >> 3) {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let request = request.body(Body::from(body.to_vec())).expect("a request");
    let (status, answer) = service().http(request);
    if matches!(path, "/v1/check" | "/v1/peek" | "/v1/reserve")
        && matches!(status, StatusCode::OK | StatusCode::TOO_MANY_REQUESTS)
    {
        let v: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON decision");
        assert!(
            v["allowed"].is_boolean(),
            "a decision without `allowed`: {v}"
        );
        // A granted reservation is cancelled, so that permits do not pile up to the cap.
        if let Some(id) = v["permit"]["id"].as_str() {
            let cancel = Request::post(format!("/v1/permits/{id}/cancel"))
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .body(Body::empty())
                .expect("a request");
            let (status, answer) = service().http(cancel);
            assert_eq!(
                status,
                StatusCode::OK,
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
});
