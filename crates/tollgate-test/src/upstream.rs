//! A fake model provider: a real HTTP/1.1 server on a loopback port that speaks OpenAI's and
//! Anthropic's APIs well enough for their SDKs, streaming and not, so that the gateway can
//! be tested end to end without a network.
//!
//! Paths: `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`, `GET /v1/models`
//! (OpenAI; base URL `{url}/v1`), `POST /v1/messages`, `/v1/messages/count_tokens`
//! (Anthropic; base URL `{url}`).
//!
//! What it answers is set for the whole server ([`Behavior`], changeable at any time) and
//! can be overridden per request with headers (which clients and SDKs can send):
//!
//! | header | effect |
//! | --- | --- |
//! | `x-fake-chunks` | content chunks of the answer (one token each; default: the request's cap, at most [`Behavior::max_chunks`]) |
//! | `x-fake-delay-ms` | pause between streamed chunks |
//! | `x-fake-first-byte-ms` | pause before the response headers |
//! | `x-fake-fail-after` | a stream breaks (the connection is closed) after this many chunks |
//! | `x-fake-status` | answer this error status (429 with the provider's rate-limit headers) |
//! | `x-fake-no-usage` | report no usage |
//!
//! Reported usage: input tokens are the request body's message text in bytes divided by 4
//! (rounded up), plus 7; output tokens are the chunks sent. Every request is recorded
//! ([`Seen`]): what it asked, what was reported, whether it completed, and whether the client
//! went away before the answer was complete ("cancelled"), which the server notices at once
//! (it watches the connection while it waits and writes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What the server answers unless a request's headers say otherwise.
#[derive(Clone, Debug)]
pub struct Behavior {
    /// The most content chunks an answer has (default 64).
    pub max_chunks: u64,
    /// Pause between streamed chunks (default none).
    pub delay: Duration,
    /// Pause before the response headers (default none).
    pub first_byte: Duration,
    /// Report usage (default true).
    pub usage: bool,
    /// Rate-limit headers on every answer: (limit, remaining) of requests and of tokens,
    /// with resets of a minute and `reset_secs` (for OpenAI), in the provider's own names.
    pub ratelimit: Option<RateLimitHeaders>,
}

/// The rate-limit headers the fake sends.
#[derive(Clone, Copy, Debug)]
pub struct RateLimitHeaders {
    /// Requests per minute.
    pub limit_requests: u64,
    /// Requests remaining.
    pub remaining_requests: u64,
    /// Tokens per minute.
    pub limit_tokens: u64,
    /// Tokens remaining.
    pub remaining_tokens: u64,
    /// Seconds until the limits are full again.
    pub reset_secs: u64,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            max_chunks: 64,
            delay: Duration::ZERO,
            first_byte: Duration::ZERO,
            usage: true,
            ratelimit: None,
        }
    }
}

/// One request the fake received.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The path.
    pub path: String,
    /// The request headers (names lower-case).
    pub headers: HashMap<String, String>,
    /// The body as JSON (`Null` if it was not).
    pub body: Value,
    /// Whether a stream was asked for.
    pub stream: bool,
    /// The status answered.
    pub status: u16,
    /// Input tokens reported (0 if none).
    pub input_tokens: u64,
    /// Output tokens reported (0 if none).
    pub output_tokens: u64,
    /// Whether usage was reported to the client.
    pub usage_reported: bool,
    /// Content chunks written.
    pub chunks_sent: u64,
    /// The whole answer was written.
    pub completed: bool,
    /// The client went away before the answer was complete.
    pub cancelled: bool,
    /// The fake broke the stream on purpose (`x-fake-fail-after`).
    pub failed_on_purpose: bool,
    /// When the request was read.
    pub arrived: Option<std::time::Instant>,
}

#[derive(Default)]
struct Shared {
    arrived: std::sync::atomic::AtomicUsize,
    /// Keep no [`Seen`] (a benchmark's millions of requests would fill the memory).
    forget: std::sync::atomic::AtomicBool,
    behavior: Mutex<Behavior>,
    seen: Mutex<Vec<Seen>>,
    changed: Notify,
}

/// A running fake upstream. Dropping it stops the server.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    ca: Option<(tempfile::TempDir, std::path::PathBuf)>,
}

impl std::fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    /// Starts a plain-HTTP fake on a free loopback port (on the current tokio runtime).
    ///
    /// # Errors
    /// If no port can be bound.
    pub async fn start() -> std::io::Result<FakeUpstream> {
        Self::start_inner(None).await
    }

    /// Starts an HTTPS fake with a fresh self-signed certificate for `127.0.0.1` and
    /// `localhost`; [`ca_file`](Self::ca_file) is the PEM a client must trust.
    ///
    /// # Errors
    /// If no port can be bound or the certificate cannot be made.
    pub async fn start_tls() -> std::io::Result<FakeUpstream> {
        let other = |e: String| std::io::Error::other(e);
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .map_err(|e| other(e.to_string()))?;
        let dir = tempfile::tempdir()?;
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, cert.cert.pem())?;
        let der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
            .map_err(|e| other(e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| other(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .map_err(|e| other(e.to_string()))?;
        let mut up =
            Self::start_inner(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await?;
        up.ca = Some((dir, ca_path));
        Ok(up)
    }

    async fn start_inner(tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<FakeUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let s = Arc::clone(&s);
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => connection(tcp, s).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                connection(stream, s).await;
                            }
                        }
                    }
                });
            }
        });
        Ok(FakeUpstream {
            addr,
            shared,
            task,
            ca: None,
        })
    }

    /// `http://127.0.0.1:PORT` (or `https://`): Anthropic's base URL form.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }

    /// `{url}/v1`: OpenAI's base URL form.
    pub fn openai_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The CA file an HTTPS fake's clients must trust.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca.as_ref().map(|(_, p)| p.as_path())
    }

    /// Changes what the server answers from now on.
    pub fn set_behavior(&self, b: Behavior) {
        *lock(&self.shared.behavior) = b;
    }

    /// Every request so far, in the order they were finished.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// Requests read so far, finished or not.
    pub fn arrived(&self) -> usize {
        self.shared
            .arrived
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether to record each request in [`seen`](Self::seen) (by default it does; a
    /// benchmark's upstream does not, so that its memory stays flat).
    pub fn set_recording(&self, on: bool) {
        self.shared
            .forget
            .store(!on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forgets the requests seen so far.
    pub fn clear(&self) {
        lock(&self.shared.seen).clear();
    }

    /// Waits until `n` requests have finished (completed, failed or cancelled), or `timeout`
    /// has passed; returns how many have.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            let have = lock(&self.shared.seen).len();
            if have >= n {
                return have;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return lock(&self.shared.seen).len();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Reads one request; `None` when the connection ends.
async fn read_request<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = r.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.split('?').next()?.to_owned();
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 65536];
        let n = r.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

async fn connection<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, shared: Arc<Shared>) {
    let (mut r, mut w) = tokio::io::split(stream);
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut r, &mut buf).await {
        shared
            .arrived
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut seen = Seen {
            path: req.path.clone(),
            headers: req.headers.clone(),
            body: serde_json::from_slice(&req.body).unwrap_or(Value::Null),
            arrived: Some(std::time::Instant::now()),
            ..Seen::default()
        };
        let keep = answer(&req, &mut seen, &shared, &mut r, &mut w).await;
        if !shared.forget.load(std::sync::atomic::Ordering::Relaxed) {
            lock(&shared.seen).push(seen);
        }
        shared.changed.notify_waiters();
        if !keep {
            break;
        }
    }
}

/// Waits `d` unless the client goes away first (then `false`).
async fn pause<R: AsyncRead + Unpin>(r: &mut R, d: Duration) -> bool {
    if d.is_zero() {
        return true;
    }
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    let mut scratch = [0u8; 1024];
    loop {
        tokio::select! {
            () = &mut sleep => return true,
            n = r.read(&mut scratch) => match n {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            },
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Models,
    Messages,
    CountTokens,
}

fn text_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(text_bytes).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "content" | "text" | "input" | "system" | "messages" | "prompt"
                )
            })
            .map(|(_, v)| text_bytes(v))
            .sum(),
        _ => 0,
    }
}

/// Answers one request; returns whether the connection may be kept.
async fn answer<R, W>(req: &Request, seen: &mut Seen, shared: &Shared, r: &mut R, w: &mut W) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let b = lock(&shared.behavior).clone();
    let h = |k: &str| req.headers.get(k).and_then(|v| v.parse::<u64>().ok());
    let api = match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/chat/completions") => Api::Chat,
        ("POST", "/v1/completions") => Api::Completions,
        ("POST", "/v1/embeddings") => Api::Embeddings,
        ("POST", "/v1/responses") => Api::Responses,
        ("GET", "/v1/models") => Api::Models,
        ("POST", "/v1/messages") => Api::Messages,
        ("POST", "/v1/messages/count_tokens") => Api::CountTokens,
        _ => {
            seen.status = 404;
            return write_json(w, 404, &[], &json!({"error": {"message": "no such path"}})).await;
        }
    };
    let anthropic = matches!(api, Api::Messages | Api::CountTokens);
    let first_byte = h("x-fake-first-byte-ms").map_or(b.first_byte, Duration::from_millis);
    if !pause(r, first_byte).await {
        seen.cancelled = true;
        return false;
    }
    let mut rl_headers: Vec<(String, String)> = Vec::new();
    if let Some(rl) = b.ratelimit {
        rl_headers = ratelimit_headers(anthropic, rl);
    }
    if let Some(status) = h("x-fake-status") {
        seen.status = status as u16;
        let body = if anthropic {
            json!({"type": "error", "error": {"type": if status == 429 { "rate_limit_error" } else { "api_error" }, "message": "fake upstream error"}})
        } else {
            json!({"error": {"message": "fake upstream error", "type": if status == 429 { "requests" } else { "server_error" }, "param": null, "code": if status == 429 { json!("rate_limit_exceeded") } else { Value::Null }}})
        };
        if status == 429 {
            let rl = RateLimitHeaders {
                limit_requests: 100,
                remaining_requests: 0,
                limit_tokens: 100_000,
                remaining_tokens: 0,
                reset_secs: 7,
            };
            rl_headers = ratelimit_headers(anthropic, rl);
            rl_headers.push(("retry-after".into(), "7".into()));
        }
        return write_json(w, status as u16, &rl_headers, &body).await;
    }
    let body = &seen.body;
    let usage_on = b.usage && !req.headers.contains_key("x-fake-no-usage");
    let input = (text_bytes(body).div_ceil(4) + 7) as u64;
    let cap = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .unwrap_or(b.max_chunks);
    let chunks = h("x-fake-chunks").unwrap_or(cap.min(b.max_chunks)).min(cap);
    let delay = h("x-fake-delay-ms").map_or(b.delay, Duration::from_millis);
    let fail_after = h("x-fake-fail-after");
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    seen.stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    seen.status = 200;

    match api {
        Api::Models => {
            seen.completed = true;
            return write_json(w, 200, &rl_headers, &json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]})).await;
        }
        Api::CountTokens => {
            seen.completed = true;
            return write_json(w, 200, &rl_headers, &json!({"input_tokens": input})).await;
        }
        Api::Embeddings => {
            seen.completed = true;
            seen.input_tokens = input;
            seen.usage_reported = usage_on;
            let mut v = json!({"object": "list", "model": model, "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}]});
            if usage_on {
                v["usage"] = json!({"prompt_tokens": input, "total_tokens": input});
            }
            return write_json(w, 200, &rl_headers, &v).await;
        }
        _ => {}
    }

    if !seen.stream {
        seen.chunks_sent = chunks;
        let text = words(chunks);
        let v = match api {
            Api::Chat => {
                let mut v = json!({"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": null}]});
                if usage_on {
                    v["usage"] = json!({"prompt_tokens": input, "completion_tokens": chunks, "total_tokens": input + chunks, "prompt_tokens_details": {"cached_tokens": 0}});
                }
                v
            }
            Api::Completions => {
                let mut v = json!({"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}]});
                if usage_on {
                    v["usage"] = json!({"prompt_tokens": input, "completion_tokens": chunks, "total_tokens": input + chunks});
                }
                v
            }
            Api::Responses => {
                let mut v = json!({"id": "resp_fake", "object": "response", "created_at": 0, "status": "completed", "model": model,
                    "output": [{"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}]});
                if usage_on {
                    v["usage"] = json!({"input_tokens": input, "output_tokens": chunks, "total_tokens": input + chunks, "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
                }
                v
            }
            _ => {
                let mut v = json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null});
                if usage_on {
                    v["usage"] = json!({"input_tokens": input, "output_tokens": chunks, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
                }
                v
            }
        };
        if usage_on {
            seen.input_tokens = input;
            seen.output_tokens = chunks;
            seen.usage_reported = true;
        }
        seen.completed = true;
        return write_json(w, 200, &rl_headers, &v).await;
    }

    // Streaming.
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n");
    for (k, v) in &rl_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if w.write_all(head.as_bytes()).await.is_err() {
        seen.cancelled = true;
        return false;
    }
    let mut events: Vec<String> = Vec::new();
    // Chat and legacy completions report a stream's usage only when asked.
    let report = usage_on && (!matches!(api, Api::Chat | Api::Completions) || include_usage);
    match api {
        Api::Completions => {}
        Api::Chat => {
            events.push(sse(None, &json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})));
        }
        Api::Responses => {
            events.push(sse(Some("response.created"), &json!({"type": "response.created", "response": {"id": "resp_fake", "object": "response", "created_at": 0, "status": "in_progress", "model": model, "output": []}})));
        }
        _ => {
            let mut u = json!({"input_tokens": 0, "output_tokens": 1});
            if usage_on {
                u = json!({"input_tokens": input, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
            }
            events.push(sse(Some("message_start"), &json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": u}})));
            events.push(sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
        }
    }
    for e in events.drain(..) {
        if !write_chunk(w, e.as_bytes()).await {
            seen.cancelled = true;
            return false;
        }
    }
    for i in 0..chunks {
        if fail_after == Some(i) {
            seen.failed_on_purpose = true;
            let _ = w.shutdown().await;
            return false;
        }
        if i > 0 && !pause(r, delay).await {
            seen.cancelled = true;
            return false;
        }
        let word = if i == 0 { "word" } else { " word" };
        let e = match api {
            Api::Chat => sse(
                None,
                &json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]}),
            ),
            Api::Completions => sse(
                None,
                &json!({"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model, "choices": [{"index": 0, "text": word, "finish_reason": null, "logprobs": null}]}),
            ),
            Api::Responses => sse(
                Some("response.output_text.delta"),
                &json!({"type": "response.output_text.delta", "item_id": "msg_fake", "output_index": 0, "content_index": 0, "delta": word}),
            ),
            _ => sse(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}),
            ),
        };
        if !write_chunk(w, e.as_bytes()).await {
            seen.cancelled = true;
            return false;
        }
        seen.chunks_sent = i + 1;
    }
    if fail_after == Some(chunks) {
        seen.failed_on_purpose = true;
        let _ = w.shutdown().await;
        return false;
    }
    match api {
        Api::Chat => {
            events.push(sse(None, &json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})));
            if report {
                events.push(sse(None, &json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
                    "usage": {"prompt_tokens": input, "completion_tokens": chunks, "total_tokens": input + chunks, "prompt_tokens_details": {"cached_tokens": 0}}})));
            }
            events.push("data: [DONE]\n\n".to_owned());
        }
        Api::Completions => {
            events.push(sse(None, &json!({"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model, "choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": null}]})));
            if report {
                events.push(sse(None, &json!({"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model, "choices": [],
                    "usage": {"prompt_tokens": input, "completion_tokens": chunks, "total_tokens": input + chunks}})));
            }
            events.push("data: [DONE]\n\n".to_owned());
        }
        Api::Responses => {
            let mut resp = json!({"id": "resp_fake", "object": "response", "created_at": 0, "status": "completed", "model": model,
                "output": [{"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": words(chunks), "annotations": []}]}]});
            if report {
                resp["usage"] = json!({"input_tokens": input, "output_tokens": chunks, "total_tokens": input + chunks, "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
            }
            events.push(sse(
                Some("response.completed"),
                &json!({"type": "response.completed", "response": resp}),
            ));
        }
        _ => {
            events.push(sse(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            ));
            let mut md = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}});
            if report {
                md["usage"] = json!({"output_tokens": chunks});
            }
            events.push(sse(Some("message_delta"), &md));
            events.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
        }
    }
    for e in events {
        if !write_chunk(w, e.as_bytes()).await {
            seen.cancelled = true;
            return false;
        }
    }
    if w.write_all(b"0\r\n\r\n").await.is_err() || w.flush().await.is_err() {
        seen.cancelled = true;
        return false;
    }
    if report {
        seen.input_tokens = input;
        seen.output_tokens = chunks;
        seen.usage_reported = true;
    }
    seen.completed = true;
    true
}

fn ratelimit_headers(anthropic: bool, rl: RateLimitHeaders) -> Vec<(String, String)> {
    if anthropic {
        let reset = chrono_like_rfc3339(rl.reset_secs);
        vec![
            (
                "anthropic-ratelimit-requests-limit".into(),
                rl.limit_requests.to_string(),
            ),
            (
                "anthropic-ratelimit-requests-remaining".into(),
                rl.remaining_requests.to_string(),
            ),
            ("anthropic-ratelimit-requests-reset".into(), reset.clone()),
            (
                "anthropic-ratelimit-tokens-limit".into(),
                rl.limit_tokens.to_string(),
            ),
            (
                "anthropic-ratelimit-tokens-remaining".into(),
                rl.remaining_tokens.to_string(),
            ),
            ("anthropic-ratelimit-tokens-reset".into(), reset),
        ]
    } else {
        vec![
            (
                "x-ratelimit-limit-requests".into(),
                rl.limit_requests.to_string(),
            ),
            (
                "x-ratelimit-remaining-requests".into(),
                rl.remaining_requests.to_string(),
            ),
            (
                "x-ratelimit-reset-requests".into(),
                format!("{}s", rl.reset_secs),
            ),
            (
                "x-ratelimit-limit-tokens".into(),
                rl.limit_tokens.to_string(),
            ),
            (
                "x-ratelimit-remaining-tokens".into(),
                rl.remaining_tokens.to_string(),
            ),
            (
                "x-ratelimit-reset-tokens".into(),
                format!("{}s", rl.reset_secs),
            ),
        ]
    }
}

/// An RFC 3339 UTC time `secs` from now (the fake's only wall-clock read, for Anthropic's
/// reset headers).
fn chrono_like_rfc3339(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + secs;
    let days = now / 86_400;
    let rem = now % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn words(n: u64) -> String {
    (0..n)
        .map(|i| if i == 0 { "word" } else { " word" })
        .collect()
}

fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

async fn write_chunk<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> bool {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    w.write_all(&out).await.is_ok() && w.flush().await.is_ok()
}

async fn write_json<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    headers: &[(String, String)],
    v: &Value,
) -> bool {
    let body = v.to_string();
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    w.write_all(&out).await.is_ok() && w.flush().await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_254), (2025, 6, 15));
    }
}
