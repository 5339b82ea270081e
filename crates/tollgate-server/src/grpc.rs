//! Envoy's rate limit service: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
//!
//! Each descriptor becomes a subject: its entries' keys name attributes (renamed through
//! `[grpc] descriptors`), and the request's domain fills `[grpc] domain_attribute` when set.
//! `hits_addend` is the cost (tokens by default, or requests; 0 means 1); a descriptor's own
//! `hits_addend` wins over the request's. Admission is all-or-nothing across descriptors: if
//! one is over its limit, what the others reserved is given back. A denial answers
//! `OVER_LIMIT` with the rate-limit headers to add to the response.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http;
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate::store::Store;
use tollgate::{Cost, Decision, LimitStatus, Subject, Window};

use crate::api::subject_from;
use crate::app::{record, Api, App, Judged};
use crate::config::{Headers, HitsAddend};
use crate::conn::{Acceptor, Answered, Conn, Connections, Protocol, Tracked};
use crate::error::ApiError;

/// The most descriptors one request may carry.
const MAX_DESCRIPTORS: usize = 16;

struct Rls<S: Store> {
    app: Arc<App<S>>,
}

/// Serves the rate limit service on `listener` until `stop`, under the connection rules of
/// [`crate::conn`], over HTTP/2 (gRPC).
pub(crate) fn spawn<S: Store>(
    app: Arc<App<S>>,
    listener: TcpListener,
    conns: Arc<Connections>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let routes = tonic::service::Routes::new(RateLimitServiceServer::new(Rls { app })).prepare();
    let mut http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new());
    tokio::spawn(async move {
        let mut acceptor = Acceptor::new(listener, Arc::clone(&conns), Protocol::Grpc);
        let stop = crate::server::stopped(stop);
        tokio::pin!(stop);
        loop {
            let (tcp, peer, registration) = tokio::select! {
                accepted = acceptor.accept() => accepted,
                () = &mut stop => break,
            };
            let service = Grpc {
                routes: routes.clone(),
                conn: Arc::clone(registration.conn()),
            };
            let http = http.clone();
            tokio::spawn(async move {
                let io = TokioIo::new(Tracked::new(tcp, registration.conn()));
                let served = http.serve_connection(io, service);
                tokio::pin!(served);
                let ended = registration
                    .serve(served.as_mut(), |c| c.graceful_shutdown())
                    .await;
                if let Some(Err(e)) = ended {
                    tracing::trace!(error = %e, %peer, "gRPC connection ended with an error");
                }
            });
        }
        drop(acceptor);
        conns.shut_down(Protocol::Grpc).await;
    })
}

/// Set by the handler: the request was decoded and reached it.
#[derive(Clone, Default)]
struct Reached(Arc<AtomicBool>);

/// The gRPC routes, for one connection: each call counts as in flight until its answer is
/// written, and a call whose message cannot be decoded is answered `INVALID_ARGUMENT` (tonic
/// answers `INTERNAL`, but the fault is the caller's).
#[derive(Clone)]
struct Grpc {
    routes: tonic::service::Routes,
    conn: Arc<Conn>,
}

type GrpcResponse = http::Response<Answered<tonic::body::Body>>;

impl hyper::service::Service<http::Request<Incoming>> for Grpc {
    type Response = GrpcResponse;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<GrpcResponse, Self::Error>>;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        let request = self.conn.begin();
        let reached = Reached::default();
        req.extensions_mut().insert(reached.clone());
        let mut routes = self.routes.clone();
        Box::pin(async move {
            // Routes are always ready (an axum router).
            let mut response = match tower::Service::call(&mut routes, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if !reached.0.load(Ordering::Acquire) {
                undecodable_is_invalid_argument(response.headers_mut());
            }
            Ok(response.map(|body| Answered::new(body, request)))
        })
    }
}

/// Turns the `INTERNAL` status tonic gives a request it could not decode (a malformed
/// message, a truncated frame, no message) into `INVALID_ARGUMENT`.
fn undecodable_is_invalid_argument(headers: &mut http::HeaderMap) {
    let internal = tonic::Code::Internal as i32;
    if headers.get("grpc-status").and_then(|v| v.to_str().ok()) == Some(&internal.to_string()) {
        let code = tonic::Code::InvalidArgument as i32;
        headers.insert("grpc-status", http::HeaderValue::from(code));
    }
}

fn pb_duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn clamp32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Envoy's view of a limit: an amount per unit of time. Windows that are not a whole unit
/// are scaled to the largest unit that fits in them.
fn current_limit(s: &LimitStatus) -> RateLimit {
    let (per_unit, unit) = match s.window {
        Window::Month => (s.amount, Unit::Month),
        Window::Length(d) => {
            let secs = d.as_secs_f64().max(1e-6);
            let units = [
                (31_536_000.0, Unit::Year),
                (86_400.0, Unit::Day),
                (3_600.0, Unit::Hour),
                (60.0, Unit::Minute),
                (1.0, Unit::Second),
            ];
            let (len, unit) = units
                .iter()
                .copied()
                .find(|(len, _)| secs >= *len)
                .unwrap_or((1.0, Unit::Second));
            let scaled = (s.amount as f64 * len / secs).round().max(1.0);
            (scaled as u64, unit)
        }
    };
    RateLimit {
        name: format!("{}.{}", s.rule, s.label),
        requests_per_unit: clamp32(per_unit),
        unit: unit as i32,
    }
}

/// The status Envoy sees for one descriptor: its tightest limit.
fn status_of(d: &Decision) -> DescriptorStatus {
    let code = if d.is_allowed() {
        Code::Ok
    } else {
        Code::OverLimit
    };
    let tightest = d.denied_by().or_else(|| {
        d.statuses()
            .iter()
            .min_by_key(|s| (s.remaining, std::cmp::Reverse(s.reset_after)))
    });
    DescriptorStatus {
        code: code as i32,
        current_limit: tightest.map(current_limit),
        limit_remaining: tightest.map_or(0, |s| clamp32(s.remaining)),
        duration_until_reset: tightest.map(|s| pb_duration(s.reset_after)),
        ..DescriptorStatus::default()
    }
}

fn headers_of(j: &Judged, style: Headers) -> Vec<HeaderValue> {
    let pairs = match style {
        Headers::Style(s) => tollgate::headers::headers(&j.decision, s),
        Headers::None => tollgate::headers::retry_after_header(&j.decision)
            .map(|r| vec![("retry-after", r)])
            .unwrap_or_default(),
    };
    pairs
        .into_iter()
        .map(|(k, v)| HeaderValue {
            key: k.to_owned(),
            value: v,
            ..HeaderValue::default()
        })
        .collect()
}

fn bearer(meta: &tonic::metadata::MetadataMap) -> Option<&str> {
    let v = meta.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl<S: Store> Rls<S> {
    async fn decide(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<(RateLimitResponse, bool), ApiError> {
        let started = Instant::now();
        let rt = self.app.runtime();
        let who = rt.principal(bearer(request.metadata()))?;
        let req = request.into_inner();
        if req.descriptors.is_empty() {
            return Err(ApiError::bad_request(
                "descriptors: at least one is required",
            ));
        }
        if req.descriptors.len() > MAX_DESCRIPTORS {
            return Err(ApiError::bad_request(format!(
                "descriptors: at most {MAX_DESCRIPTORS}"
            )));
        }
        let grpc = &rt.config.grpc;
        let mut subjects: Vec<(Subject<'_>, Cost)> = Vec::with_capacity(req.descriptors.len());
        for (i, desc) in req.descriptors.iter().enumerate() {
            let field = format!("descriptors[{i}]");
            let mut attrs: Vec<(&str, &str)> = Vec::with_capacity(desc.entries.len() + 1);
            if let Some(a) = &grpc.domain_attribute {
                if !req.domain.is_empty() {
                    attrs.push((a.as_str(), req.domain.as_str()));
                }
            }
            for e in &desc.entries {
                let name = grpc
                    .descriptors
                    .get(&e.key)
                    .map_or(e.key.as_str(), String::as_str);
                attrs.push((name, e.value.as_str()));
            }
            let mut subject = subject_from(attrs, &field)?;
            who.bind(&mut subject)?;
            let hits = desc
                .hits_addend
                .as_ref()
                .map_or(u64::from(req.hits_addend), |h| h.value)
                .max(1);
            let cost = match grpc.hits_addend {
                HitsAddend::Tokens => Cost::tokens(hits),
                HitsAddend::Requests => Cost::requests(hits),
            };
            subjects.push((subject, cost));
        }

        let mut judged = Vec::with_capacity(subjects.len());
        if let [(subject, cost)] = subjects.as_slice() {
            judged.push(
                self.app
                    .decide(Api::Grpc, subject, *cost, true, None)
                    .await?,
            );
        } else {
            // All or nothing: reserve each, then keep all or give all back.
            let mut permits = Vec::with_capacity(subjects.len());
            for (subject, cost) in &subjects {
                let (permit, j) = self.app.reserve_raw(subject, *cost).await?;
                permits.push((permit, *cost));
                judged.push(j);
            }
            let all = judged.iter().all(Judged::is_allowed);
            for (permit, cost) in permits {
                if let Some(mut p) = permit {
                    let settled = if all {
                        p.commit(cost).await
                    } else {
                        p.cancel().await
                    };
                    settled.map_err(ApiError::store)?;
                }
            }
            for j in &judged {
                record(Api::Grpc, j, started);
            }
        }

        let over = judged.iter().any(|j| !j.is_allowed());
        let degraded = judged.iter().any(|j| j.decision.is_degraded());
        let shown = judged
            .iter()
            .find(|j| !j.is_allowed())
            .or_else(|| judged.first());
        let response = RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses: judged.iter().map(|j| status_of(&j.decision)).collect(),
            response_headers_to_add: shown
                .map(|j| headers_of(j, rt.config.server.headers))
                .unwrap_or_default(),
            ..RateLimitResponse::default()
        };
        Ok((response, degraded))
    }
}

#[tonic::async_trait]
impl<S: Store> RateLimitService for Rls<S> {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        if let Some(r) = request.extensions().get::<Reached>() {
            r.0.store(true, Ordering::Release);
        }
        let (response, degraded) = self.decide(request).await.map_err(|e| e.to_grpc())?;
        let mut response = tonic::Response::new(response);
        if degraded {
            // As the HTTP API's header: the decision was made without the shared store.
            response.metadata_mut().insert(
                "x-tollgate-degraded",
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        Ok(response)
    }
}

/// The service's answer to one request, without a listener: for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) async fn answer<S: Store>(
    app: Arc<App<S>>,
    request: tonic::Request<RateLimitRequest>,
) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
    Rls { app }.should_rate_limit(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate::LimitKind;

    fn status(amount: u64, window: Window) -> LimitStatus {
        LimitStatus {
            rule: "r",
            label: "l",
            kind: LimitKind::Requests,
            amount,
            capacity: amount,
            window,
            quota: false,
            admitted: true,
            remaining: amount,
            reset_after: Duration::ZERO,
            retry_after: Duration::ZERO,
        }
    }

    #[test]
    fn windows_map_to_envoy_units() {
        let l = current_limit(&status(60, Window::MINUTE));
        assert_eq!((l.requests_per_unit, l.unit), (60, Unit::Minute as i32));
        let l = current_limit(&status(100, Window::Length(Duration::from_secs(7200))));
        assert_eq!((l.requests_per_unit, l.unit), (50, Unit::Hour as i32));
        let l = current_limit(&status(5, Window::Month));
        assert_eq!((l.requests_per_unit, l.unit), (5, Unit::Month as i32));
        assert_eq!(l.name, "r.l");
    }
}
