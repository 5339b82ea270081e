//! Envoy's rate limit service: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
//!
//! Each descriptor becomes a subject: its entries' keys name attributes (renamed through
//! `[grpc] descriptors`), and the request's domain fills `[grpc] domain_attribute` when set.
//! `hits_addend` is the cost (tokens by default, or requests; 0 means 1); a descriptor's own
//! `hits_addend` wins over the request's. Admission is all-or-nothing across descriptors: if
//! one is over its limit, what the others reserved is given back. A denial answers
//! `OVER_LIMIT` with the rate-limit headers to add to the response.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http;
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
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
use tollgate::policy::SetAction;
use tollgate::store::Store;
use tollgate::{CallLimits, Cost, LimitKind, LimitStatus, Subject, Window};

use crate::api::subject_from;
use crate::app::{record, Api, App, Judged};
use crate::config::{Headers, HitsAddend};
use crate::conn::{Acceptor, Answered, Conn, Connections, Protocol, Tracked};
use crate::descriptor_limit;
use crate::error::ApiError;

/// The rate limit service's full name, as health checks and reflection name it.
pub(crate) const RLS_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";

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
    let (health, health_service) = tonic_health::server::health_reporter();
    let routes = tonic::service::Routes::new(RateLimitServiceServer::new(Rls { app }))
        .add_service(health_service)
        .add_service(crate::reflection::v1())
        .add_service(crate::reflection::v1alpha())
        .prepare();
    let mut http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new());
    tokio::spawn(async move {
        // The whole server ("") and the rate limit service answer SERVING while the port
        // is open (`grpc.health.v1.Health`).
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        health
            .set_service_status(RLS_SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        let mut acceptor = Acceptor::new(listener, Arc::clone(&conns), Protocol::Grpc);
        let stop = crate::shutdown::stopped(stop);
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
        let rls = req
            .uri()
            .path()
            .starts_with(concat!("/", "envoy.service.ratelimit.v3."));
        let reached = Reached::default();
        req.extensions_mut().insert(reached.clone());
        let mut routes = self.routes.clone();
        Box::pin(async move {
            // Routes are always ready (an axum router).
            let mut response = match tower::Service::call(&mut routes, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if rls && !reached.0.load(Ordering::Acquire) {
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
/// are scaled to the largest unit that fits in them. Named `rule.label`, or `label` alone
/// where rule names are kept from clients (`[server] expose_rule_names = false`).
fn current_limit(s: &LimitStatus, expose: bool) -> RateLimit {
    let (per_unit, unit) = match s.window {
        Window::Month => (s.amount, Unit::Month),
        Window::Length(d) => {
            let secs = d.as_secs_f64().max(1e-6);
            let units = [
                (31_536_000.0, Unit::Year),
                (604_800.0, Unit::Week),
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
        name: if expose {
            format!("{}.{}", s.rule, s.label)
        } else {
            s.label.to_string()
        },
        requests_per_unit: clamp32(per_unit),
        unit: unit as i32,
    }
}

/// The status Envoy sees for one descriptor: its tightest limit. `unspent` is the cost of a
/// descriptor that would have been admitted but was given back (another descriptor of the
/// request was over its limit): its remaining is reported as it is, not as if spent. A
/// descriptor a rule in shadow mode judged over its limit shows that limit, with code OK.
fn status_of(j: &Judged, unspent: Option<Cost>, expose: bool) -> DescriptorStatus {
    let (d, code) = match &j.shadow {
        Some(shadow) => (shadow, Code::Ok),
        None if j.is_allowed() => (&j.decision, Code::Ok),
        None => (&j.decision, Code::OverLimit),
    };
    let remaining = |s: &LimitStatus| match unspent {
        Some(c) if s.admitted => s.remaining.saturating_add(c.of(s.kind)).min(s.capacity),
        _ => s.remaining,
    };
    let tightest = d.denied_by().or_else(|| {
        d.statuses()
            .iter()
            .min_by_key(|s| (remaining(s), std::cmp::Reverse(s.reset_after)))
    });
    DescriptorStatus {
        code: code as i32,
        current_limit: tightest.map(|s| current_limit(s, expose)),
        limit_remaining: tightest.map_or(0, |s| clamp32(remaining(s))),
        duration_until_reset: tightest.map(|s| pb_duration(s.reset_after)),
        ..DescriptorStatus::default()
    }
}

/// The headers Envoy adds to the client's answer: the rate-limit headers of `style`, naming
/// limits by rule only where `expose` (`[server] expose_rule_names`).
fn headers_of(j: &Judged, style: Headers, expose: bool) -> Vec<HeaderValue> {
    let mut buf = Vec::with_capacity(384);
    crate::respond::render_headers(&j.decision, style, expose, &mut buf)
        .into_iter()
        .map(|(k, range)| HeaderValue {
            key: k.to_owned(),
            value: String::from_utf8_lossy(&buf[range]).into_owned(),
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

/// One descriptor of a request, read and checked.
struct Read<'r> {
    /// The subject its entries (and the domain) make.
    subject: Subject<'r>,
    /// What it spends.
    cost: Cost,
    /// Its own limit (`RateLimitDescriptor.limit`): the subject and call limits of the
    /// descriptor-limit policy, or `None` when it asks for zero (always over).
    own: Option<Option<(Subject<'static>, CallLimits)>>,
    /// `domain.key_value.key_value`: names it in detailed metrics and partitions its own limit.
    key: String,
}

/// What is done with one descriptor.
enum Step {
    /// Decided by the policy.
    Policy,
    /// Decided by its own limit.
    Own(Box<(Subject<'static>, CallLimits)>),
    /// Answered without deciding: unlimited, replaced, or refused.
    Answered(DescriptorStatus),
}

/// The descriptor as envoyproxy/ratelimit names it: `domain.key_value.key` (a value left
/// out when empty), for metrics and the partition of its own limit.
fn descriptor_key(domain: &str, entries: &[(&str, &str)]) -> String {
    let mut key = domain.to_owned();
    for (k, v) in entries {
        key.push('.');
        key.push_str(k);
        if !v.is_empty() {
            key.push('_');
            key.push_str(v);
        }
    }
    key
}

/// A status that is not a decision: OK with `remaining`, or over a limit of zero.
fn answered(code: Code, remaining: u32, limit: Option<RateLimit>) -> DescriptorStatus {
    DescriptorStatus {
        code: code as i32,
        current_limit: limit,
        limit_remaining: remaining,
        ..DescriptorStatus::default()
    }
}

impl<S: Store> Rls<S> {
    /// Reads descriptor `i`: its subject (entries renamed through `[grpc] descriptors`, the
    /// domain as an attribute or as the scope of its buckets), its cost and its own limit.
    fn read<'r>(
        &self,
        grpc: &'r crate::config::GrpcConfig,
        domain: &'r str,
        i: usize,
        desc: &'r RateLimitDescriptor,
        request_hits: u32,
    ) -> Result<Read<'r>, ApiError> {
        let field = format!("descriptors[{i}]");
        if desc.entries.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{field}: at least one entry is required"
            )));
        }
        let mut attrs: Vec<(&str, &str)> = Vec::with_capacity(desc.entries.len() + 1);
        if let Some(a) = &grpc.domain_attribute {
            attrs.push((a.as_str(), domain));
        }
        let mut raw: Vec<(&str, &str)> = Vec::with_capacity(desc.entries.len());
        for e in &desc.entries {
            let name = grpc
                .descriptors
                .get(&e.key)
                .map_or(e.key.as_str(), String::as_str);
            if let Some((earlier, _)) = attrs.iter().find(|(a, _)| *a == name) {
                return Err(ApiError::bad_request(format!(
                    "{field}: key {:?} names attribute {name:?}, which the descriptor already has ({})",
                    e.key,
                    if grpc.domain_attribute.as_deref() == Some(earlier) {
                        "from the domain"
                    } else {
                        "a repeated key"
                    }
                )));
            }
            attrs.push((name, e.value.as_str()));
            raw.push((e.key.as_str(), e.value.as_str()));
        }
        let mut subject = subject_from(attrs, &field)?.exact();
        if grpc.domain_attribute.is_none() {
            subject = subject.scoped(domain);
        }
        let hits = desc
            .hits_addend
            .as_ref()
            .map_or(u64::from(request_hits), |h| h.value)
            .max(1);
        let (cost, kind) = match grpc.hits_addend {
            HitsAddend::Tokens => (Cost::tokens(hits), LimitKind::Tokens),
            HitsAddend::Requests => (Cost::requests(hits), LimitKind::Requests),
        };
        let key = descriptor_key(domain, &raw);
        let own = match &desc.limit {
            None => None,
            Some(l) => {
                let (unit, window) = descriptor_limit::window_of(l.unit).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{field}.limit.unit: {} is not an Envoy unit (SECOND to WEEK)",
                        l.unit
                    ))
                })?;
                Some((l.requests_per_unit > 0).then(|| {
                    descriptor_limit::subject(
                        kind,
                        unit,
                        window,
                        u64::from(l.requests_per_unit),
                        key.clone(),
                    )
                }))
            }
        };
        Ok(Read {
            subject,
            cost,
            own,
            key,
        })
    }

    async fn decide(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<(RateLimitResponse, bool), ApiError> {
        let started = Instant::now();
        let rt = self.app.runtime();
        let who = rt.principal(bearer(request.metadata()))?;
        let req = request.into_inner();
        if req.domain.is_empty() {
            return Err(ApiError::bad_request("domain: must not be empty"));
        }
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
        let mut read = Vec::with_capacity(req.descriptors.len());
        for (i, desc) in req.descriptors.iter().enumerate() {
            let mut r = self.read(grpc, &req.domain, i, desc, req.hits_addend)?;
            who.bind(&mut r.subject)?;
            read.push(r);
        }

        // The rules each descriptor meets, and the rules replaced by them.
        let policy = &rt.config.policy;
        let rules: Vec<Vec<&tollgate::Rule>> = read
            .iter()
            .map(|r| match r.own {
                Some(_) => Vec::new(),
                None => policy.matching(&r.subject).collect(),
            })
            .collect();
        let replaced: BTreeSet<&str> = rules
            .iter()
            .flatten()
            .filter_map(|r| rt.config.replaces.get(r.name()))
            .flatten()
            .map(String::as_str)
            .collect();
        let steps: Vec<Step> = read
            .iter_mut()
            .zip(&rules)
            .map(|(r, rules)| plan(r, rules, &replaced))
            .collect();

        // All or nothing: a descriptor refused without deciding means the others are only
        // looked at; otherwise each is reserved, then all kept or all given back.
        let refused = steps
            .iter()
            .any(|s| matches!(s, Step::Answered(st) if st.code == Code::OverLimit as i32));
        let deciding = steps
            .iter()
            .filter(|s| !matches!(s, Step::Answered(_)))
            .count();
        let mut judged: Vec<Option<Judged>> = Vec::with_capacity(steps.len());
        let mut permits = Vec::new();
        for (r, step) in read.iter().zip(&steps) {
            let j = match step {
                Step::Answered(_) => None,
                Step::Policy if refused => Some(
                    self.app
                        .decide(Api::Grpc, &r.subject, r.cost, false, None)
                        .await?,
                ),
                Step::Policy if deciding == 1 => Some(
                    self.app
                        .decide(Api::Grpc, &r.subject, r.cost, true, None)
                        .await?,
                ),
                Step::Policy => {
                    let (permit, j) = self.app.reserve_raw(&r.subject, r.cost).await?;
                    permits.push((permit, r.cost));
                    Some(j)
                }
                Step::Own(own) => {
                    let (subject, call) = &**own;
                    let limiter = self.app.descriptor_limits();
                    let decision = if refused {
                        limiter.peek_with(subject, r.cost, call).await
                    } else if deciding == 1 {
                        limiter.check_with(subject, r.cost, call).await
                    } else {
                        match limiter.reserve_with(subject, r.cost, call).await {
                            Ok(tollgate::Reservation::Granted(p)) => {
                                let d = p.decision().clone();
                                permits.push((Some(p), r.cost));
                                Ok(d)
                            }
                            Ok(tollgate::Reservation::Denied(d)) => Ok(d),
                            Err(e) => Err(e),
                        }
                    }
                    .map_err(ApiError::store)?;
                    Some(Judged {
                        decision,
                        shadow: None,
                    })
                }
            };
            judged.push(j);
        }
        let decided = || judged.iter().flatten();
        let all = !refused && decided().all(Judged::is_allowed);
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
        if deciding > 1 || refused {
            for j in decided() {
                record(Api::Grpc, j, started);
            }
        }

        let statuses: Vec<DescriptorStatus> = judged
            .iter()
            .zip(steps)
            .zip(&read)
            .map(|((j, step), r)| match (j, step) {
                (Some(j), _) => {
                    let unspent = (!all && j.is_allowed()).then_some(r.cost);
                    status_of(j, unspent, rt.config.server.expose_rule_names)
                }
                (None, Step::Answered(st)) => st,
                (None, _) => DescriptorStatus::default(),
            })
            .collect();
        count_detailed(&rt.config, &req.domain, &read, &rules, &statuses);
        let over = statuses.iter().any(|s| s.code == Code::OverLimit as i32);
        let degraded = decided().any(|j| j.decision.is_degraded());
        let shown = decided()
            .find(|j| !j.is_allowed())
            .or_else(|| decided().next());
        let response = RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            response_headers_to_add: shown
                .map(|j| {
                    headers_of(
                        j,
                        rt.config.server.headers,
                        rt.config.server.expose_rule_names,
                    )
                })
                .unwrap_or_default(),
            ..RateLimitResponse::default()
        };
        Ok((response, degraded))
    }
}

/// What is done with a descriptor that meets `rules`, when the request's descriptors replace
/// the rules in `replaced`: its own limit if it has one; refused if a rule denies it (its
/// set is `deny`); not limited if every rule it meets is replaced or unlimited; else decided.
fn plan(r: &mut Read<'_>, rules: &[&tollgate::Rule], replaced: &BTreeSet<&str>) -> Step {
    match r.own.take() {
        Some(Some(own)) => return Step::Own(Box::new(own)),
        Some(None) => {
            return Step::Answered(answered(Code::OverLimit, 0, None));
        }
        None => {}
    }
    let set = |rule: &&tollgate::Rule| rule.limits_for(&r.subject).action();
    if let Some(rule) = rules.iter().find(|rule| set(rule) == SetAction::Deny) {
        let limit = RateLimit {
            name: rule.name().to_owned(),
            requests_per_unit: 0,
            unit: Unit::Unknown as i32,
        };
        return Step::Answered(answered(Code::OverLimit, 0, Some(limit)));
    }
    if rules.is_empty() {
        return Step::Policy;
    }
    if rules.iter().all(|rule| replaced.contains(rule.name())) {
        return Step::Answered(answered(Code::Ok, 0, None));
    }
    if rules.iter().all(|rule| set(rule) == SetAction::Unlimited) {
        return Step::Answered(answered(Code::Ok, u32::MAX, None));
    }
    Step::Policy
}

/// Counts the descriptors that meet a rule with `detailed_metric = true` by their every
/// value: `tollgate_grpc_descriptor_decisions_total{domain, descriptor, code}` (as
/// envoyproxy/ratelimit's `detailed_metric`; the values are the callers', so the series are
/// as many as the distinct descriptors).
fn count_detailed(
    config: &crate::config::Config,
    domain: &str,
    read: &[Read<'_>],
    rules: &[Vec<&tollgate::Rule>],
    statuses: &[DescriptorStatus],
) {
    if config.detailed_rules.is_empty() {
        return;
    }
    for ((r, rules), st) in read.iter().zip(rules).zip(statuses) {
        if rules
            .iter()
            .any(|rule| config.detailed_rules.contains(rule.name()))
        {
            let code = if st.code == Code::OverLimit as i32 {
                "over_limit"
            } else {
                "ok"
            };
            metrics::counter!(
                "tollgate_grpc_descriptor_decisions_total",
                "domain" => domain.to_owned(),
                "descriptor" => r.key.clone(),
                "code" => code
            )
            .increment(1);
        }
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
        let l = current_limit(&status(60, Window::MINUTE), true);
        assert_eq!((l.requests_per_unit, l.unit), (60, Unit::Minute as i32));
        let l = current_limit(
            &status(100, Window::Length(Duration::from_secs(7200))),
            true,
        );
        assert_eq!((l.requests_per_unit, l.unit), (50, Unit::Hour as i32));
        let l = current_limit(&status(5, Window::Month), true);
        assert_eq!((l.requests_per_unit, l.unit), (5, Unit::Month as i32));
        assert_eq!(l.name, "r.l");
        assert_eq!(
            current_limit(&status(5, Window::Month), false).name,
            "l",
            "no rule name where names are kept from clients"
        );
    }
}
