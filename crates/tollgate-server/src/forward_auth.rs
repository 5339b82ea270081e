//! The forward-auth endpoint, for nginx `auth_request`, Traefik `ForwardAuth` and Envoy's
//! HTTP `ext_authz`: any method on `/v1/forward-auth` (or below it, as Envoy appends the
//! original path). The subject comes from request headers (`[forward_auth] attributes`), the
//! estimated tokens from `tokens_header`, and optionally the client IP. It answers 200 with
//! the rate-limit headers, or 429 with `Retry-After` and the headers (413 with
//! `x-should-retry: false` for a cost that can never fit, 403 for a call no rule covers
//! under `unmatched = "deny"`, 503 for a rule that fails closed while Redis is down); the
//! call is spent when admitted. Every answer says which in `x-tollgate-outcome`, so that
//! with `[forward_auth] deny_status` (one status for every refusal, 403 behind nginx) the
//! proxy can still answer each refusal as it should.
//!
//! The caller's token is read from `[forward_auth] token_header` (`X-Tollgate-Token` by
//! default, which the proxy adds). `Authorization` is not read unless that setting names
//! it: behind a proxy it carries the client's own key for the upstream.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tollgate::store::Store;
use tollgate::Cost;

use crate::api::subject_from;
use crate::app::{Api, App};
use crate::error::ApiError;
use crate::request::{bearer, client_ip};
use crate::respond::add_decision_headers;

/// The tollgate token of a forward-auth request, from `header` (`authorization`: the bearer
/// token of `Authorization`).
fn token<'h>(headers: &'h HeaderMap, header: &str) -> Option<&'h str> {
    if header == "authorization" {
        return bearer(headers);
    }
    headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The status of a refusal with `outcome` when no single deny status is configured.
fn refusal_status(outcome: tollgate::Outcome) -> StatusCode {
    match outcome {
        // Waiting never helps: not a 429 that clients retry.
        tollgate::Outcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        tollgate::Outcome::Unmatched => StatusCode::FORBIDDEN,
        tollgate::Outcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::TOO_MANY_REQUESTS,
    }
}

/// The handler.
pub(crate) async fn forward_auth<S: Store>(
    State(app): State<Arc<App<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rt = app.runtime();
    let fa = &rt.config.forward_auth;
    let who = rt.principal(token(&headers, &fa.token_header))?;
    let mut values: Vec<(&str, String)> = Vec::with_capacity(fa.attributes.len() + 1);
    for (attr, header) in &fa.attributes {
        if let Some(v) = headers.get(header.as_str()) {
            let v = v.to_str().map_err(|_| {
                ApiError::bad_request(format!("header {header}: not visible ASCII"))
            })?;
            values.push((attr.as_str(), v.trim().to_owned()));
        }
    }
    if let Some(attr) = &fa.ip_attribute {
        let ip = client_ip(peer.ip(), &headers, &rt.config.server.trusted_proxies);
        values.push((attr.as_str(), ip.to_string()));
    }
    let mut subject = subject_from(values.iter().map(|(k, v)| (*k, v.as_str())), "headers")?;
    who.bind(&mut subject)?;
    let tokens = match &fa.tokens_header {
        Some(h) => match headers.get(h.as_str()) {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("header {h}: not a whole number of tokens"))
                })?,
            None => 0,
        },
        None => 0,
    };
    let j = app
        .decide(Api::ForwardAuth, &subject, Cost::tokens(tokens), true, None)
        .await?;
    let outcome = j.decision.outcome();
    let status = if j.is_allowed() {
        StatusCode::OK
    } else {
        fa.deny_status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or_else(|| refusal_status(outcome))
    };
    let expose = rt.config.server.expose_rule_names;
    let body = if j.is_allowed() {
        String::new()
    } else if expose {
        j.decision.to_string()
    } else {
        crate::api::anonymous_message(&j.decision)
    };
    let mut r = (status, body).into_response();
    add_decision_headers(r.headers_mut(), &j, rt.config.server.headers, expose);
    r.headers_mut().insert(
        "x-tollgate-outcome",
        axum::http::HeaderValue::from_static(outcome.as_str()),
    );
    if let Some(reason) = j.decision.reason() {
        if let Ok(v) = axum::http::HeaderValue::from_str(reason.error_code()) {
            r.headers_mut().insert("x-tollgate-error-code", v);
        }
    }
    if j.shadow.is_some() {
        r.headers_mut().insert(
            "x-tollgate-shadow",
            axum::http::HeaderValue::from_static("would-deny"),
        );
    }
    Ok(r)
}
