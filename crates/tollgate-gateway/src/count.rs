//! Token estimation for callers that are not behind the gateway: the same count the gateway
//! reserves before a call, as a library function ([`estimate`]) and as an HTTP endpoint
//! (`POST /v1/estimate`).
//!
//! ```
//! use serde_json::json;
//! use tollgate_gateway::config::{EstimateConfig, ProviderKind, TokenizerChoice};
//! use tollgate_gateway::count::estimate;
//! use tollgate_gateway::provider::Endpoint;
//!
//! let body = json!({"model": "gpt-4o", "max_tokens": 100,
//!                   "messages": [{"role": "user", "content": "hello"}]});
//! let e = estimate(ProviderKind::OpenAi, Endpoint::ChatCompletions, &body,
//!                  TokenizerChoice::Auto, &EstimateConfig::default(), None)?;
//! assert_eq!((e.input_tokens, e.output_tokens, e.encoding), (8, 100, "o200k_base"));
//! # Ok::<(), String>(())
//! ```
//!
//! The endpoint takes `{"provider": "openai" | "anthropic", "endpoint": ..., "request": {...}}`
//! (`endpoint` defaults to `chat_completions` for OpenAI and `messages` for Anthropic) and
//! answers `{"model", "encoding", "input_tokens", "output_tokens", "tokens"}`. The output is
//! the request's own cap or the configured default (the gateway also clamps that default to
//! the policy's smallest token limit, which needs a subject; the endpoint does not).

use serde_json::{json, Value};

use crate::config::{EstimateConfig, ProviderKind, TokenizerChoice};
use crate::estimate::{output_reservation, Encoding, Estimator};
use crate::provider::{CallInfo, Endpoint};
use crate::providers;

/// A call's estimate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// The call as its body states it.
    pub call: CallInfo,
    /// The encoding that counted it (`o200k_base`, `cl100k_base`, `chars`).
    pub encoding: &'static str,
    /// Input tokens, the chat format's overhead included.
    pub input_tokens: u64,
    /// The output reservation.
    pub output_tokens: u64,
}

impl Estimate {
    /// Input and output.
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// The estimate of a request `body` to `endpoint` of a `kind` API, counted as the gateway
/// counts it; `smallest_limit` clamps a default output reservation (see
/// [`output_reservation`]).
///
/// # Errors
/// A message naming what the body lacks (such as its `model`).
pub fn estimate(
    kind: ProviderKind,
    endpoint: Endpoint,
    body: &Value,
    tokenizer: TokenizerChoice,
    config: &EstimateConfig,
    smallest_limit: Option<u64>,
) -> Result<Estimate, String> {
    let p = providers::of(kind);
    let call = p.call_info(endpoint, body)?;
    let estimator = estimator_for(tokenizer, &call.model, config);
    let input_tokens = p.count_input(endpoint, body, &estimator);
    let output_tokens = output_reservation(call.output_cap, config, smallest_limit);
    Ok(Estimate {
        call,
        encoding: estimator.encoding().name(),
        input_tokens,
        output_tokens,
    })
}

/// The estimator for `model` under an upstream's tokenizer choice.
pub fn estimator_for(
    tokenizer: TokenizerChoice,
    model: &str,
    config: &EstimateConfig,
) -> Estimator {
    Estimator::new(Encoding::choose(tokenizer, model), config)
}

/// Reads an endpoint name as `/v1/estimate` takes it.
fn endpoint_named(kind: ProviderKind, name: Option<&str>) -> Option<Endpoint> {
    Some(match (kind, name) {
        (ProviderKind::OpenAi, None | Some("chat_completions")) => Endpoint::ChatCompletions,
        (ProviderKind::OpenAi, Some("completions")) => Endpoint::Completions,
        (ProviderKind::OpenAi, Some("embeddings")) => Endpoint::Embeddings,
        (ProviderKind::OpenAi, Some("responses")) => Endpoint::Responses,
        (ProviderKind::Anthropic, None | Some("messages")) => Endpoint::Messages,
        _ => return None,
    })
}

/// Answers `POST /v1/estimate`: the status and the JSON body.
pub fn answer(body: &[u8], config: &EstimateConfig) -> (u16, Value) {
    let bad = |m: String| (400, json!({"error": "bad_request", "message": m}));
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad(format!("the body is not JSON: {e}")),
    };
    let Some(kind) = v
        .get("provider")
        .and_then(Value::as_str)
        .and_then(ProviderKind::parse)
    else {
        return bad("provider: must be \"openai\" or \"anthropic\"".into());
    };
    let Some(endpoint) = endpoint_named(kind, v.get("endpoint").and_then(Value::as_str)) else {
        return bad(format!(
            "endpoint: {} is not an endpoint of {}",
            v["endpoint"],
            kind.as_str()
        ));
    };
    let Some(request) = v.get("request") else {
        return bad("request: is required (the provider request body)".into());
    };
    let tokenizer = match v.get("tokenizer").and_then(Value::as_str) {
        None | Some("auto") => TokenizerChoice::Auto,
        Some("o200k_base") => TokenizerChoice::O200kBase,
        Some("cl100k_base") => TokenizerChoice::Cl100kBase,
        Some("chars") => TokenizerChoice::Chars,
        Some(other) => {
            return bad(format!(
                "tokenizer: {other:?} is not auto, o200k_base, cl100k_base or chars"
            ))
        }
    };
    match estimate(kind, endpoint, request, tokenizer, config, None) {
        Ok(e) => (
            200,
            json!({
                "model": e.call.model,
                "encoding": e.encoding,
                "input_tokens": e.input_tokens,
                "output_tokens": e.output_tokens,
                "tokens": e.tokens(),
            }),
        ),
        Err(m) => bad(format!("request: {m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_answers_and_names_bad_fields() {
        let c = EstimateConfig::default();
        let (s, v) = answer(
            br#"{"provider":"anthropic","request":{"model":"claude-x","max_tokens":9,"messages":[{"role":"user","content":"abcdefg"}]}}"#,
            &c,
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["encoding"], "chars");
        assert_eq!(v["output_tokens"], 9);
        let (s, v) = answer(br#"{"provider":"x","request":{}}"#, &c);
        assert_eq!(s, 400);
        assert!(v["message"].as_str().unwrap().starts_with("provider"));
        let (s, v) = answer(br#"{"provider":"openai","request":{"messages":[]}}"#, &c);
        assert_eq!(s, 400);
        assert!(v["message"].as_str().unwrap().contains("model"), "{v}");
    }
}
