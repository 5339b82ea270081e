//! The admin API: limits of one subject set at run time (`/v1/admin/subject-limits`), and the
//! subjects with live buckets of a rule (`/v1/admin/subjects`). Every call needs the admin
//! token (when tokens are configured).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tollgate::store::Store;

use crate::api::parse_json;
use crate::app::{App, Principal};
use crate::error::ApiError;
use crate::subject_limits::SubjectLimits;

type AppState<S> = State<Arc<App<S>>>;

/// The caller, who must hold the admin token.
fn admin<S: Store>(app: &App<S>, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let who = app
        .runtime_ref()
        .principal(crate::request::bearer(headers))?;
    if !who.is_admin() {
        metrics::counter!("tollgate_auth_failures_total", "why" => "admin").increment(1);
        return Err(ApiError::forbidden("this needs the admin token"));
    }
    Ok(who)
}

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("the request body is larger than the server accepts")
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
}

/// `PUT /v1/admin/subject-limits`: sets one subject's limits (replacing its earlier ones).
pub(crate) async fn put_subject_limits<S: Store>(
    State(app): AppState<S>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = admin(&app, &headers)?;
    let setting: SubjectLimits = parse_json(&body_of(body)?)?;
    if setting.limits.is_empty() {
        return Err(ApiError::bad_request(
            "limits: give at least one (DELETE removes a subject's limits)",
        ));
    }
    let subject = setting.subject.clone();
    let rule = setting.rule.clone();
    let (rules, replaced) = app.set_subject_limits(setting, &who).await?;
    Ok(Json(json!({
        "subject": subject,
        "rule": rule,
        "rules": rules,
        "replaced": replaced,
        "kept_in": app.settings().kept_in(),
    }))
    .into_response())
}

/// The body of `DELETE /v1/admin/subject-limits`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveSubjectLimits {
    /// The subject, as it was set.
    pub subject: std::collections::BTreeMap<String, String>,
    /// The rule, as it was set (absent if it was set for every rule).
    #[serde(default)]
    pub rule: Option<String>,
}

/// `DELETE /v1/admin/subject-limits`: removes one subject's limits set at run time.
pub(crate) async fn delete_subject_limits<S: Store>(
    State(app): AppState<S>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = admin(&app, &headers)?;
    let req: RemoveSubjectLimits = parse_json(&body_of(body)?)?;
    let setting = SubjectLimits {
        subject: req.subject.clone(),
        rule: req.rule.clone(),
        limits: Vec::new(),
        set_by: String::new(),
    };
    let (_, removed) = app.set_subject_limits(setting, &who).await?;
    if !removed {
        return Err(ApiError::not_found(
            "no limits were set at run time for this subject and rule",
        ));
    }
    Ok(Json(json!({ "subject": req.subject, "rule": req.rule, "removed": true })).into_response())
}

/// `GET /v1/admin/subject-limits`: the subject limits set at run time.
pub(crate) async fn list_subject_limits<S: Store>(
    State(app): AppState<S>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    let all: Vec<SubjectLimits> = app.settings().all().into_values().collect();
    Ok(Json(json!({ "kept_in": app.settings().kept_in(), "settings": all })).into_response())
}

/// The query of `GET /v1/admin/subjects`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectsQuery {
    /// The rule.
    pub rule: String,
    /// The `next` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Subjects per page (1 to 1,000; default 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /v1/admin/subjects?rule=R[&cursor=C][&limit=N]`: the subjects of rule `R` with live
/// buckets, with their usage, a page at a time.
pub(crate) async fn list_subjects<S: Store>(
    State(app): AppState<S>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<SubjectsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    let axum::extract::Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=tollgate::subjects::MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: 1 to {} subjects per page",
            tollgate::subjects::MAX_PAGE
        )));
    }
    if app.runtime_ref().config.server.max_tracked_subjects == 0 {
        return Err(ApiError::not_found(
            "subjects are not tracked ([server] max_tracked_subjects = 0)",
        ));
    }
    let page = app
        .limiter()
        .subjects(&q.rule, q.cursor.as_deref(), limit)
        .await
        .map_err(ApiError::store)?;
    let subjects: Vec<serde_json::Value> = page
        .subjects
        .iter()
        .map(|s| {
            json!({
                "subject": s.values.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "limits": s.usage.iter().map(crate::api::usage_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "rule": q.rule,
        "subjects": subjects,
        "next": page.next,
        "tracked": page.tracked,
    }))
    .into_response())
}
