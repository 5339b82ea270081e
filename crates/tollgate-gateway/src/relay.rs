//! The provider-agnostic path of one call: identify → subject → estimate → reserve (one
//! all-or-nothing decision, then the learned limit) → relay (SSE event by event) → settle on
//! every exit path ([`crate::settle`]). Everything provider-specific is asked of a
//! [`Provider`].

use std::collections::{BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{any, post};
use bytes::Bytes;
use std::future::Future;

use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tollgate::store::Store;
use tollgate::{Cost, Decision, LimitKind, Outcome, Reservation, Subject};

use crate::config::{KeyMode, ProviderKind};
use crate::keys::KeyError;
use crate::learned::Gate;
use crate::provider::{self, Endpoint, ErrorKind, Forward, Provider, StreamReader};
use crate::providers;
use crate::settle::{CallLog, Path, Ticket};
use crate::sse::{parse_event, Framer};
use crate::{Gateway, Live};

/// The longest attribute value, in bytes (as the service's subjects allow).
const MAX_VALUE_BYTES: usize = 256;

pub(crate) fn router<S: Store>(gw: Gateway<S>) -> axum::Router {
    let mut paths = BTreeSet::new();
    for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic] {
        if gw.serves(kind) {
            for (_, p, _) in providers::of(kind).routes() {
                paths.insert(*p);
            }
        }
    }
    let mut r = axum::Router::new().route("/v1/estimate", post(estimate_endpoint::<S>));
    for p in paths {
        r = r.route(p, any(handle::<S>));
    }
    r.with_state(gw)
}

async fn estimate_endpoint<S: Store>(State(gw): State<Gateway<S>>, body: Bytes) -> Response {
    let (status, v) = crate::count::answer(&body, &gw.inner.config.estimate);
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        &v,
    )
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An error in `p`'s shape.
fn error(p: &dyn Provider, kind: ErrorKind, message: &str) -> Response {
    let mut r = json_response(kind.status(), &p.error_body(kind, message, None));
    if kind == ErrorKind::TooLarge {
        r.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    r
}

/// A refusal by a limit: 429 with `retry-after`, `retry-after-ms` and the provider's
/// rate-limit headers, or 413 + `x-should-retry: false` for a call that can never fit.
fn denial(p: &dyn Provider, d: &Decision, now: u64) -> Response {
    let kind = match d.outcome() {
        Outcome::TooLarge => ErrorKind::TooLarge,
        Outcome::Denied => ErrorKind::RateLimited,
        _ => ErrorKind::Unavailable,
    };
    let message = match kind {
        ErrorKind::Unavailable => format!("The rate limiter cannot decide: {d}"),
        _ => provider::denial_message(d),
    };
    let mut r = json_response(kind.status(), &p.error_body(kind, &message, Some(d)));
    let h = r.headers_mut();
    for (name, value) in p.limit_headers(d, now) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(HeaderName::from_static(name), v);
        }
    }
    if let Some(wait) = d.retry_after() {
        let ms = wait.as_micros().div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&ms.to_string()) {
            h.insert("retry-after-ms", v);
        }
    }
    if kind == ErrorKind::TooLarge {
        h.insert("x-should-retry", HeaderValue::from_static("false"));
    }
    if d.is_degraded() {
        h.insert("x-tollgate-degraded", HeaderValue::from_static("true"));
    }
    r
}

/// A refusal because the upstream reported itself exhausted.
fn held(p: &dyn Provider, wait: Duration) -> Response {
    let secs = wait.as_secs_f64();
    let mut r = error(
        p,
        ErrorKind::RateLimited,
        &format!("The upstream reported its rate limit exhausted. Please try again in {secs:.3}s."),
    );
    let h = r.headers_mut();
    let ms = wait.as_micros().div_ceil(1000).max(1);
    if let Ok(v) = HeaderValue::from_str(&ms.to_string()) {
        h.insert("retry-after-ms", v);
    }
    if let Ok(v) = HeaderValue::from_str(&(ms.div_ceil(1000)).max(1).to_string()) {
        h.insert(http::header::RETRY_AFTER, v);
    }
    r
}

/// Which provider and endpoint a request is for.
fn resolve<S: Store>(
    gw: &Gateway<S>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<(&'static dyn Provider, Option<Endpoint>)> {
    let mut found: Option<(&'static dyn Provider, Option<Endpoint>)> = None;
    // `GET /v1/models` is both providers' path: Anthropic's SDK sends `anthropic-version`.
    let prefer_anthropic = headers.contains_key("anthropic-version");
    let mut kinds = [ProviderKind::OpenAi, ProviderKind::Anthropic];
    if prefer_anthropic {
        kinds.reverse();
    }
    for kind in kinds {
        if !gw.serves(kind) {
            continue;
        }
        let p = providers::of(kind);
        for (m, route, ep) in p.routes() {
            if *route == path {
                if m == method {
                    return Some((p, Some(*ep)));
                }
                found.get_or_insert((p, None));
            }
        }
    }
    found
}

/// Request headers that are not forwarded: hop-by-hop ones, those the client re-computes,
/// and `accept-encoding` (the answer must reach the gateway uncompressed to be read).
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "accept-encoding"
    )
}

/// Response headers that are not relayed back (hop-by-hop ones, and the length, which the
/// gateway's own framing sets).
fn relayed(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "trailer"
            | "upgrade"
    )
}

fn request_id() -> String {
    format!("req_{:016x}", rand::random::<u64>())
}

fn now_micros<S: Store>(gw: &Gateway<S>) -> u64 {
    gw.inner.clock.now().as_micros()
}

/// One call.
async fn handle<S: Store>(State(gw): State<Gateway<S>>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let Some((p, endpoint)) = resolve(&gw, &parts.method, &path, &parts.headers) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "message": "no upstream serves this path"}),
        );
    };
    let Some(endpoint) = endpoint else {
        let mut r = error(
            p,
            ErrorKind::BadRequest,
            &format!("{} is not allowed on {path}", parts.method),
        );
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return r;
    };
    let limit = gw.inner.config.max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                p,
                ErrorKind::TooLarge,
                &format!("The request body is larger than the gateway accepts ({limit} bytes)."),
            )
        }
    };
    let response = call(&gw, p, endpoint, &parts, bytes).await;
    crate::metrics::request(
        p.kind().as_str(),
        endpoint.as_str(),
        response.status().as_u16(),
    );
    response
}

async fn call<S: Store>(
    gw: &Gateway<S>,
    p: &'static dyn Provider,
    endpoint: Endpoint,
    parts: &http::request::Parts,
    bytes: Bytes,
) -> Response {
    let inner = &gw.inner;
    let config = &inner.config;
    let caller = match inner.keys.identify(config, p.client_key(&parts.headers)) {
        Ok(c) => c,
        Err(KeyError::Missing) => return error(p, ErrorKind::Unauthorized, "No API key provided."),
        Err(KeyError::Unknown) => {
            return error(p, ErrorKind::Unauthorized, "Incorrect API key provided.")
        }
    };

    if !endpoint.is_metered() {
        // Relayed without a reservation: listing models and counting tokens spend nothing.
        let model = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_owned));
        let up = match model {
            Some(m) => inner.routes.route(p.kind(), &m),
            None => inner.routes.default_of(p.kind()),
        }
        .or_else(|| {
            inner
                .upstreams
                .iter()
                .position(|u| u.config.kind == p.kind())
        });
        let Some(up) = up.and_then(|i| inner.upstreams.get(i)) else {
            return error(p, ErrorKind::NotFound, "No upstream serves this call.");
        };
        return unmetered(gw, p, up, parts, bytes, caller.managed.is_some()).await;
    }

    let mut body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return error(
                p,
                ErrorKind::BadRequest,
                &format!("We could not parse the JSON body of your request: {e}"),
            )
        }
    };
    let call_info = match p.call_info(endpoint, &body) {
        Ok(c) => c,
        Err(m) => return error(p, ErrorKind::BadRequest, &m),
    };
    let Some(up_index) = inner.routes.route(p.kind(), &call_info.model) else {
        return error(
            p,
            ErrorKind::NotFound,
            &format!(
                "The model `{}` does not exist or no upstream serves it.",
                call_info.model
            ),
        );
    };
    let Some(up) = inner.upstreams.get(up_index) else {
        return error(p, ErrorKind::NotFound, "No upstream serves this call.");
    };

    // The subject.
    let mut subject = Subject::new()
        .tenant(caller.tenant.clone())
        .provider(up.config.name.clone())
        .model(call_info.model.clone());
    if let Some(t) = &caller.tier {
        subject.set("tier", t.clone());
    }
    for (k, v) in &caller.attributes {
        subject.set(k.clone(), v.clone());
    }
    if let Some(u) = &call_info.user {
        subject.set("user", u.clone());
    }
    for (attr, header) in &config.attributes {
        if let Some(v) = parts
            .headers
            .get(header.as_str())
            .and_then(|v| v.to_str().ok())
        {
            if !v.is_empty() {
                subject.set(attr.clone(), v.to_owned());
            }
        }
    }
    if let Some((k, _)) = subject.iter().find(|(_, v)| v.len() > MAX_VALUE_BYTES) {
        return error(
            p,
            ErrorKind::BadRequest,
            &format!("{k}: values have at most {MAX_VALUE_BYTES} bytes"),
        );
    }

    // The estimate.
    let policy = inner.limiter.policy();
    let applicable: Vec<tollgate_core::Limit> = policy
        .matching(&subject)
        .flat_map(|r| r.limits_for(&subject).limits().iter().map(|l| *l.limit()))
        .collect();
    let smallest = applicable
        .iter()
        .filter(|l| matches!(l.kind(), LimitKind::Tokens | LimitKind::OutputTokens))
        .map(tollgate_core::Limit::capacity)
        .min();
    let lease = applicable
        .iter()
        .filter(|l| l.kind() == LimitKind::Concurrency)
        .map(|l| l.lease_micros())
        .min();
    drop(policy);
    let estimator =
        crate::count::estimator_for(up.config.tokenizer, &call_info.model, &config.estimate);
    let input = p.count_input(endpoint, &body, &estimator);
    let output =
        crate::estimate::output_reservation(call_info.output_cap, &config.estimate, smallest);
    let cost = Cost::split(input, output);

    // One all-or-nothing reservation (waiting up to the key's max_wait), then the learned
    // limit of the upstream.
    let started = Instant::now();
    let reserved = if caller.max_wait.is_zero() {
        inner.limiter.reserve(&subject, cost).await
    } else {
        inner.limiter.acquire(&subject, cost, caller.max_wait).await
    };
    let permit = match reserved {
        Ok(Reservation::Granted(p)) => p,
        Ok(Reservation::Denied(d)) => return denial(p, &d, now_micros(gw)),
        Err(e) => {
            tracing::error!(error = %e, "the limiter's store failed");
            return error(
                p,
                ErrorKind::Unavailable,
                "The rate limiter is unavailable; try again later.",
            );
        }
    };
    let degraded = permit.decision().is_degraded();
    let mut permits = vec![permit];
    match inner.learned.gate(&up.config.name, &subject, cost).await {
        Ok(Gate::Open) => {}
        Ok(Gate::Granted(lp)) => permits.push(lp),
        Ok(Gate::Denied(d)) => {
            cancel(permits).await;
            metrics::counter!("tollgate_gateway_learned_denials_total", "provider" => up.config.name.clone()).increment(1);
            return denial(p, &d, now_micros(gw));
        }
        Ok(Gate::Held(wait)) => {
            cancel(permits).await;
            metrics::counter!("tollgate_gateway_learned_denials_total", "provider" => up.config.name.clone()).increment(1);
            return held(p, wait);
        }
        Err(e) => tracing::warn!(error = %e, "learned limits unavailable; not applied"),
    }
    let log = Arc::new(CallLog {
        request_id: request_id(),
        caller: caller.name.clone(),
        tenant: caller.tenant.clone(),
        provider: up.config.name.clone(),
        model: call_info.model.clone(),
        endpoint: endpoint.as_str(),
        stream: call_info.stream,
        waited: started.elapsed(),
    });
    metrics::counter!("tollgate_gateway_admitted_total", "provider" => up.config.name.clone())
        .increment(1);
    let mut ticket = Ticket::new(
        permits,
        (input, output),
        estimator,
        config.failed_requests,
        Arc::clone(&log),
    );
    if let (true, Some(lease)) = (call_info.stream, lease) {
        ticket.keep_alive(Duration::from_micros(lease / 3).max(Duration::from_millis(100)));
    }

    // The upstream call.
    let injected = p.prepare(endpoint, &mut body);
    let payload = if injected {
        Bytes::from(body.to_string())
    } else {
        bytes
    };
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (k, v) in &parts.headers {
        if forwardable(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    if let (KeyMode::Managed, Some(key)) = (config.key_mode, &up.config.key) {
        p.set_key(&mut headers, &key.0);
    }
    let send = match upstream_request(up, p, parts, headers, payload) {
        Ok(r) => up.client.request(r),
        Err(m) => {
            ticket.failed();
            return error(p, ErrorKind::BadGateway, &m);
        }
    };
    let resp = match tokio::time::timeout(up.config.timeout, send).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            ticket.failed();
            tracing::warn!(request_id = %log.request_id, upstream = %up.config.name, error = %e, "upstream could not be reached");
            return error(
                p,
                ErrorKind::BadGateway,
                "The upstream could not be reached.",
            );
        }
        Err(_) => {
            ticket.failed();
            return error(
                p,
                ErrorKind::Timeout,
                "The upstream did not answer in time.",
            );
        }
    };
    let (resp_parts, resp_body) = resp.into_parts();
    let status = resp_parts.status;
    ticket.answered(status.as_u16());
    inner.learned.observe(
        &up.config.name,
        &caller.tenant,
        p.observe(&resp_parts.headers, now_micros(gw)),
    );
    let mut out_headers = HeaderMap::with_capacity(resp_parts.headers.len() + 2);
    for (k, v) in &resp_parts.headers {
        if relayed(k) {
            out_headers.append(k.clone(), v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&log.request_id) {
        out_headers.insert("x-tollgate-request-id", v);
    }
    if degraded {
        out_headers.insert("x-tollgate-degraded", HeaderValue::from_static("true"));
    }
    let is_sse = resp_parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));

    if !status.is_success() {
        if status == StatusCode::TOO_MANY_REQUESTS {
            crate::metrics::upstream_429(&up.config.name);
        }
        let body = read_all(resp_body, up.config.idle_timeout)
            .await
            .unwrap_or_default();
        ticket.failed();
        return respond(status, out_headers, Body::from(body));
    }

    if is_sse {
        let reader = p.stream_reader(endpoint, injected);
        let stream = RelayStream {
            upstream: Box::pin(resp_body.into_data_stream()),
            idle: up.config.idle_timeout,
            timer: Box::pin(tokio::time::sleep(up.config.idle_timeout)),
            framer: Framer::new(),
            reader,
            ticket: Some(ticket),
            pending: VecDeque::new(),
            done: false,
        };
        crate::metrics::open_streams(1.0);
        return respond(status, out_headers, Body::from_stream(stream));
    }

    match read_all(resp_body, up.config.idle_timeout).await {
        Ok(body) => {
            let usage = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| p.usage(endpoint, &v));
            ticket.complete(usage, None);
            respond(status, out_headers, Body::from(body))
        }
        Err(e) => {
            // The answer broke before it was whole: nothing of it reached the client.
            tracing::warn!(request_id = %log.request_id, error = %e, "upstream answer broken");
            ticket.cut_short(Path::StreamBroken, None, "");
            error(p, ErrorKind::BadGateway, "The upstream's answer broke off.")
        }
    }
}

/// Reads a whole answer, each read within `idle`.
async fn read_all(body: hyper::body::Incoming, idle: Duration) -> Result<Bytes, String> {
    let mut stream = body.into_data_stream();
    let mut out = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(b))) => out.extend_from_slice(&b),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => return Ok(out.freeze()),
            Err(_) => return Err("the upstream went silent".into()),
        }
    }
}

/// The request to send upstream.
fn upstream_request(
    up: &Live,
    p: &dyn Provider,
    parts: &http::request::Parts,
    headers: HeaderMap,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, String> {
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = upstream_url(up, p, parts)
        .parse()
        .map_err(|e| format!("The upstream URL is not valid: {e}"))?;
    *req.headers_mut() = headers;
    Ok(req)
}

async fn cancel<S: Store>(permits: Vec<tollgate::Permit<S>>) {
    for mut p in permits {
        if let Err(e) = p.cancel().await {
            tracing::warn!(error = %e, "cancel failed");
        }
    }
}

fn upstream_url(up: &Live, p: &dyn Provider, parts: &http::request::Parts) -> String {
    let mut url = format!("{}{}", up.config.url, p.upstream_path(parts.uri.path()));
    if let Some(q) = parts.uri.query() {
        url.push('?');
        url.push_str(q);
    }
    url
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// Relays a call that spends nothing (listing models, counting tokens).
async fn unmetered<S: Store>(
    gw: &Gateway<S>,
    p: &'static dyn Provider,
    up: &Live,
    parts: &http::request::Parts,
    bytes: Bytes,
    managed: bool,
) -> Response {
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (k, v) in &parts.headers {
        if forwardable(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    if let (true, Some(key)) = (managed, &up.config.key) {
        p.set_key(&mut headers, &key.0);
    }
    let req = match upstream_request(up, p, parts, headers, bytes) {
        Ok(r) => r,
        Err(m) => return error(p, ErrorKind::BadGateway, &m),
    };
    let _ = gw;
    match tokio::time::timeout(up.config.timeout, up.client.request(req)).await {
        Ok(Ok(resp)) => {
            let (parts, body) = resp.into_parts();
            let mut out = HeaderMap::new();
            for (k, v) in &parts.headers {
                if relayed(k) {
                    out.append(k.clone(), v.clone());
                }
            }
            match read_all(body, up.config.idle_timeout).await {
                Ok(b) => respond(parts.status, out, Body::from(b)),
                Err(_) => error(p, ErrorKind::BadGateway, "The upstream's answer broke off."),
            }
        }
        Ok(Err(_)) => error(
            p,
            ErrorKind::BadGateway,
            "The upstream could not be reached.",
        ),
        Err(_) => error(
            p,
            ErrorKind::Timeout,
            "The upstream did not answer in time.",
        ),
    }
}

type Upstream = Pin<Box<dyn Stream<Item = Result<Bytes, hyper::Error>> + Send>>;

/// A streamed answer on its way to the client: each event is relayed as soon as it is
/// whole, read on the way (usage, output text), and the ticket settled when the stream
/// ends, breaks, or is dropped because the client went away (which also drops, and so
/// cancels, the upstream call).
struct RelayStream<S: Store> {
    upstream: Upstream,
    /// How long the upstream may stay silent, and the timer of the current silence.
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    framer: Framer,
    reader: Box<dyn StreamReader>,
    ticket: Option<Ticket<S>>,
    pending: VecDeque<Bytes>,
    done: bool,
}

impl<S: Store> RelayStream<S> {
    fn take_events(&mut self) {
        while let Some(ev) = self.framer.next_event() {
            let forward = match std::str::from_utf8(&ev) {
                Ok(text) => {
                    let (name, data) = parse_event(text);
                    self.reader.on_event(name, &data)
                }
                Err(_) => Forward::Yes,
            };
            if forward == Forward::Yes {
                self.pending.push_back(ev);
            }
        }
    }
}

// No field is pinned in place: the upstream stream is boxed, the rest are plain values.
impl<S: Store> Unpin for RelayStream<S> {}

impl<S: Store> Stream for RelayStream<S> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(ev) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(ev)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let polled = match this.upstream.as_mut().poll_next(cx) {
                Poll::Pending => match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the upstream went silent",
                    )))),
                    Poll::Pending => Poll::Pending,
                },
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
                Poll::Ready(None) => Poll::Ready(None),
            };
            match polled {
                Poll::Ready(Some(Ok(bytes))) => {
                    let deadline = tokio::time::Instant::now() + this.idle;
                    this.timer.as_mut().reset(deadline);
                    this.framer.push(&bytes);
                    this.take_events();
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    if let Some(t) = this.ticket.take() {
                        t.cut_short(
                            Path::StreamBroken,
                            this.reader.input_reported(),
                            this.reader.output_text(),
                        );
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if let Some(rest) = this.framer.rest() {
                        this.pending.push_back(rest);
                    }
                    if let Some(t) = this.ticket.take() {
                        let usage = this.reader.usage();
                        let counted = usage
                            .is_none()
                            .then(|| t.estimator().count(this.reader.output_text()));
                        t.complete(usage, counted);
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: Store> Drop for RelayStream<S> {
    fn drop(&mut self) {
        crate::metrics::open_streams(-1.0);
        if let Some(t) = self.ticket.take() {
            t.cut_short(
                Path::ClientGone,
                self.reader.input_reported(),
                self.reader.output_text(),
            );
        }
    }
}
