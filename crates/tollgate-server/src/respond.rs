//! How a decision becomes an HTTP response: its status, JSON body and rate-limit headers.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use crate::api::{decision_body, PermitOut};
use crate::config::Headers;
use crate::judged::Judged;

/// The header name of a name that [`tollgate::headers::render`] emits, without parsing it.
fn header_name(name: &'static str) -> HeaderName {
    const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
    const REMAINING_REQUESTS: HeaderName =
        HeaderName::from_static("x-ratelimit-remaining-requests");
    const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
    const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
    const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
    const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
    const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
    match name {
        "x-ratelimit-limit-requests" => LIMIT_REQUESTS,
        "x-ratelimit-remaining-requests" => REMAINING_REQUESTS,
        "x-ratelimit-reset-requests" => RESET_REQUESTS,
        "x-ratelimit-limit-tokens" => LIMIT_TOKENS,
        "x-ratelimit-remaining-tokens" => REMAINING_TOKENS,
        "x-ratelimit-reset-tokens" => RESET_TOKENS,
        "ratelimit-policy" => POLICY,
        "ratelimit" => RATELIMIT,
        "retry-after" => axum::http::header::RETRY_AFTER,
        other => HeaderName::from_static(other),
    }
}

/// The header that marks a decision made without the shared store (by the rules' failure
/// modes): `x-tollgate-degraded: true`; absent otherwise. gRPC answers carry the same key as
/// response metadata.
pub const DEGRADED: HeaderName = HeaderName::from_static("x-tollgate-degraded");

/// How decisions are rendered for clients: `[server] headers` and `expose_rule_names`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rendering {
    /// Which rate-limit headers.
    pub headers: Headers,
    /// Whether rule names are shown (headers and bodies).
    pub expose_rule_names: bool,
}

impl Rendering {
    /// The server section's settings.
    pub fn of(server: &crate::config::ServerConfig) -> Self {
        Rendering {
            headers: server.headers,
            expose_rule_names: server.expose_rule_names,
        }
    }
}

/// The rate-limit headers of `decision` as `style` says, naming limits by rule only where
/// `expose` (`[server] expose_rule_names`): their values are written into `buf`, and each
/// header's name is returned with its value's range there. HTTP, forward-auth and gRPC all
/// render through this.
pub(crate) fn render_headers(
    decision: &tollgate::Decision,
    style: Headers,
    expose: bool,
    buf: &mut Vec<u8>,
) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut spans = Vec::with_capacity(9);
    let emit = |name, range| spans.push((name, range));
    match style {
        Headers::Style(s) => {
            let names = if expose {
                tollgate::headers::PolicyNames::Rules
            } else {
                tollgate::headers::PolicyNames::Hidden
            };
            tollgate::headers::render_with(decision, s, names, buf, emit);
        }
        Headers::None => tollgate::headers::render_retry_after(decision, buf, emit),
    }
    spans
}

/// Adds the decision's rate-limit headers to `headers` (and [`DEGRADED`] when it is degraded).
pub fn add_decision_headers(headers: &mut HeaderMap, j: &Judged, style: Headers, expose: bool) {
    if j.decision.is_degraded() {
        headers.insert(DEGRADED, HeaderValue::from_static("true"));
    }
    // Every value is rendered into one buffer, which the header values then share.
    let mut buf = Vec::with_capacity(384);
    let spans = render_headers(&j.decision, style, expose, &mut buf);
    headers.reserve(spans.len());
    let buf = Bytes::from(buf);
    for (name, range) in spans {
        if let Ok(v) = HeaderValue::from_maybe_shared(buf.slice(range)) {
            headers.append(header_name(name), v);
        }
    }
}

pub(crate) fn decision_response(
    j: &Judged,
    style: Rendering,
    deny_status: StatusCode,
    permit: Option<PermitOut<'_>>,
) -> Response {
    let status = if j.is_allowed() || permit.is_some() {
        StatusCode::OK
    } else if j.decision.outcome() == tollgate::Outcome::Unavailable {
        // A rule that fails closed while the shared store is down: not a rate-limit denial.
        StatusCode::SERVICE_UNAVAILABLE
    } else if deny_status != StatusCode::OK && j.decision.outcome() == tollgate::Outcome::Unmatched
    {
        // No rule covers the call and the policy denies such calls: waiting will not help.
        StatusCode::FORBIDDEN
    } else if deny_status != StatusCode::OK && j.decision.outcome() == tollgate::Outcome::TooLarge {
        // A cost that can never fit: waiting never helps, so not a 429 that clients retry
        // (the headers add `x-should-retry: false`).
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        deny_status
    };
    let body = if style.expose_rule_names {
        decision_body(j, permit)
    } else {
        crate::api::anonymous_body(j, permit)
    };
    let mut r = Response::new(axum::body::Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().reserve(10);
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_decision_headers(r.headers_mut(), j, style.headers, style.expose_rule_names);
    r
}
