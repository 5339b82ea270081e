//! The estimator counts exactly what the reference tokenizer counts: every entry of the
//! fixture corpus (texts in many languages and scripts, code, emoji, special-token text; chat
//! requests with names, content parts, tool calls and tool definitions), generated once with
//! Python `tiktoken` by `tests/fixtures/gen_corpus.py` and checked in.

use serde_json::Value;
use tollgate_gateway::config::{EstimateConfig, ProviderKind, TokenizerChoice};
use tollgate_gateway::count::estimate;
use tollgate_gateway::estimate::{Encoding, Estimator};
use tollgate_gateway::provider::Endpoint;

fn corpus() -> Value {
    let text = include_str!("fixtures/corpus.json");
    serde_json::from_str(text).unwrap()
}

const ENCODINGS: [(&str, Encoding, TokenizerChoice); 2] = [
    (
        "o200k_base",
        Encoding::O200kBase,
        TokenizerChoice::O200kBase,
    ),
    (
        "cl100k_base",
        Encoding::Cl100kBase,
        TokenizerChoice::Cl100kBase,
    ),
];

#[test]
fn texts_count_as_tiktoken_counts_them() {
    let c = corpus();
    let texts = c["texts"].as_array().unwrap();
    assert!(texts.len() >= 25);
    for (name, enc, _) in ENCODINGS {
        let e = Estimator::new(enc, &EstimateConfig::default());
        for t in texts {
            let text = t["text"].as_str().unwrap();
            assert_eq!(e.count(text), t[name].as_u64().unwrap(), "{name}: {text:?}");
        }
    }
}

#[test]
fn chat_requests_count_as_the_reference_rule_counts_them() {
    let c = corpus();
    let chats = c["chats"].as_array().unwrap();
    assert!(chats.len() >= 5);
    for (name, _, choice) in ENCODINGS {
        for chat in chats {
            let request = &chat["request"];
            let e = estimate(
                ProviderKind::OpenAi,
                Endpoint::ChatCompletions,
                request,
                choice,
                &EstimateConfig::default(),
                None,
            )
            .unwrap();
            assert_eq!(
                e.input_tokens,
                chat[name].as_u64().unwrap(),
                "{name}: {request}"
            );
        }
    }
}
