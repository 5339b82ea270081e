//! The gateway with the official Python SDKs (`openai`, `anthropic`) as clients, changed only
//! in their base URL: chat completions, legacy completions, responses and messages, streamed
//! and not, a 429 the SDK retries after exactly the
//! wait tollgate named, and refusals it does not retry (a call that can never fit: 413 with
//! `x-should-retry: false`; a spent daily quota). The SDKs run from the repository's `.venv`
//! (made by `scripts/venv` from `scripts/requirements-test.txt`; the test runs it if needed).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use tollgate_gateway::config::GatewayConfig;
use tollgate_gateway::keys::Keys;
use tollgate_server::config::Config;
use tollgate_server::server::{self, Options, Running};
use tollgate_test::FakeUpstream;

const KEY: &str = "sk-sdk-test-key-0000000000000001";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's Python with both SDKs, made by `scripts/venv` when missing.
fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    let ready = || {
        Command::new(&py)
            .args(["-c", "import openai, anthropic"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        let status = Command::new("bash")
            .arg(repo().join("scripts/venv"))
            .status()
            .expect("scripts/venv runs");
        assert!(status.success(), "scripts/venv failed");
        assert!(ready(), "the SDKs are not importable after scripts/venv");
    }
    py
}

/// Runs the scenarios (comma-separated) in one Python process (importing the SDKs takes
/// seconds on a busy host); answers what each saw, by name.
async fn run(scenario: &str, base: &str) -> Value {
    let py = python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdk_gateway.py");
    let (scenario, base) = (scenario.to_owned(), base.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script)
            .arg(&scenario)
            .arg(&base)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "sdk_gateway.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn tenant(key: &str) -> String {
    Keys::new(&GatewayConfig::default()).hash(key)
}

/// The service on the system clock (the SDKs wait in real time) in front of `fake`.
async fn start(fake: &FakeUpstream) -> Running {
    let toml = format!(
        r#"
[[rules]]
name = "per-tenant"
match = {{ tenant = "*", provider = "*" }}
limits = [{{ kind = "tokens", amount = 50000, per = "minute" }}]

[[rules]]
name = "retry-openai"
match = {{ tenant = "{retry_openai}" }}
limits = [{{ kind = "requests", amount = 1, per = "2s" }}]

[[rules]]
name = "retry-anthropic"
match = {{ tenant = "{retry_anthropic}" }}
limits = [{{ kind = "requests", amount = 1, per = "2s" }}]

[[rules]]
name = "daily-quota"
match = {{ tenant = "*", model = "gpt-quota" }}
limits = [{{ kind = "requests", amount = 1, per = "day", algorithm = "fixed_window" }}]

[[upstreams]]
kind = "openai"
url = "{openai}"

[[upstreams]]
kind = "anthropic"
url = "{anthropic}"
"#,
        retry_openai = tenant(&format!("{KEY}r")),
        retry_anthropic = tenant(&format!("{KEY}s")),
        openai = fake.openai_url(),
        anthropic = fake.url(),
    );
    let mut config = Config::from_toml(&toml, "sdk.toml").unwrap_or_else(|e| panic!("{e}"));
    config.server.http = "127.0.0.1:0".parse().unwrap();
    config.server.grpc = None;
    server::start(Options {
        config,
        clock: Some(Arc::new(tollgate::SystemClock::new())),
        ..Options::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_works_unchanged_streamed_and_not() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = start(&fake).await;
    let out = run("openai", &s.url()).await["openai"].clone();
    assert_eq!(out["text"], "word word word word word word");
    assert_eq!(out["stream_text"], "word word word word");
    // The usage chunk tollgate asked for is not shown to a client that did not ask...
    assert_eq!(out["stream_usage_chunks"], 0, "{out}");
    assert_eq!(out["stream_empty_choices"], 0, "{out}");
    // ... and one that asked gets it.
    assert!(out["asked_usage"].as_u64().unwrap() > 4);
    assert_eq!(out["embedding_len"], 3);
    assert_eq!(out["models"][0], "fake-model");
    let seen = fake.seen();
    assert!(seen
        .iter()
        .filter(|x| x.stream)
        .all(|x| x.body["stream_options"]["include_usage"] == true));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_legacy_completions_and_responses_streamed_and_not() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = start(&fake).await;
    let out =
        run("openai_legacy_and_responses", &s.url()).await["openai_legacy_and_responses"].clone();
    // Legacy completions: the text and usage as the upstream sent them.
    assert_eq!(out["completion_text"], "word word word word word", "{out}");
    assert_eq!(out["completion_usage"][1], 5, "{out}");
    assert_eq!(out["completion_stream_text"], "word word word", "{out}");
    // The usage chunk tollgate asked for is not shown to a client that did not ask ...
    assert_eq!(out["completion_stream_usage_chunks"], 0, "{out}");
    assert_eq!(out["completion_stream_empty_choices"], 0, "{out}");
    // ... and one that asked gets it.
    assert_eq!(out["completion_asked_usage"], 3, "{out}");
    // The Responses API, whose stream reports usage in its `response.completed` event.
    assert_eq!(
        out["response_text"], "word word word word word word word",
        "{out}"
    );
    assert_eq!(out["response_usage"][1], 7, "{out}");
    assert_eq!(out["response_stream_text"], "word word", "{out}");
    assert_eq!(out["response_stream_usage"], 2, "{out}");
    assert_eq!(out["response_event_types"][0], "response.created", "{out}");

    // The fake records a call once its task has finished writing the answer.
    fake.wait_for(5, std::time::Duration::from_secs(10)).await;
    let seen = fake.seen();
    assert_eq!(seen.len(), 5, "every call reached the upstream once");
    let legacy: Vec<_> = seen
        .iter()
        .filter(|x| x.path == "/v1/completions")
        .collect();
    assert_eq!(legacy.len(), 3);
    assert!(
        legacy
            .iter()
            .filter(|x| x.stream)
            .all(|x| x.body["stream_options"]["include_usage"] == true),
        "tollgate asks a streamed completion for its usage"
    );
    assert!(seen.iter().all(|x| x.completed && x.usage_reported));
    // Each call settled on the provider's usage: the tokens counted for these two models
    // (which no other test of this process uses; metrics are per process) are the ones the
    // upstream reported. Settlement runs on a task of its own: wait for it.
    let (input, output): (u64, u64) = seen
        .iter()
        .map(|x| (x.input_tokens, x.output_tokens))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    let counted = |m: &str, direction: &str| {
        ["gpt-3.5-turbo-instruct", "gpt-4.1"]
            .iter()
            .map(|model| {
                m.lines()
                    .filter(|l| l.starts_with("tollgate_gateway_tokens_total"))
                    .filter(|l| l.contains(&format!("model=\"{model}\"")))
                    .filter(|l| l.contains(&format!("direction=\"{direction}\"")))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
            })
            .sum::<f64>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m = reqwest::get(format!("{}/metrics", s.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if counted(&m, "input") == input as f64 && counted(&m, "output") == output as f64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "settled {} input and {} output tokens; the upstream reported {input} and {output}",
            counted(&m, "input"),
            counted(&m, "output")
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_works_unchanged_streamed_and_not() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = start(&fake).await;
    let out = run("anthropic", &s.url()).await["anthropic"].clone();
    assert_eq!(out["text"], "word word word word word");
    assert_eq!(out["stream_text"], "word word word");
    assert_eq!(out["stream_usage"], 3);
    assert!(out["count_tokens"].as_u64().unwrap() > 0);
    let seen = fake.seen();
    // Passthrough: the client's key reaches the upstream as the SDK sent it.
    let bearer = format!("Bearer {KEY}");
    assert!(
        seen.iter().all(
            |x| x.headers.get("x-api-key").map(String::as_str) == Some(KEY)
                || x.headers.get("authorization") == Some(&bearer)
        ),
        "{:?}",
        seen.iter()
            .map(|x| (&x.path, &x.headers))
            .collect::<Vec<_>>()
    );
    s.shutdown().await;
}

/// The wire log of a retry scenario: the 429, its retry-after-ms, and when the SDK sent the
/// retry after it.
fn check_retry(out: &Value) {
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["retries_taken"], 1, "{out}");
    let wire = out["wire"].as_array().unwrap();
    // request, 200, request, 429, request (the retry), 200.
    let statuses: Vec<Value> = wire.iter().map(|w| w["status"].clone()).collect();
    assert_eq!(
        statuses,
        [
            Value::Null,
            200.into(),
            Value::Null,
            429.into(),
            Value::Null,
            200.into()
        ],
        "{out}"
    );
    let wait_ms: f64 = wire[3]["retry_after_ms"].as_str().unwrap().parse().unwrap();
    assert!((1.0..=2000.0).contains(&wait_ms), "{wait_ms}");
    let waited = (wire[4]["at"].as_f64().unwrap() - wire[3]["at"].as_f64().unwrap()) * 1000.0;
    // The SDK slept exactly the wait it was given (up to its own scheduling), and the
    // retry, sent then and not earlier, was admitted.
    assert!(
        waited >= wait_ms - 5.0 && waited <= wait_ms + 250.0,
        "told {wait_ms} ms, waited {waited} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_retry_a_429_after_exactly_the_wait_given() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = start(&fake).await;
    let out = run("openai_retry,anthropic_retry", &s.url()).await;
    check_retry(&out["openai_retry"]);
    check_retry(&out["anthropic_retry"]);
    // Three calls reached the upstream per SDK: the first, and the retry (the 429 did not).
    assert_eq!(fake.seen().len(), 4);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_do_not_retry_what_can_never_fit_nor_a_spent_daily_quota() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = start(&fake).await;
    let all = run(
        "openai_too_large,anthropic_too_large,openai_quota",
        &s.url(),
    )
    .await;
    for scenario in ["openai_too_large", "anthropic_too_large"] {
        let out = &all[scenario];
        assert_eq!(out["status"], 413, "{out}");
        assert_eq!(out["should_retry"], "false", "{out}");
        assert_eq!(out["sent"], 1, "retried: {out}");
    }
    let out = &all["openai_quota"];
    assert_eq!(out["status"], 429, "{out}");
    assert_eq!(out["code"], "rate_limit_exceeded");
    assert!(out["retry_after"].as_u64().unwrap() > 120, "{out}");
    assert_eq!(
        out["sent"], 2,
        "the first call and the refused one, not retried: {out}"
    );
    // Only the quota's first call reached the upstream.
    assert_eq!(fake.seen().len(), 1);
    s.shutdown().await;
}
