//! Counting tokens before a call: a real tokenizer (`o200k_base`, `cl100k_base`) for the
//! OpenAI models tiktoken knows, and a characters-per-token ratio for models without a public
//! tokenizer; the chat format's per-message overhead on top; and the output reservation.
//!
//! The rule for a chat request (OpenAI's published way of counting a chat's prompt tokens,
//! extended to the parts it leaves out), applied by [`Estimator::count_messages`]:
//!
//! - every message costs [`TOKENS_PER_MESSAGE`] (3), plus the tokens of each of its string
//!   fields (`role`, `content`, `name`, `tool_call_id`, ...), plus 1 more for a `name`;
//! - `content` given as parts counts each part's text (`text`, `input_text`, `refusal`); an
//!   image part counts [`TOKENS_PER_IMAGE`];
//! - a tool call counts its function's `name` and `arguments`, plus [`TOKENS_PER_TOOL_CALL`];
//! - any other structured value (tool definitions, a JSON schema) counts the tokens of its
//!   compact JSON text (keys sorted);
//! - the reply is primed with [`REPLY_PRIMING`] (3) tokens.
//!
//! Models counted by characters use the same walk with the text's characters divided by the
//! configured ratio (rounded up) and the configured overhead per message.
//!
//! The counts of the tokenizers equal Python `tiktoken`'s: the fixture corpus under
//! `tests/fixtures/` was generated with it, and a test compares every entry.

use serde_json::Value;
use tiktoken_rs::CoreBPE;

use crate::config::{EstimateConfig, TokenizerChoice};

/// Tokens every chat message costs besides its text.
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens a message's `name` costs besides its text.
pub const TOKENS_PER_NAME: u64 = 1;
/// Tokens the reply is primed with.
pub const REPLY_PRIMING: u64 = 3;
/// Tokens a tool call costs besides its name and arguments.
pub const TOKENS_PER_TOOL_CALL: u64 = 3;
/// Tokens an image part is counted as (a low-detail image's price; a high-detail image
/// costs more and is settled at its actual usage).
pub const TOKENS_PER_IMAGE: u64 = 85;

/// A tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `o200k_base` (GPT-4o, GPT-4.1, GPT-5, o-series).
    O200kBase,
    /// `cl100k_base` (GPT-4, GPT-3.5, embeddings).
    Cl100kBase,
    /// Characters per token.
    Chars,
}

impl Encoding {
    /// The encoding's name, as tiktoken names it (`chars` for the ratio).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::Chars => "chars",
        }
    }

    /// The encoding for `model` as tiktoken maps model names (by exact name, then prefix);
    /// models it does not know count by characters.
    pub fn for_model(model: &str) -> Encoding {
        use tiktoken_rs::tokenizer::{get_tokenizer, Tokenizer};
        match get_tokenizer(model) {
            Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => Encoding::O200kBase,
            Some(Tokenizer::Cl100kBase) => Encoding::Cl100kBase,
            _ => Encoding::Chars,
        }
    }

    /// The encoding an upstream's choice gives `model`.
    pub fn choose(choice: TokenizerChoice, model: &str) -> Encoding {
        match choice {
            TokenizerChoice::Auto => Encoding::for_model(model),
            TokenizerChoice::O200kBase => Encoding::O200kBase,
            TokenizerChoice::Cl100kBase => Encoding::Cl100kBase,
            TokenizerChoice::Chars => Encoding::Chars,
        }
    }

    fn bpe(self) -> Option<&'static CoreBPE> {
        match self {
            Encoding::O200kBase => Some(tiktoken_rs::o200k_base_singleton()),
            Encoding::Cl100kBase => Some(tiktoken_rs::cl100k_base_singleton()),
            Encoding::Chars => None,
        }
    }
}

/// Loads the tokenizers' tables now (they take a moment), so that the first call does not.
pub fn warm_up() {
    let _ = Encoding::O200kBase.bpe();
    let _ = Encoding::Cl100kBase.bpe();
}

/// Counts tokens with one encoding and the configured ratios.
#[derive(Clone, Copy, Debug)]
pub struct Estimator {
    encoding: Encoding,
    chars_per_token: f64,
    message_overhead: u64,
}

impl Estimator {
    /// An estimator for `encoding` with `config`'s ratios.
    pub fn new(encoding: Encoding, config: &EstimateConfig) -> Self {
        Estimator {
            encoding,
            chars_per_token: config.chars_per_token,
            message_overhead: config.message_overhead,
        }
    }

    /// Its encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The tokens of `text` (no special tokens: text that spells one counts as text).
    pub fn count(&self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        match self.encoding.bpe() {
            Some(bpe) => bpe.encode_ordinary(text).len() as u64,
            None => {
                let chars = text.chars().count() as f64;
                (chars / self.chars_per_token).ceil() as u64
            }
        }
    }

    fn per_message(&self) -> u64 {
        match self.encoding {
            Encoding::Chars => self.message_overhead,
            _ => TOKENS_PER_MESSAGE,
        }
    }

    fn priming(&self) -> u64 {
        match self.encoding {
            Encoding::Chars => self.message_overhead,
            _ => REPLY_PRIMING,
        }
    }

    /// The prompt tokens of a list of chat messages (see the module's rule).
    pub fn count_messages(&self, messages: &[Value]) -> u64 {
        let mut n = 0u64;
        for m in messages {
            n = n.saturating_add(self.per_message());
            match m {
                Value::Object(fields) => {
                    for (k, v) in fields {
                        n = n.saturating_add(self.count_field(k, v));
                        if k == "name" && self.encoding != Encoding::Chars {
                            n = n.saturating_add(TOKENS_PER_NAME);
                        }
                    }
                }
                other => n = n.saturating_add(self.count_value(other)),
            }
        }
        n.saturating_add(self.priming())
    }

    fn count_field(&self, key: &str, v: &Value) -> u64 {
        match (key, v) {
            ("content", Value::Array(parts)) => parts.iter().map(|p| self.count_part(p)).sum(),
            ("tool_calls", Value::Array(calls)) => {
                calls.iter().map(|c| self.count_tool_call(c)).sum()
            }
            (_, Value::Null) => 0,
            (_, v) => self.count_value(v),
        }
    }

    /// One part of a message's content.
    pub fn count_part(&self, part: &Value) -> u64 {
        let Value::Object(p) = part else {
            return self.count_value(part);
        };
        let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "text" | "input_text" | "output_text" => {
                p.get("text").map_or(0, |t| self.count_value(t))
            }
            "refusal" => p.get("refusal").map_or(0, |t| self.count_value(t)),
            "image_url" | "input_image" | "image" => TOKENS_PER_IMAGE,
            _ => self.count_value(part),
        }
    }

    fn count_tool_call(&self, call: &Value) -> u64 {
        let f = call.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .map_or(0, |v| self.count_value(v));
        let args = f
            .and_then(|f| f.get("arguments"))
            .map_or(0, |v| self.count_value(v));
        TOKENS_PER_TOOL_CALL + name + args
    }

    /// The tokens of a JSON value: a string's text, anything else's compact JSON.
    pub fn count_value(&self, v: &Value) -> u64 {
        match v {
            Value::String(s) => self.count(s),
            Value::Null => 0,
            other => self.count(&other.to_string()),
        }
    }
}

/// The output reservation: the request's own cap, else `default` clamped to `fraction` of
/// the smallest token limit that applies (`smallest_limit`, if any), and at least 1.
pub fn output_reservation(
    cap: Option<u64>,
    config: &EstimateConfig,
    smallest_limit: Option<u64>,
) -> u64 {
    if let Some(c) = cap {
        return c;
    }
    let mut out = config.default_output_tokens;
    if let Some(limit) = smallest_limit {
        let clamp = ((limit as f64) * config.output_fraction).floor() as u64;
        out = out.min(clamp);
    }
    out.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_overhead() {
        let e = Estimator::new(Encoding::O200kBase, &EstimateConfig::default());
        let msgs = [json!({"role": "user", "content": "hello"})];
        // 3 per message + "user" (1) + "hello" (1) + 3 priming.
        assert_eq!(e.count_messages(&msgs), 8);
        let named = [json!({"role": "user", "content": "hello", "name": "bob"})];
        assert_eq!(e.count_messages(&named), 8 + 1 + 1);
    }

    #[test]
    fn chars_ratio_rounds_up() {
        let cfg = EstimateConfig {
            chars_per_token: 4.0,
            ..EstimateConfig::default()
        };
        let e = Estimator::new(Encoding::Chars, &cfg);
        assert_eq!(e.count("abcde"), 2);
        assert_eq!(e.count("日本語"), 1);
        assert_eq!(e.count(""), 0);
    }

    #[test]
    fn model_families() {
        assert_eq!(Encoding::for_model("gpt-4o-mini"), Encoding::O200kBase);
        assert_eq!(Encoding::for_model("gpt-4"), Encoding::Cl100kBase);
        assert_eq!(
            Encoding::for_model("gpt-3.5-turbo-0125"),
            Encoding::Cl100kBase
        );
        assert_eq!(Encoding::for_model("claude-sonnet-4-5"), Encoding::Chars);
        assert_eq!(Encoding::for_model("llama-3-70b"), Encoding::Chars);
    }

    #[test]
    fn output_cap_and_default() {
        let c = EstimateConfig::default();
        assert_eq!(output_reservation(Some(10), &c, Some(1)), 10);
        assert_eq!(output_reservation(None, &c, None), 4096);
        assert_eq!(output_reservation(None, &c, Some(1000)), 250);
        assert_eq!(output_reservation(None, &c, Some(2)), 1);
    }
}
