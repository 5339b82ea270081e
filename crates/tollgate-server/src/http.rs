//! The HTTP JSON API (axum).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tollgate::store::fallback::BreakerState;
use tollgate::store::Store;
use tower::Service;

use crate::api::{
    parse_decision, parse_json, subject_from, usage_json, CommitRequest, PermitOut, ResetRequest,
};
use crate::app::{Api, App, Principal, Settle};
use crate::conn::{Acceptor, Answered, Connections, Protocol, Tracked};
use crate::error::ApiError;
use crate::respond::decision_response;
use crate::store::ServedStore;

pub use crate::request::{bearer, client_ip};
pub use crate::respond::{add_decision_headers, Rendering, DEGRADED};

type AppState<S> = State<Arc<App<S>>>;

/// Serves `router` over HTTP/1.1 (keep-alive, `TCP_NODELAY`) on `listener` until `stop`
/// resolves, under the connection rules of [`crate::conn`] (cap, read and idle timeouts);
/// then stops accepting, lets each open connection finish the request it is answering, and
/// returns once they are all closed.
///
/// hyper's HTTP/1 connection is used directly: the service speaks no HTTP/2, so it does not
/// read each connection's first bytes to tell the two apart. Each request carries the
/// peer's address as [`ConnectInfo`]. A request with both `Content-Length` and
/// `Transfer-Encoding` is answered 400 and its connection closed (see [`crate::framing`]).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    conns: Arc<Connections>,
    stop: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(crate::framing::MAX_HEAD);
    let mut acceptor = Acceptor::new(listener, Arc::clone(&conns), Protocol::Http1);
    tokio::pin!(stop);
    loop {
        let (tcp, peer, registration) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = &mut stop => break,
        };
        let router = router.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let conn = Arc::clone(registration.conn());
            let track = Arc::clone(&conn);
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let request = track.begin();
                let answer = if track.smuggled(request.index()) {
                    futures::future::Either::Left(std::future::ready(Ok(smuggled())))
                } else {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    // A router is always ready (`poll_ready` returns `Ready`).
                    futures::future::Either::Right(router.clone().call(req.map(Body::new)))
                };
                async move {
                    let response: Response = answer.await?;
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| Body::new(Answered::new(body, request))),
                    )
                }
            });
            let served = http.serve_connection(TokioIo::new(Tracked::new(tcp, &conn)), service);
            tokio::pin!(served);
            let ended = registration
                .serve(served.as_mut(), |c| c.graceful_shutdown())
                .await;
            if let Some(Err(e)) = ended {
                tracing::trace!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(acceptor);
    conns.shut_down(Protocol::Http1).await;
}

/// The answer to a request with both `Content-Length` and `Transfer-Encoding`; the
/// connection is closed after it.
fn smuggled() -> Response {
    let mut r =
        ApiError::bad_request("a request may not have both Content-Length and Transfer-Encoding")
            .into_response();
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    r
}

/// The API's routes over `app`. Bodies larger than `max_body` bytes get 413.
pub fn router<S: ServedStore>(app: Arc<App<S>>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/check", post(check::<S>))
        .route("/v1/peek", post(peek::<S>))
        .route("/v1/reserve", post(reserve::<S>))
        .route("/v1/acquire", post(crate::acquire::acquire::<S>))
        .route("/v1/permits/{id}/commit", post(commit::<S>))
        .route("/v1/permits/{id}/cancel", post(cancel::<S>))
        .route("/v1/permits/{id}/renew", post(renew::<S>))
        .route("/v1/usage", get(usage::<S>))
        .route("/v1/reset", post(reset::<S>))
        .route("/v1/admin/subjects", get(crate::admin::list_subjects::<S>))
        .route(
            "/v1/admin/subject-limits",
            get(crate::admin::list_subject_limits::<S>)
                .put(crate::admin::put_subject_limits::<S>)
                .delete(crate::admin::delete_subject_limits::<S>),
        )
        .route("/v1/forward-auth", forward_auth_methods::<S>())
        .route("/v1/forward-auth/{*rest}", forward_auth_methods::<S>())
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S>))
        .route("/openapi.json", get(crate::openapi::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

/// The forward-auth endpoint on the eight methods OpenAPI 3.1 can describe (the proxy asks
/// with the client's method; `get` answers `HEAD` too). Any other method is 405 with
/// `Allow`, as `/openapi.json` says.
fn forward_auth_methods<S: ServedStore>() -> axum::routing::MethodRouter<Arc<App<S>>> {
    let handler = crate::forward_auth::forward_auth::<S>;
    get(handler)
        .post(handler)
        .put(handler)
        .patch(handler)
        .delete(handler)
        .options(handler)
        .trace(handler)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}

/// A known path asked with a method it does not serve: the JSON error every other refusal
/// gets (axum adds the `Allow` header).
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::method_not_allowed(format!(
        "this endpoint does not answer {method}; see the Allow header and /openapi.json"
    ))
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

async fn authed<S: Store>(app: &App<S>, headers: &HeaderMap) -> Result<Principal, ApiError> {
    app.runtime_ref().principal(bearer(headers))
}

async fn decide<S: Store>(
    app: &App<S>,
    api: Api,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let rt = app.runtime_ref();
    let who = rt.principal(bearer(headers))?;
    let style = Rendering::of(&rt.config.server);
    drop(rt);
    let body = body_of(body)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let req = parse_decision(&body)?;
    let mut subject = subject_from(req.subject.pairs(), "subject")?;
    who.bind(&mut subject)?;
    let request_id = req.request_id.as_ref().map(|s| &*s.0);
    if let Some(id) = request_id {
        if id.is_empty() || id.len() > 128 {
            return Err(ApiError::bad_request("request_id: 1 to 128 bytes"));
        }
    }
    let cost = req.cost.to_cost();
    let call = crate::api::call_limits(req.limits.as_deref(), who.is_admin())?;
    match api {
        Api::Reserve => {
            let r = app.reserve(&subject, cost, who, &call).await?;
            let permit = r.id.as_deref().map(|id| PermitOut {
                id,
                expires_in_ms: u64::try_from(r.expires_in.as_millis()).unwrap_or(u64::MAX),
            });
            Ok(decision_response(
                &r.judged,
                style,
                StatusCode::TOO_MANY_REQUESTS,
                permit,
            ))
        }
        Api::Peek => {
            let j = app
                .decide_with(api, &subject, cost, false, None, &call)
                .await?;
            Ok(decision_response(&j, style, StatusCode::OK, None))
        }
        _ => {
            let j = app
                .decide_with(api, &subject, cost, true, request_id, &call)
                .await?;
            Ok(decision_response(
                &j,
                style,
                StatusCode::TOO_MANY_REQUESTS,
                None,
            ))
        }
    }
}

/// The request's headers, moved out of the request instead of copied as axum's `HeaderMap`
/// extractor does. Only for handlers that read no header after it (the body extractor
/// reads none).
struct TakenHeaders(HeaderMap);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TakenHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(TakenHeaders(std::mem::take(&mut parts.headers)))
    }
}

async fn check<S: Store>(
    State(app): AppState<S>,
    TakenHeaders(headers): TakenHeaders,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    decide(&app, Api::Check, &headers, body).await
}

async fn peek<S: Store>(
    State(app): AppState<S>,
    TakenHeaders(headers): TakenHeaders,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    decide(&app, Api::Peek, &headers, body).await
}

async fn reserve<S: Store>(
    State(app): AppState<S>,
    TakenHeaders(headers): TakenHeaders,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    decide(&app, Api::Reserve, &headers, body).await
}

fn valid_permit_id(id: &str) -> Result<(), ApiError> {
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ApiError::bad_request("not a permit id"));
    }
    Ok(())
}

async fn settle<S: Store>(
    app: &App<S>,
    id: &str,
    how: Settle,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let who = authed(app, headers).await?;
    valid_permit_id(id)?;
    let s = app.settle(id, how, &who).await?;
    Ok(Json(json!({ "id": id, "settled": s.how, "already": s.already })).into_response())
}

async fn commit<S: Store>(
    State(app): AppState<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_of(body)?;
    let req: CommitRequest = if body.is_empty() {
        CommitRequest::default()
    } else {
        parse_json(&body)?
    };
    settle(&app, &id, Settle::Commit(req.cost), &headers).await
}

async fn cancel<S: Store>(
    State(app): AppState<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    settle(&app, &id, Settle::Cancel, &headers).await
}

async fn renew<S: Store>(
    State(app): AppState<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = authed(&app, &headers).await?;
    valid_permit_id(&id)?;
    let (held, ttl) = app.renew(&id, &who).await?;
    Ok(Json(json!({
        "id": id,
        "slots_held": held,
        "expires_in_ms": u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
    }))
    .into_response())
}

async fn usage<S: Store>(
    State(app): AppState<S>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let who = authed(&app, &headers).await?;
    let q = query_pairs(query.as_deref().unwrap_or_default())?;
    let mut subject = subject_from(q.iter().map(|(k, v)| (k.as_str(), v.as_str())), "query")?;
    who.bind(&mut subject)?;
    let usage = app
        .limiter()
        .usage(&subject)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(json!({
        "subject": subject.iter().collect::<BTreeMap<_, _>>(),
        "limits": usage.iter().map(usage_json).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn reset<S: Store>(
    State(app): AppState<S>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = authed(&app, &headers).await?;
    if !who.is_admin() {
        metrics::counter!("tollgate_auth_failures_total", "why" => "admin").increment(1);
        return Err(ApiError::forbidden("resetting needs the admin token"));
    }
    let body = body_of(body)?;
    let req: ResetRequest = parse_json(&body)?;
    let limiter = app.limiter();
    let answer = match (&req.subject, &req.rule) {
        (None, None) => {
            return Err(ApiError::bad_request(
                "give a subject, a rule, or both (a rule alone resets all its buckets)",
            ))
        }
        (Some(attrs), rule) => {
            let subject = subject_from(
                attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                "subject",
            )?;
            let n = match rule {
                Some(r) => limiter.reset_in(r, &subject).await,
                None => limiter.reset(&subject).await,
            }
            .map_err(ApiError::store)?;
            tracing::info!(subject = %subject, rule = ?rule, buckets = n, by = who.name(), "buckets reset");
            let mut answer =
                json!({ "reset": n > 0, "buckets": n, "subject": attrs, "rule": rule });
            if n == 0 {
                answer["message"] = json!(crate::app::nothing_matched(
                    &limiter.policy(),
                    &subject,
                    rule.as_deref()
                ));
            }
            answer
        }
        (None, Some(r)) => {
            let n = limiter.reset_rule(r).await.map_err(ApiError::store)?;
            tracing::info!(rule = %r, buckets = n, by = who.name(), "rule reset");
            let mut answer = json!({ "reset": n > 0, "rule": r, "buckets": n });
            if n == 0 {
                answer["message"] =
                    json!(format!("rule {r:?} has no bucket in use: nothing to reset"));
            }
            answer
        }
    };
    Ok(Json(answer).into_response())
}

async fn metrics<S: Store>(State(app): AppState<S>) -> Response {
    app.refresh_gauges();
    crate::telemetry::collect_process_metrics();
    match crate::telemetry::prometheus() {
        Some(h) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        None => ApiError::unavailable("another metrics recorder is installed in this process")
            .into_response(),
    }
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: 200 when the service can decide, 503 when it cannot.
///
/// Behind the fallback store (Redis with `fallback = true`, the default) the service can
/// always decide: while Redis is down the rules' failure modes do (`open`, `closed`,
/// `local`). It then answers 200 with `"status": "degraded"`, the breaker's state and Redis's
/// error, so that a load balancer keeps sending traffic to the instances (taking every
/// instance out of service because their shared Redis is down would turn a degraded limiter
/// into an outage), while the body and the `tollgate_breaker_state` gauge tell the operator.
/// `[server] ready_when_degraded = false` answers 503 instead. Without the fallback, a Redis
/// that does not answer is 503.
async fn readyz<S: ServedStore>(State(app): AppState<S>) -> Response {
    let health = app.limiter().store().health().await;
    let rt = app.runtime();
    let ready = health.can_decide && (!health.degraded || rt.config.server.ready_when_degraded);
    let status = if !health.can_decide {
        "unavailable"
    } else if health.degraded {
        "degraded"
    } else {
        "ready"
    };
    let mut body = json!({
        "status": status,
        "store": app.store_kind(),
        "config_generation": rt.generation,
    });
    if let Some(b) = health.breaker {
        body["breaker"] = json!(match b {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        });
    }
    if let Some(e) = health.error {
        body["error"] = json!(e);
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Decodes `%XX` escapes and `+` (a space, as in forms) in one part of a query string.
fn percent_decode(part: &str) -> Option<Vec<u8>> {
    let b = part.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The parameters of a query string (`a=1&b=2`), each decoded strictly: a value whose
/// escapes do not decode to UTF-8 (`user=%FF`) is refused, naming it, rather than turned into
/// U+FFFD (which would put `%FF` and `%FE` in one bucket); so is a parameter given twice.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let name = percent_decode(name)
            .and_then(|n| String::from_utf8(n).ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "query: the parameter name {:?} is not valid percent-encoded UTF-8",
                    crate::config::truncate(name, 32)
                ))
            })?;
        let bad = |what: &str| {
            ApiError::bad_request(format!(
                "query.{}: {what} ({:?})",
                crate::config::truncate(&name, 64),
                crate::config::truncate(value, 32)
            ))
        };
        let value = percent_decode(value)
            .ok_or_else(|| bad("a % not followed by two hex digits"))
            .and_then(|v| {
                String::from_utf8(v).map_err(|_| bad("not valid UTF-8 once percent-decoded"))
            })?;
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::bad_request(format!(
                "query.{}: given more than once",
                crate::config::truncate(&name, 64)
            )));
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_strictly() {
        let q = query_pairs("tenant=a%20b&user=caf%C3%A9&model=gpt+4&empty=&flag").unwrap();
        let want = [
            ("tenant", "a b"),
            ("user", "café"),
            ("model", "gpt 4"),
            ("empty", ""),
            ("flag", ""),
        ];
        assert_eq!(
            q.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            want
        );
        assert!(query_pairs("").unwrap().is_empty());
        for (bad, field) in [
            ("user=%FF", "query.user: not valid UTF-8"),
            ("tenant=a&user=%FE", "query.user: not valid UTF-8"),
            ("user=%4", "query.user: a % not followed"),
            ("user=%zz", "query.user: a % not followed"),
            ("user=a&user=b", "query.user: given more than once"),
            ("%FF=1", "query: the parameter name"),
        ] {
            let e = query_pairs(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message.starts_with(field), "{bad}: {}", e.message);
        }
    }
}
