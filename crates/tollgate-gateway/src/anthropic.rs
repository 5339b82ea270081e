//! Anthropic's Messages API: paths, body fields, usage, streamed usage, error shapes and
//! header names.
//!
//! - Paths: `POST /v1/messages`, `POST /v1/messages/count_tokens`; an upstream's base URL
//!   has no `/v1` (`https://api.anthropic.com`).
//! - Key: `x-api-key` (or `Authorization: Bearer` for OAuth tokens).
//! - Output cap: `max_tokens`. End user: `metadata.user_id`.
//! - Usage: `usage.input_tokens` (without cached tokens), `cache_creation_input_tokens`,
//!   `cache_read_input_tokens`, `output_tokens`; input is counted as their sum. Streamed:
//!   `message_start` carries the input, each `message_delta` the output so far.
//! - Errors: `{"type": "error", "error": {"type", "message"}}`; rate limits in
//!   `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
//!   with resets as RFC 3339 times.

use http::{HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use tollgate::{Decision, LimitKind};

use crate::config::ProviderKind;
use crate::estimate::Estimator;
use crate::provider::{
    u64_at, CallInfo, Endpoint, ErrorKind, Forward, Observed, Provider, Reported, StreamReader,
    Usage,
};

/// Anthropic's Messages API.
#[derive(Clone, Copy, Debug, Default)]
pub struct Anthropic;

static ROUTES: [(Method, &str, Endpoint); 2] = [
    (Method::POST, "/v1/messages", Endpoint::Messages),
    (
        Method::POST,
        "/v1/messages/count_tokens",
        Endpoint::CountTokens,
    ),
];

impl Provider for Anthropic {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn routes(&self) -> &'static [(Method, &'static str, Endpoint)] {
        &ROUTES
    }

    fn upstream_path<'p>(&self, path: &'p str) -> &'p str {
        path
    }

    fn client_key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .or_else(|| crate::openai::bearer(headers))
    }

    fn set_key(&self, headers: &mut HeaderMap, key: &str) {
        headers.remove(http::header::AUTHORIZATION);
        if let Ok(mut v) = HeaderValue::from_str(key) {
            v.set_sensitive(true);
            headers.insert("x-api-key", v);
        }
    }

    fn call_info(&self, endpoint: Endpoint, body: &Value) -> Result<CallInfo, String> {
        if !body.is_object() {
            return Err("the request body must be a JSON object".into());
        }
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(_) => return Err("model: must be a non-empty string".into()),
            None => return Err("model: Field required".into()),
        };
        match body.get("messages") {
            Some(Value::Array(_)) => {}
            Some(_) => return Err("messages: Input should be a valid list".into()),
            None => return Err("messages: Field required".into()),
        }
        let user = body
            .get("metadata")
            .and_then(|m| m.get("user_id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let output_cap = match endpoint {
            Endpoint::Messages => u64_at(body, &["max_tokens"]),
            _ => Some(0),
        };
        Ok(CallInfo {
            model,
            user,
            stream,
            output_cap,
        })
    }

    fn count_input(&self, _endpoint: Endpoint, body: &Value, e: &Estimator) -> u64 {
        let system = match body.get("system") {
            Some(Value::Array(parts)) => parts.iter().map(|p| e.count_part(p)).sum(),
            Some(v) => e.count_value(v),
            None => 0,
        };
        let messages = body["messages"].as_array().map_or(&[][..], Vec::as_slice);
        let tools = body.get("tools").map_or(0, |t| e.count_value(t));
        system + e.count_messages(messages) + tools
    }

    fn prepare(&self, _endpoint: Endpoint, _body: &mut Value) -> bool {
        false
    }

    fn usage(&self, _endpoint: Endpoint, body: &Value) -> Option<Usage> {
        let u = body.get("usage").filter(|u| u.is_object())?;
        let input = input_of(u)?;
        Some(Usage {
            input,
            output: u64_at(u, &["output_tokens"]).unwrap_or(0),
            cached_input: u64_at(u, &["cache_read_input_tokens"]).unwrap_or(0),
        })
    }

    fn stream_reader(&self, _endpoint: Endpoint, _injected: bool) -> Box<dyn StreamReader> {
        Box::new(Reader::default())
    }

    fn error_body(&self, kind: ErrorKind, message: &str, _decision: Option<&Decision>) -> Value {
        let ty = match kind {
            ErrorKind::BadRequest => "invalid_request_error",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::TooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::BadGateway | ErrorKind::Unavailable => "api_error",
            ErrorKind::Timeout => "timeout_error",
        };
        json!({"type": "error", "error": {"type": ty, "message": message}})
    }

    fn limit_headers(&self, decision: &Decision, now: u64) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let dims: [(LimitKind, [&'static str; 3]); 4] = [
            (
                LimitKind::Requests,
                [
                    "anthropic-ratelimit-requests-limit",
                    "anthropic-ratelimit-requests-remaining",
                    "anthropic-ratelimit-requests-reset",
                ],
            ),
            (
                LimitKind::Tokens,
                [
                    "anthropic-ratelimit-tokens-limit",
                    "anthropic-ratelimit-tokens-remaining",
                    "anthropic-ratelimit-tokens-reset",
                ],
            ),
            (
                LimitKind::InputTokens,
                [
                    "anthropic-ratelimit-input-tokens-limit",
                    "anthropic-ratelimit-input-tokens-remaining",
                    "anthropic-ratelimit-input-tokens-reset",
                ],
            ),
            (
                LimitKind::OutputTokens,
                [
                    "anthropic-ratelimit-output-tokens-limit",
                    "anthropic-ratelimit-output-tokens-remaining",
                    "anthropic-ratelimit-output-tokens-reset",
                ],
            ),
        ];
        for (kind, [limit, remaining, reset]) in dims {
            if let Some(s) = decision.tightest(kind) {
                out.push((limit, s.amount.to_string()));
                out.push((remaining, s.remaining.to_string()));
                let micros = u64::try_from(s.reset_after.as_micros()).unwrap_or(u64::MAX);
                out.push((reset, rfc3339(now.saturating_add(micros))));
            }
        }
        if let Some(r) = tollgate::headers::retry_after_header(decision) {
            out.push(("retry-after", r));
        }
        out
    }

    fn observe(&self, headers: &HeaderMap, now: u64) -> Observed {
        let dim = |what: &str| -> Option<Reported> {
            let get = |k: String| headers.get(k).and_then(|v| v.to_str().ok());
            let remaining = get(format!("anthropic-ratelimit-{what}-remaining"))?
                .trim()
                .parse()
                .ok()?;
            let reset = get(format!("anthropic-ratelimit-{what}-reset"))?;
            let at = chrono::DateTime::parse_from_rfc3339(reset.trim()).ok()?;
            let at_micros = at.timestamp_micros();
            let reset_secs = (at_micros as f64 - now as f64).max(0.0) / 1e6;
            let limit = get(format!("anthropic-ratelimit-{what}-limit"))
                .and_then(|v| v.trim().parse().ok());
            Some(Reported {
                limit,
                remaining,
                reset_secs,
            })
        };
        Observed {
            requests: dim("requests"),
            tokens: dim("tokens").or_else(|| dim("input-tokens")),
        }
    }
}

fn input_of(u: &Value) -> Option<u64> {
    let base = u64_at(u, &["input_tokens"])?;
    Some(
        base + u64_at(u, &["cache_creation_input_tokens"]).unwrap_or(0)
            + u64_at(u, &["cache_read_input_tokens"]).unwrap_or(0),
    )
}

/// An RFC 3339 time (UTC, whole seconds) from microseconds since the Unix epoch.
pub(crate) fn rfc3339(unix_micros: u64) -> String {
    let secs = i64::try_from(unix_micros / 1_000_000).unwrap_or(i64::MAX);
    // Round up: a reset is never announced earlier than it happens.
    let secs = if unix_micros % 1_000_000 == 0 {
        secs
    } else {
        secs.saturating_add(1)
    };
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Reads a streamed message.
#[derive(Default)]
struct Reader {
    input: Option<u64>,
    cached: u64,
    output: Option<u64>,
    stopped: bool,
    text: String,
}

impl StreamReader for Reader {
    fn on_event(&mut self, event: Option<&str>, data: &str) -> Forward {
        let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
            return Forward::Yes;
        };
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .or(event)
            .unwrap_or("");
        match ty {
            "message_start" => {
                if let Some(u) = v.get("message").and_then(|m| m.get("usage")) {
                    self.input = input_of(u);
                    self.cached = u64_at(u, &["cache_read_input_tokens"]).unwrap_or(0);
                    self.output = u64_at(u, &["output_tokens"]);
                }
            }
            "content_block_delta" => {
                if let Some(d) = v.get("delta") {
                    for k in ["text", "partial_json", "thinking"] {
                        if let Some(t) = d.get(k).and_then(Value::as_str) {
                            self.text.push_str(t);
                        }
                    }
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    if let Some(o) = u64_at(u, &["output_tokens"]) {
                        self.output = Some(o);
                    }
                    // Newer API versions repeat the input (cumulative) here.
                    if let Some(i) = input_of(u) {
                        self.input = Some(i);
                        self.cached =
                            u64_at(u, &["cache_read_input_tokens"]).unwrap_or(self.cached);
                    }
                }
            }
            "message_stop" => self.stopped = true,
            _ => {}
        }
        Forward::Yes
    }

    fn usage(&self) -> Option<Usage> {
        if !self.stopped {
            return None;
        }
        Some(Usage {
            input: self.input?,
            output: self.output?,
            cached_input: self.cached,
        })
    }

    fn input_reported(&self) -> Option<u64> {
        self.input
    }

    fn output_text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_usage() {
        let mut r = Anthropic.stream_reader(Endpoint::Messages, false);
        r.on_event(Some("message_start"), r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":4,"output_tokens":1}}}"#);
        assert_eq!(r.input_reported(), Some(14));
        r.on_event(Some("content_block_delta"), r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#);
        r.on_event(
            Some("message_delta"),
            r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":9}}"#,
        );
        assert_eq!(r.usage(), None, "not before message_stop");
        r.on_event(Some("message_stop"), r#"{"type":"message_stop"}"#);
        assert_eq!(
            r.usage(),
            Some(Usage {
                input: 14,
                output: 9,
                cached_input: 4
            })
        );
        assert_eq!(r.output_text(), "Hello");
    }

    #[test]
    fn rfc3339_rounds_up() {
        assert_eq!(rfc3339(1_750_000_000_000_000), "2025-06-15T15:06:40Z");
        assert_eq!(rfc3339(1_750_000_000_000_001), "2025-06-15T15:06:41Z");
    }
}
