//! OpenAI's API: paths, body fields, usage, streamed usage, error shapes and header names.
//!
//! - Paths: `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//!   `/v1/responses`, `GET /v1/models`; an upstream's base URL ends in `/v1`.
//! - Key: `Authorization: Bearer <key>`.
//! - Output caps: `max_completion_tokens`, then `max_tokens` (chat); `max_tokens`, 16 when
//!   absent (completions); `max_output_tokens` (responses); none for embeddings.
//! - Usage: `usage.prompt_tokens` / `completion_tokens` / `prompt_tokens_details.cached_tokens`
//!   (chat, completions, embeddings), `usage.input_tokens` / `output_tokens` /
//!   `input_tokens_details.cached_tokens` (responses). A streamed chat or completion reports
//!   usage only when `stream_options.include_usage` is set, in a last chunk whose `choices`
//!   is empty: tollgate sets it when the client did not, and removes that chunk again.
//!   A streamed response reports usage in its `response.completed` event.
//! - Errors: `{"error": {"message", "type", "param", "code"}}`; rate limits in
//!   `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (resets as `6m0s`).

use http::{HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use tollgate::{Decision, LimitKind};

use crate::config::ProviderKind;
use crate::estimate::Estimator;
use crate::provider::{
    u64_at, CallInfo, Endpoint, ErrorKind, Forward, Observed, Provider, Reported, StreamReader,
    Usage,
};

/// OpenAI's API.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAi;

static ROUTES: [(Method, &str, Endpoint); 5] = [
    (
        Method::POST,
        "/v1/chat/completions",
        Endpoint::ChatCompletions,
    ),
    (Method::POST, "/v1/completions", Endpoint::Completions),
    (Method::POST, "/v1/embeddings", Endpoint::Embeddings),
    (Method::POST, "/v1/responses", Endpoint::Responses),
    (Method::GET, "/v1/models", Endpoint::Models),
];

/// The output cap of a legacy completion that sets none (the API's default).
const COMPLETIONS_DEFAULT_MAX_TOKENS: u64 = 16;

impl Provider for OpenAi {
    fn kind(&self) -> ProviderKind {
        ProviderKind::OpenAi
    }

    fn routes(&self) -> &'static [(Method, &'static str, Endpoint)] {
        &ROUTES
    }

    fn upstream_path<'p>(&self, path: &'p str) -> &'p str {
        path.strip_prefix("/v1").unwrap_or(path)
    }

    fn client_key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        bearer(headers)
    }

    fn set_key(&self, headers: &mut HeaderMap, key: &str) {
        headers.remove(http::header::AUTHORIZATION);
        headers.remove("api-key");
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {key}")) {
            let mut v = v;
            v.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, v);
        }
    }

    fn call_info(&self, endpoint: Endpoint, body: &Value) -> Result<CallInfo, String> {
        if !body.is_object() {
            return Err("the request body must be a JSON object".into());
        }
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(_) => return Err("'model' must be a non-empty string".into()),
            None => return Err("you must provide a model parameter".into()),
        };
        let required = match endpoint {
            Endpoint::ChatCompletions => Some("messages"),
            Endpoint::Completions => Some("prompt"),
            Endpoint::Embeddings | Endpoint::Responses => Some("input"),
            _ => None,
        };
        if let Some(field) = required {
            if body.get(field).is_none()
                && !(endpoint == Endpoint::Responses && body.get("previous_response_id").is_some())
            {
                return Err(format!("Missing required parameter: '{field}'."));
            }
        }
        if endpoint == Endpoint::ChatCompletions && !body["messages"].is_array() {
            return Err("'messages' must be an array".into());
        }
        let user = ["user", "safety_identifier"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_str))
            .map(str::to_owned);
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let output_cap = match endpoint {
            Endpoint::ChatCompletions => {
                u64_at(body, &["max_completion_tokens"]).or_else(|| u64_at(body, &["max_tokens"]))
            }
            Endpoint::Completions => {
                Some(u64_at(body, &["max_tokens"]).unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS))
            }
            Endpoint::Responses => u64_at(body, &["max_output_tokens"]),
            Endpoint::Embeddings => Some(0),
            _ => None,
        };
        Ok(CallInfo {
            model,
            user,
            stream,
            output_cap,
        })
    }

    fn count_input(&self, endpoint: Endpoint, body: &Value, e: &Estimator) -> u64 {
        let tools = ["tools", "functions"]
            .iter()
            .filter_map(|k| body.get(*k))
            .map(|t| e.count_value(t))
            .sum::<u64>();
        match endpoint {
            Endpoint::ChatCompletions => {
                let messages = body["messages"].as_array().map_or(&[][..], Vec::as_slice);
                e.count_messages(messages) + tools
            }
            Endpoint::Completions => count_prompt(&body["prompt"], e),
            Endpoint::Embeddings => count_prompt(&body["input"], e),
            Endpoint::Responses => {
                let instructions = body.get("instructions").map_or(0, |i| e.count_value(i));
                let input = match &body["input"] {
                    Value::String(s) => e.count_messages(&[json!({"role": "user", "content": s})]),
                    Value::Array(items) => e.count_messages(items),
                    Value::Null => 0,
                    other => e.count_value(other),
                };
                instructions + input + tools
            }
            _ => 0,
        }
    }

    fn prepare(&self, endpoint: Endpoint, body: &mut Value) -> bool {
        if !matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) {
            return false;
        }
        if body.get("stream").and_then(Value::as_bool) != Some(true) {
            return false;
        }
        let asked = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
        if asked {
            return false;
        }
        let Some(obj) = body.as_object_mut() else {
            return false;
        };
        match obj.get_mut("stream_options").and_then(Value::as_object_mut) {
            Some(opts) => {
                opts.insert("include_usage".into(), Value::Bool(true));
            }
            None => {
                obj.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
        true
    }

    fn usage(&self, endpoint: Endpoint, body: &Value) -> Option<Usage> {
        let u = body.get("usage").filter(|u| u.is_object())?;
        usage_of(endpoint, u)
    }

    fn stream_reader(&self, endpoint: Endpoint, injected: bool) -> Box<dyn StreamReader> {
        Box::new(Reader {
            endpoint,
            injected,
            usage: None,
            text: String::new(),
        })
    }

    fn error_body(&self, kind: ErrorKind, message: &str, decision: Option<&Decision>) -> Value {
        let (ty, code) = match kind {
            ErrorKind::BadRequest => ("invalid_request_error", Value::Null),
            ErrorKind::Unauthorized => ("invalid_request_error", json!("invalid_api_key")),
            ErrorKind::NotFound => ("invalid_request_error", json!("model_not_found")),
            ErrorKind::TooLarge => ("invalid_request_error", json!("too_large")),
            ErrorKind::RateLimited => {
                let ty = match decision.and_then(Decision::denied_by).map(|s| s.kind) {
                    Some(LimitKind::Tokens | LimitKind::InputTokens | LimitKind::OutputTokens) => {
                        "tokens"
                    }
                    _ => "requests",
                };
                (ty, json!("rate_limit_exceeded"))
            }
            ErrorKind::BadGateway => ("server_error", Value::Null),
            ErrorKind::Unavailable => ("server_error", json!("service_unavailable")),
            ErrorKind::Timeout => ("server_error", json!("timeout")),
        };
        json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
    }

    fn limit_headers(&self, decision: &Decision, _now: u64) -> Vec<(&'static str, String)> {
        tollgate::headers::headers(decision, tollgate::HeaderStyle::OpenAi)
    }

    fn observe(&self, headers: &HeaderMap, _now: u64) -> Observed {
        let dim = |what: &str| -> Option<Reported> {
            let get = |k: String| headers.get(k).and_then(|v| v.to_str().ok());
            let remaining = get(format!("x-ratelimit-remaining-{what}"))?
                .trim()
                .parse()
                .ok()?;
            let reset_secs = get(format!("x-ratelimit-reset-{what}")).and_then(go_duration_secs)?;
            let limit =
                get(format!("x-ratelimit-limit-{what}")).and_then(|v| v.trim().parse().ok());
            Some(Reported {
                limit,
                remaining,
                reset_secs,
            })
        };
        Observed {
            requests: dim("requests"),
            tokens: dim("tokens"),
        }
    }
}

/// `Authorization: Bearer <key>`.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn count_prompt(p: &Value, e: &Estimator) -> u64 {
    match p {
        Value::String(s) => e.count(s),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => e.count(s),
                Value::Number(_) => 1,
                Value::Array(ids) => ids.len() as u64,
                other => e.count_value(other),
            })
            .sum(),
        Value::Null => 0,
        other => e.count_value(other),
    }
}

fn usage_of(endpoint: Endpoint, u: &Value) -> Option<Usage> {
    if endpoint == Endpoint::Responses {
        return Some(Usage {
            input: u64_at(u, &["input_tokens"])?,
            output: u64_at(u, &["output_tokens"]).unwrap_or(0),
            cached_input: u64_at(u, &["input_tokens_details", "cached_tokens"]).unwrap_or(0),
        });
    }
    Some(Usage {
        input: u64_at(u, &["prompt_tokens"])?,
        output: u64_at(u, &["completion_tokens"]).unwrap_or(0),
        cached_input: u64_at(u, &["prompt_tokens_details", "cached_tokens"]).unwrap_or(0),
    })
}

/// Reads a streamed chat completion, completion or response.
struct Reader {
    endpoint: Endpoint,
    injected: bool,
    usage: Option<Usage>,
    text: String,
}

impl StreamReader for Reader {
    fn on_event(&mut self, _event: Option<&str>, data: &str) -> Forward {
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Forward::Yes;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Forward::Yes;
        };
        if self.endpoint == Endpoint::Responses {
            let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
            match ty {
                "response.output_text.delta"
                | "response.function_call_arguments.delta"
                | "response.refusal.delta"
                | "response.reasoning_summary_text.delta" => {
                    if let Some(d) = v.get("delta").and_then(Value::as_str) {
                        self.text.push_str(d);
                    }
                }
                "response.completed" | "response.incomplete" | "response.failed" => {
                    if let Some(u) = v
                        .get("response")
                        .and_then(|r| r.get("usage"))
                        .filter(|u| u.is_object())
                    {
                        self.usage = usage_of(Endpoint::Responses, u);
                    }
                }
                _ => {}
            }
            return Forward::Yes;
        }
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for c in choices {
                if let Some(t) = c.get("text").and_then(Value::as_str) {
                    self.text.push_str(t);
                }
                if let Some(d) = c.get("delta") {
                    for k in ["content", "refusal", "reasoning_content"] {
                        if let Some(t) = d.get(k).and_then(Value::as_str) {
                            self.text.push_str(t);
                        }
                    }
                    if let Some(calls) = d.get("tool_calls").and_then(Value::as_array) {
                        for call in calls {
                            if let Some(f) = call.get("function") {
                                for k in ["name", "arguments"] {
                                    if let Some(t) = f.get(k).and_then(Value::as_str) {
                                        self.text.push_str(t);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = usage_of(self.endpoint, u);
            let usage_only = v
                .get("choices")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if self.injected && usage_only {
                return Forward::Drop;
            }
        }
        Forward::Yes
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn input_reported(&self) -> Option<u64> {
        self.usage.map(|u| u.input)
    }

    fn output_text(&self) -> &str {
        &self.text
    }
}

/// Seconds in a Go-style duration as OpenAI sends its resets: `6m0s`, `1.5s`, `20ms`,
/// `1h2m3s`.
pub(crate) fn go_duration_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<f64>() {
        return Some(n);
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        total += n * match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_secs("6m0s"), Some(360.0));
        assert_eq!(go_duration_secs("1.5s"), Some(1.5));
        assert_eq!(go_duration_secs("20ms"), Some(0.02));
        assert_eq!(go_duration_secs("1h2m3s"), Some(3723.0));
        assert_eq!(go_duration_secs("7"), Some(7.0));
        assert_eq!(go_duration_secs("x"), None);
    }

    #[test]
    fn include_usage_is_injected_once() {
        let mut b = json!({"model": "m", "stream": true, "messages": []});
        assert!(OpenAi.prepare(Endpoint::ChatCompletions, &mut b));
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(!OpenAi.prepare(Endpoint::ChatCompletions, &mut b));
        let mut plain = json!({"model": "m", "messages": []});
        assert!(!OpenAi.prepare(Endpoint::ChatCompletions, &mut plain));
    }

    #[test]
    fn the_usage_chunk_is_dropped_only_when_injected() {
        let chunk = r#"{"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#;
        let mut r = OpenAi.stream_reader(Endpoint::ChatCompletions, true);
        assert_eq!(
            r.on_event(
                None,
                r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#
            ),
            Forward::Yes
        );
        assert_eq!(r.on_event(None, chunk), Forward::Drop);
        assert_eq!(r.usage().unwrap().total(), 12);
        assert_eq!(r.output_text(), "hi");
        let mut r = OpenAi.stream_reader(Endpoint::ChatCompletions, false);
        assert_eq!(r.on_event(None, chunk), Forward::Yes);
    }

    #[test]
    fn caps() {
        let c = OpenAi
            .call_info(Endpoint::ChatCompletions, &json!({"model": "gpt-4o", "messages": [], "max_tokens": 5, "max_completion_tokens": 9, "user": "u1"}))
            .unwrap();
        assert_eq!((c.output_cap, c.user.as_deref()), (Some(9), Some("u1")));
        let c = OpenAi
            .call_info(Endpoint::Completions, &json!({"model": "m", "prompt": "x"}))
            .unwrap();
        assert_eq!(c.output_cap, Some(16));
        assert!(OpenAi
            .call_info(Endpoint::ChatCompletions, &json!({"messages": []}))
            .is_err());
        assert!(OpenAi
            .call_info(Endpoint::ChatCompletions, &json!({"model": "m"}))
            .is_err());
    }
}
