//! `POST /v1/acquire`: a check (or a reservation) that waits for admission, so that HTTP
//! clients need not sleep and retry.
//!
//! The request is held open until the call is admitted or `max_wait_ms` has passed (cut to
//! `[server] max_acquire_wait`, 30 s by default). Waiters on one bucket are admitted in arrival
//! order, and wake as soon as capacity is given back in this process (a permit settled, a
//! slot released) or when their `retry_after` comes. A client that goes away leaves the queue:
//! its call is not admitted later and spends nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tollgate::store::Store;

use crate::api::{parse_json, subject_from, CostBody, PermitOut};
use crate::app::App;
use crate::error::ApiError;

/// The body of `/v1/acquire`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// The subject's attributes.
    pub subject: std::collections::BTreeMap<String, String>,
    /// The cost (default: one request).
    #[serde(default)]
    pub cost: CostBody,
    /// How long to wait for admission, in milliseconds (0: answer at once). Cut to the
    /// server's `max_acquire_wait`.
    #[serde(default, deserialize_with = "crate::api::whole")]
    pub max_wait_ms: u64,
    /// Keep the admitted reservation as a permit to commit, cancel or renew (as
    /// `/v1/reserve`); by default it is released at once, as `/v1/check` spends.
    #[serde(default)]
    pub permit: bool,
}

/// `POST /v1/acquire`.
pub(crate) async fn acquire<S: Store>(
    State(app): State<Arc<App<S>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let rt = app.runtime_ref();
    let who = rt.principal(crate::request::bearer(&headers))?;
    let style = crate::respond::Rendering::of(&rt.config.server);
    drop(rt);
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("the request body is larger than the server accepts")
        } else {
            ApiError::bad_request(e.body_text())
        }
    })?;
    let req: AcquireRequest = parse_json(&body)?;
    let mut subject = subject_from(
        req.subject.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        "subject",
    )?;
    who.bind(&mut subject)?;
    let a = app
        .acquire(
            &subject,
            req.cost.to_cost(),
            Duration::from_millis(req.max_wait_ms),
            who,
            req.permit,
        )
        .await?;
    let permit = a.id.as_deref().map(|id| PermitOut {
        id,
        expires_in_ms: u64::try_from(a.expires_in.as_millis()).unwrap_or(u64::MAX),
    });
    let mut r =
        crate::respond::decision_response(&a.judged, style, StatusCode::TOO_MANY_REQUESTS, permit);
    // The decision's JSON with how long the request waited.
    let waited = u64::try_from(a.waited.as_millis()).unwrap_or(u64::MAX);
    let body = std::mem::take(r.body_mut());
    let mut bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::unavailable(format!("rendering the answer: {e}")))?
        .to_vec();
    if bytes.last() == Some(&b'}') {
        bytes.pop();
        bytes.extend_from_slice(format!(",\"waited_ms\":{waited}}}").as_bytes());
    }
    *r.body_mut() = axum::body::Body::from(bytes);
    Ok(r)
}
