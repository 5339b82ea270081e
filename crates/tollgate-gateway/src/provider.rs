//! What the relay needs to know about a provider's API, and nothing else: one implementation
//! per provider ([`crate::openai`], [`crate::anthropic`]; [`crate::providers::of`] picks one),
//! so that the next provider is one file. The relay, the reservation and the settlement
//! ([`crate::relay`]) never look at a provider's paths, body fields, usage shapes, error shapes
//! or header names themselves.

use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use tollgate::Decision;

use crate::config::ProviderKind;
use crate::estimate::Estimator;

/// One of a provider's API operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/completions`.
    Completions,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// `GET /v1/models` (relayed, spends nothing).
    Models,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens` (relayed, spends nothing).
    CountTokens,
}

impl Endpoint {
    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Models => "models",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
        }
    }

    /// Whether calls to it are limited (reserved and settled). Listing models and counting
    /// tokens are relayed and spend nothing.
    pub fn is_metered(self) -> bool {
        !matches!(self, Endpoint::Models | Endpoint::CountTokens)
    }
}

/// What a request body says about the call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallInfo {
    /// The model asked for.
    pub model: String,
    /// The end user the body names, if any (`user`, `metadata.user_id`).
    pub user: Option<String>,
    /// Whether the answer is streamed (SSE).
    pub stream: bool,
    /// The request's own output cap, if it sets one.
    pub output_cap: Option<u64>,
}

/// The usage a provider reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt) tokens, cached ones included.
    pub input: u64,
    /// Output (completion) tokens, reasoning included.
    pub output: u64,
    /// Of the input, tokens read from the provider's cache.
    pub cached_input: u64,
}

impl Usage {
    /// Input and output.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// The errors the gateway answers itself, each in the provider's own shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the body is not JSON, lacks a field, has a bad value.
    BadRequest,
    /// 401: no key, or an unknown managed key.
    Unauthorized,
    /// 404: no upstream serves the model.
    NotFound,
    /// 413: the body is too large, or the call can never fit a limit.
    TooLarge,
    /// 429: a limit denied the call.
    RateLimited,
    /// 502: the upstream could not be reached or broke the answer.
    BadGateway,
    /// 503: the limiter's store is unavailable.
    Unavailable,
    /// 504: the upstream did not answer in time.
    Timeout,
}

impl ErrorKind {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// One dimension of an upstream's own limit, read from its rate-limit headers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reported {
    /// The limit, if reported.
    pub limit: Option<u64>,
    /// What remains.
    pub remaining: u64,
    /// When it is fully available again, in seconds from now.
    pub reset_secs: f64,
}

/// What an upstream's response headers say about its limits.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observed {
    /// Requests.
    pub requests: Option<Reported>,
    /// Tokens (all kinds together, or input tokens where the provider only reports those).
    pub tokens: Option<Reported>,
}

/// Whether an SSE event reaches the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Relay it.
    Yes,
    /// Drop it: the usage-only chunk tollgate asked for and the client did not.
    Drop,
}

/// Reads one streamed answer's events as they pass: its usage, and the text streamed so far
/// (to count the output of a stream that did not finish).
pub trait StreamReader: Send {
    /// Looks at one event (`event:` name, if any, and its `data:`); says whether to relay it.
    fn on_event(&mut self, event: Option<&str>, data: &str) -> Forward;
    /// The usage the stream reported, once it reported all of it.
    fn usage(&self) -> Option<Usage>;
    /// The input tokens reported so far, if any (Anthropic reports them first).
    fn input_reported(&self) -> Option<u64>;
    /// The output text (and tool-call arguments) streamed so far.
    fn output_text(&self) -> &str;
}

/// A provider's API.
pub trait Provider: Send + Sync + 'static {
    /// Which API this is.
    fn kind(&self) -> ProviderKind;

    /// The routes it serves: method, path as the gateway serves it, endpoint.
    fn routes(&self) -> &'static [(Method, &'static str, Endpoint)];

    /// The path to call on an upstream whose base URL is configured, for a request to
    /// `path` (OpenAI's base URLs end in `/v1`; Anthropic's do not).
    fn upstream_path<'p>(&self, path: &'p str) -> &'p str;

    /// The key a client sent, in this provider's auth header.
    fn client_key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str>;

    /// Removes the client's auth headers and sets `key` as the upstream's.
    fn set_key(&self, headers: &mut HeaderMap, key: &str);

    /// Reads the call from the request body.
    ///
    /// # Errors
    /// A message naming the missing or bad field.
    fn call_info(&self, endpoint: Endpoint, body: &Value) -> Result<CallInfo, String>;

    /// The input tokens of the request, counted with `estimator`.
    fn count_input(&self, endpoint: Endpoint, body: &Value, estimator: &Estimator) -> u64;

    /// Adjusts a body before it is sent upstream; returns whether tollgate asked for a
    /// streamed usage report the client did not ask for (so that it is removed again).
    fn prepare(&self, endpoint: Endpoint, body: &mut Value) -> bool;

    /// The usage of a complete, non-streamed answer.
    fn usage(&self, endpoint: Endpoint, body: &Value) -> Option<Usage>;

    /// A reader for one streamed answer; `injected` as [`prepare`](Self::prepare) answered.
    fn stream_reader(&self, endpoint: Endpoint, injected: bool) -> Box<dyn StreamReader>;

    /// The provider's error body for an error tollgate answers itself (`decision`: the
    /// denial, for a 429 or a 413 that a limit caused).
    fn error_body(&self, kind: ErrorKind, message: &str, decision: Option<&Decision>) -> Value;

    /// The provider's rate-limit headers for a decision of tollgate's (a denial or a grant).
    fn limit_headers(
        &self,
        decision: &Decision,
        now_unix_micros: u64,
    ) -> Vec<(&'static str, String)>;

    /// What an upstream's response headers say about its own limits.
    fn observe(&self, headers: &HeaderMap, now_unix_micros: u64) -> Observed;
}

/// A non-negative integer field.
pub(crate) fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

/// A denial's message, as providers word theirs: which limit, and when to come back.
pub(crate) fn denial_message(decision: &Decision) -> String {
    match decision.outcome() {
        tollgate::Outcome::TooLarge => match decision.denied_by() {
            Some(s) => format!(
                "Request too large: this call needs more {} than the limit {:?} of rule {:?} can ever hold ({} per {}). It will never be admitted; make it smaller.",
                s.kind, s.label, s.rule, s.capacity, s.window
            ),
            None => "Request too large for its rate limits; it will never be admitted.".to_owned(),
        },
        _ => {
            let wait = decision.retry_after().unwrap_or_default();
            match decision.denied_by() {
                Some(s) => format!(
                    "Rate limit reached on {} ({} per {}, rule {:?}). Please try again in {:.3}s.",
                    s.kind,
                    s.amount,
                    if s.kind == tollgate::LimitKind::Concurrency {
                        "in flight".to_owned()
                    } else {
                        s.window.to_string()
                    },
                    s.rule,
                    wait.as_secs_f64()
                ),
                None => format!(
                    "Rate limit reached. Please try again in {:.3}s.",
                    wait.as_secs_f64()
                ),
            }
        }
    }
}
