//! The gateway end to end over real sockets: the service (in process, manual clock) in
//! front of the fake upstream from `tollgate-test`, called as a client would call the
//! provider.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_gateway::config::GatewayConfig;
use tollgate_gateway::keys::Keys;
use tollgate_test::upstream::{Behavior, RateLimitHeaders};
use tollgate_test::FakeUpstream;

use common::{config, eventually, start_config, Service};

const KEY: &str = "sk-test-client-key-000000000001";

fn tenant_of(key: &str) -> String {
    Keys::new(&GatewayConfig::default()).hash(key)
}

const RULES: &str = r#"
[[rules]]
name = "per-tenant"
match = { tenant = "*", provider = "*" }
limits = [
  { kind = "requests", amount = 100, per = "minute" },
  { kind = "tokens", amount = 100000, per = "minute" },
  { kind = "concurrency", amount = 4 },
]
"#;

async fn gateway(fake: &FakeUpstream, extra: &str) -> Service {
    let toml = format!(
        "{RULES}\n{extra}\n[[upstreams]]\nkind = \"openai\"\nurl = \"{}\"\n\n[[upstreams]]\nkind = \"anthropic\"\nurl = \"{}\"\n",
        fake.openai_url(),
        fake.url()
    );
    start_config(config(&toml)).await
}

async fn chat(s: &Service, key: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The SSE events of a streamed answer, read to the end.
async fn stream_events(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

async fn settled_tokens(s: &Service, tenant: &str, provider: &str) -> u64 {
    s.used(
        None,
        &format!("tenant={tenant}&provider={provider}"),
        "tokens",
    )
    .await
}

async fn settlements(s: &Service, path: &str) -> u64 {
    let m = s.metrics().await;
    m.lines()
        .find(|l| {
            l.starts_with("tollgate_gateway_settlements_total")
                && l.contains(&format!("path=\"{path}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until the settlements of `path` reach `n` (settlement runs on its own task; the
/// counters are the process's, shared by the tests running beside this one, so callers pass
/// a count taken before plus what they expect, and check the spend itself too).
async fn until_settled(s: &Service, path: &str, n: u64) {
    eventually(&format!("{n} settlements on {path}"), || async {
        settlements(s, path).await >= n
    })
    .await;
}

/// Asserts that `tenant` has spent exactly `expected` tokens at `provider`, once the
/// settlements in flight have run (at most 10 s).
async fn assert_spent(s: &Service, tenant: &str, provider: &str, expected: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let spent = settled_tokens(s, tenant, provider).await;
        if spent == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{tenant} spent {spent} tokens at {provider}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streamed_chat_settles_the_upstreams_usage() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = gateway(&fake, "").await;
    let before = settlements(&s, "completed").await;
    let (status, headers, body) = chat(
        &s,
        KEY,
        json!({"model": "gpt-4o", "max_tokens": 20, "messages": [{"role": "user", "content": "Say hello"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "word".to_owned() + &" word".repeat(19)
    );
    assert!(headers.contains_key("x-tollgate-request-id"));
    // The fake records the call once its task has finished writing the answer.
    assert_eq!(fake.wait_for(1, Duration::from_secs(10)).await, 1);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    // Passthrough: the client's own key reaches the upstream.
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {KEY}"));
    until_settled(&s, "completed", before + 1).await;
    let actual = seen[0].input_tokens + seen[0].output_tokens;
    assert_eq!(body["usage"]["total_tokens"], json!(actual));
    assert_spent(&s, &tenant_of(KEY), "openai", actual).await;
    // The key is nowhere in the metrics.
    assert!(!s.metrics().await.contains(KEY));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_relayed_and_the_usage_chunk_tollgate_asked_for_is_removed() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = gateway(&fake, "").await;
    let tenant = tenant_of(KEY);
    for asked in [false, true] {
        let before = settlements(&s, "completed").await;
        let spent_before = settled_tokens(&s, &tenant, "openai").await;
        fake.clear();
        let mut body = json!({"model": "gpt-4o-mini", "max_tokens": 5, "stream": true,
            "messages": [{"role": "user", "content": "count to five"}]});
        if asked {
            body["stream_options"] = json!({"include_usage": true});
        }
        let resp = s
            .http
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let events = stream_events(resp).await;
        let usage_chunks = events.iter().filter(|e| e.contains("\"usage\":{")).count();
        assert_eq!(usage_chunks, usize::from(asked), "{events:#?}");
        assert_eq!(events.last().unwrap(), "data: [DONE]");
        let contents = events
            .iter()
            .filter(|e| e.contains("\"content\":\""))
            .count();
        assert_eq!(contents, 1 + 5, "the role chunk and five words");
        // The upstream was asked for usage either way. (The fake records a call once its
        // task has finished writing, which may be after the client has read the end.)
        assert_eq!(fake.wait_for(1, Duration::from_secs(10)).await, 1);
        let seen = fake.seen();
        assert_eq!(seen[0].body["stream_options"]["include_usage"], true);
        until_settled(&s, "completed", before + 1).await;
        let actual = seen[0].input_tokens + seen[0].output_tokens;
        assert_spent(&s, &tenant, "openai", spent_before + actual).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_is_a_429_in_the_providers_shape_and_a_call_that_never_fits_is_a_413() {
    let fake = FakeUpstream::start().await.unwrap();
    let toml = format!(
        r#"
[[rules]]
name = "small"
match = {{ tenant = "*" }}
limits = [{{ kind = "requests", amount = 1, per = "minute" }}, {{ kind = "tokens", amount = 1000, per = "minute" }}]

[[upstreams]]
kind = "openai"
url = "{}"

[[upstreams]]
kind = "anthropic"
url = "{}"
"#,
        fake.openai_url(),
        fake.url()
    );
    let s = start_config(config(&toml)).await;
    let small = json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(chat(&s, KEY, small.clone()).await.0, 200);
    let (status, h, body) = chat(&s, KEY, small.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");
    assert!(body["error"]["param"].is_null());
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("try again"));
    let ms: u64 = h["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!((59_000..=60_000).contains(&ms), "{ms}");
    assert_eq!(h["retry-after"], "60");
    assert_eq!(h["x-ratelimit-limit-requests"], "1");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    assert!(h.contains_key("x-ratelimit-reset-requests"));

    // Anthropic's shape and header family.
    let r = s
        .http
        .post(s.url("/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(h["anthropic-ratelimit-requests-limit"], "1");
    assert_eq!(h["anthropic-ratelimit-requests-remaining"], "0");
    assert!(h["anthropic-ratelimit-requests-reset"]
        .to_str()
        .unwrap()
        .ends_with('Z'));
    assert!(h.contains_key("retry-after") && h.contains_key("retry-after-ms"));

    // Too large for the 1,000-token limit, ever: 413, and the SDKs are told not to retry.
    let other = "sk-test-client-key-000000000002";
    let (status, h, body) = chat(
        &s,
        other,
        json!({"model": "gpt-4o", "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(h["x-should-retry"], "false");
    assert_eq!(body["error"]["code"], "too_large");
    // ... and it spent nothing.
    assert_eq!(chat(&s, other, small).await.0, 200);
    assert_eq!(fake.seen().len(), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_cancels_the_upstream_frees_its_slot_and_pays_what_it_got()
{
    let fake = FakeUpstream::start().await.unwrap();
    fake.set_behavior(Behavior {
        delay: Duration::from_millis(20),
        ..Behavior::default()
    });
    let s = gateway(&fake, "").await;
    let tenant = tenant_of(KEY);
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-4o", "max_tokens": 50, "stream": true,
            "messages": [{"role": "user", "content": "a long answer please"}]}))
        .send()
        .await
        .unwrap();
    let mut resp = resp;
    let mut got = String::new();
    while got.matches("word").count() < 3 {
        got.push_str(std::str::from_utf8(&resp.chunk().await.unwrap().unwrap()).unwrap());
    }
    drop(resp);
    assert_eq!(fake.wait_for(1, Duration::from_secs(10)).await, 1);
    let seen = &fake.seen()[0];
    assert!(seen.cancelled && !seen.completed, "{seen:?}");
    assert!(seen.chunks_sent < 50);
    until_settled(&s, "client_gone", 1).await;
    // (Only this test leaves a stream, and the counter moves after the settlement.) Input as
    // estimated plus the words streamed before the client left (each word is one o200k
    // token), not the 50-token reservation.
    let spent = settled_tokens(&s, &tenant, "openai").await;
    assert_eq!(
        s.used(
            None,
            &format!("tenant={tenant}&provider=openai"),
            "concurrency"
        )
        .await,
        0
    );
    let input = tollgate_gateway::count::estimate(
        tollgate_gateway::config::ProviderKind::OpenAi,
        tollgate_gateway::provider::Endpoint::ChatCompletions,
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "a long answer please"}]}),
        tollgate_gateway::config::TokenizerChoice::Auto,
        &Default::default(),
        None,
    )
    .unwrap()
    .input_tokens;
    assert!(
        spent >= input + 3 && spent <= input + seen.chunks_sent,
        "{spent} {input} {seen:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_pass_through_and_spend_nothing() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = gateway(&fake, "").await;
    let tenant = tenant_of(KEY);
    for status in [500u16, 429] {
        let r = s
            .http
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-fake-status", status.to_string())
            .json(&json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
        if status == 429 {
            // The upstream's own headers and body reach the client.
            assert_eq!(r.headers()["retry-after"], "7");
            assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["message"], "fake upstream error");
        }
    }
    assert_spent(&s, &tenant, "openai", 0).await;
    assert_eq!(
        s.used(
            None,
            &format!("tenant={tenant}&provider=openai"),
            "concurrency"
        )
        .await,
        0
    );
    assert!(s
        .metrics()
        .await
        .contains("tollgate_gateway_upstream_429_total{provider=\"openai\"} 1"));
    // An upstream that cannot be reached: 502, nothing spent.
    s.stop().await;
    let dead = FakeUpstream::start().await.unwrap();
    let url = dead.openai_url();
    drop(dead);
    let s = start_config(config(&format!(
        "{RULES}\n[[upstreams]]\nkind = \"openai\"\nurl = \"{url}\"\n"
    )))
    .await;
    let (status, _, body) = chat(
        &s,
        KEY,
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "server_error");
    assert_spent(&s, &tenant, "openai", 0).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_upstream_breaks_is_settled_at_what_was_streamed() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = gateway(&fake, "").await;
    let before = settlements(&s, "stream_broken").await;
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-fake-fail-after", "4")
        .json(&json!({"model": "gpt-4o", "max_tokens": 30, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err(), "the client sees the stream break");
    let input = 3 + 1 + 1 + 3; // "user", "hi", per-message and priming tokens
    assert_spent(&s, &tenant_of(KEY), "openai", input + 4).await;
    // Counted as a broken stream (the count is written once the settlement has run).
    until_settled(&s, "stream_broken", before + 1).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_answer_without_usage_is_settled_at_the_estimate_and_counted() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = gateway(&fake, "").await;
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-fake-no-usage", "1")
        .json(&json!({"model": "gpt-4o", "max_tokens": 30, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_spent(&s, &tenant_of(KEY), "openai", 8 + 30).await;
    assert!(s
        .metrics()
        .await
        .contains("tollgate_gateway_usage_missing_total{provider=\"openai\"} 1"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_streamed_and_not() {
    let fake = FakeUpstream::start().await.unwrap();
    let s = gateway(&fake, "").await;
    let tenant = tenant_of(KEY);
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 7, "system": "be brief",
        "metadata": {"user_id": "u-1"}, "messages": [{"role": "user", "content": "hello there"}]});
    let r = s
        .http
        .post(s.url("/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["output_tokens"], 7);
    let first = fake.seen()[0].clone();
    assert_eq!(first.headers["x-api-key"], KEY);
    assert_spent(&s, &tenant, "anthropic", first.input_tokens + 7).await;

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = s
        .http
        .post(s.url("/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&streamed)
        .send()
        .await
        .unwrap();
    let events = stream_events(r).await;
    assert!(events[0].starts_with("event: message_start"));
    assert!(events.last().unwrap().starts_with("event: message_stop"));
    assert_spent(&s, &tenant, "anthropic", 2 * (first.input_tokens + 7)).await;
    // count_tokens is relayed and spends nothing.
    let r = s
        .http
        .post(s.url("/v1/messages/count_tokens"))
        .header("x-api-key", KEY)
        .json(
            &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        settled_tokens(&s, &tenant, "anthropic").await,
        2 * (first.input_tokens + 7)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_providers_400_404_413_and_spends_nothing() {
    let fake = FakeUpstream::start().await.unwrap();
    let toml = format!(
        "{RULES}\n[gateway]\nmax_body_bytes = 2048\n\n[[upstreams]]\nkind = \"openai\"\nurl = \"{}\"\nmodels = [\"gpt-*\"]\n\n[[upstreams]]\nkind = \"anthropic\"\nurl = \"{}\"\n",
        fake.openai_url(),
        fake.url()
    );
    let s = start_config(config(&toml)).await;
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (status, _, v) = chat(&s, KEY, json!({"messages": []})).await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("model"));
    let (status, _, v) = chat(&s, KEY, json!({"model": "llama-3", "messages": []})).await;
    assert_eq!(status, 404, "no default route for unknown models: {v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    let (status, h, _) = chat(
        &s,
        KEY,
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(4096)}]}),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(h["x-should-retry"], "false");
    let (status, _, _) = chat(&s, "", json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(status, 401);
    let r = s
        .http
        .post(s.url("/v1/messages"))
        .header("x-api-key", KEY)
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(fake.seen().is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_keys_and_model_routing() {
    let a = FakeUpstream::start().await.unwrap();
    let b = FakeUpstream::start().await.unwrap();
    std::env::set_var("TOLLGATE_TEST_UPSTREAM_A", "sk-upstream-a");
    std::env::set_var("TOLLGATE_TEST_UPSTREAM_B", "sk-upstream-b");
    let toml = format!(
        r#"{RULES}
[gateway]
keys = "managed"
attributes = {{ agent = "x-agent-id" }}

[[gateway.clients]]
name = "acme"
key = "tg-acme-0123456789abcdef"
tenant = "acme"
tier = "pro"

[[upstreams]]
name = "main"
kind = "openai"
url = "{}"
key_env = "TOLLGATE_TEST_UPSTREAM_A"
default = true

[[upstreams]]
name = "mini"
kind = "openai"
url = "{}"
key_env = "TOLLGATE_TEST_UPSTREAM_B"
models = ["gpt-4o-mini*", "o3"]
"#,
        a.openai_url(),
        b.openai_url()
    );
    let s = start_config(config(&toml)).await;
    let key = "tg-acme-0123456789abcdef";
    for (model, upstream) in [("gpt-4o-mini-2024", &b), ("o3", &b), ("gpt-4.1", &a)] {
        let before = upstream.seen().len();
        let r = s
            .http
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-agent-id", "planner")
            .json(&json!({"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
        let seen = upstream.seen();
        assert_eq!(seen.len(), before + 1, "{model} went elsewhere");
        let auth = &seen[before].headers["authorization"];
        assert!(auth == "Bearer sk-upstream-a" || auth == "Bearer sk-upstream-b");
        assert!(
            !seen[before].headers.values().any(|v| v.contains(key)),
            "the client's key reached the upstream"
        );
    }
    // Spent by tenant acme, per upstream, at the upstreams' reported usage.
    let used = |f: &FakeUpstream| {
        f.seen()
            .iter()
            .map(|x| x.input_tokens + x.output_tokens)
            .sum::<u64>()
    };
    assert_spent(&s, "acme", "mini", used(&b)).await;
    assert_spent(&s, "acme", "main", used(&a)).await;
    let (status, _, v) = chat(
        &s,
        "tg-unknown-0123456789",
        json!({"model": "o3", "messages": []}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_with_a_private_ca() {
    let fake = FakeUpstream::start_tls().await.unwrap();
    let toml = format!(
        "{RULES}\n[[upstreams]]\nkind = \"openai\"\nurl = \"{}\"\nca_file = \"{}\"\n",
        fake.openai_url(),
        fake.ca_file().unwrap().display()
    );
    let s = start_config(config(&toml)).await;
    let (status, _, body) = chat(&s, KEY, json!({"model": "gpt-4o", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;
    // Without the CA the certificate is refused: 502, nothing relayed.
    let toml = format!(
        "{RULES}\n[[upstreams]]\nkind = \"openai\"\nurl = \"{}\"\n",
        fake.openai_url()
    );
    let s = start_config(config(&toml)).await;
    let (status, _, _) = chat(&s, KEY, json!({"model": "gpt-4o", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 502);
    assert_eq!(fake.seen().len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_own_limits_are_learned() {
    let fake = FakeUpstream::start().await.unwrap();
    fake.set_behavior(Behavior {
        ratelimit: Some(RateLimitHeaders {
            limit_requests: 4,
            remaining_requests: 3,
            limit_tokens: 1_000_000,
            remaining_tokens: 999_000,
            reset_secs: 15,
        }),
        ..Behavior::default()
    });
    let s = gateway(&fake, "[gateway]\nlearned_headroom = 0.5\n").await;
    let call = json!({"model": "gpt-4o", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    // The first answer teaches the limit (4 per minute, half of it for the fleet: 2).
    assert_eq!(chat(&s, KEY, call.clone()).await.0, 200);
    assert_eq!(chat(&s, KEY, call.clone()).await.0, 200);
    assert_eq!(chat(&s, KEY, call.clone()).await.0, 200);
    let (status, h, body) = chat(&s, KEY, call.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("learned."));
    assert!(h.contains_key("retry-after-ms"));
    assert_eq!(fake.seen().len(), 3);
    // An upstream that reports itself exhausted holds its callers back until its reset.
    fake.set_behavior(Behavior {
        ratelimit: Some(RateLimitHeaders {
            limit_requests: 4,
            remaining_requests: 0,
            limit_tokens: 1_000_000,
            remaining_tokens: 999_000,
            reset_secs: 15,
        }),
        ..Behavior::default()
    });
    let other = "sk-test-client-key-000000000003";
    assert_eq!(chat(&s, other, call.clone()).await.0, 200);
    let (status, h, _) = chat(&s, other, call).await;
    assert_eq!(status, 429);
    let ms: u64 = h["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!((1..=15_000).contains(&ms), "{ms}");
    assert_eq!(fake.seen().len(), 4);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estimate_endpoint_counts_like_the_gateway() {
    let s = start_config(config(RULES)).await;
    let a = s
        .post(
            "/v1/estimate",
            None,
            json!({"provider": "openai", "request": {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]}}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["input_tokens"], 8);
    assert_eq!(a.body["tokens"], 18);
    assert_eq!(a.body["encoding"], "o200k_base");
    let a = s
        .post("/v1/estimate", None, json!({"provider": "openai"}))
        .await;
    assert_eq!(a.status, 400);
    s.stop().await;
}

#[test]
fn the_example_gateway_config_is_valid() {
    for (k, v) in [
        ("OPENAI_API_KEY", "sk-example"),
        ("ANTHROPIC_API_KEY", "sk-ant-example"),
        ("LOCAL_LLM_KEY", "unused"),
        ("ACME_TOLLGATE_KEY", "tg-acme-0123456789abcdef"),
        ("GLOBEX_TOLLGATE_KEY", "tg-globex-0123456789abcdef"),
    ] {
        std::env::set_var(k, v);
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gateway.toml");
    let c = tollgate_server::config::Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let g = &c.gateway;
    assert_eq!(g.upstreams.len(), 3);
    assert_eq!(g.clients.len(), 2);
    let routes = tollgate_gateway::route::Routes::new(&g.upstreams);
    let kind = tollgate_gateway::config::ProviderKind::OpenAi;
    assert_eq!(routes.route(kind, "llama-3.1-70b"), Some(1));
    assert_eq!(routes.route(kind, "gpt-4o"), Some(0));
    assert_eq!(
        routes.route(
            tollgate_gateway::config::ProviderKind::Anthropic,
            "claude-sonnet-4-5"
        ),
        Some(2)
    );
}

/// The one-command start: the real binary with `--upstream`, no configuration file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_starts_the_gateway() {
    let fake = FakeUpstream::start().await.unwrap();
    let port = tollgate_test::free_port().unwrap();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([
                "serve",
                "--grpc",
                "off",
                "--http",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--upstream")
            .arg(format!("openai={}", fake.openai_url()))
            .arg("--upstream")
            .arg(format!("anthropic={}", fake.url()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the service did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-4o", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", KEY)
        .json(&json!({"model": "claude-x", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Under the built-in policy (60 requests a minute per tenant and provider).
    let v: Value = http
        .get(format!(
            "{base}/v1/usage?tenant={}&provider=openai",
            tenant_of(KEY)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["limits"][0]["capacity"], 60, "{v}");
    // A bad --upstream is refused, naming the flag.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--upstream", "azure=http://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--upstream"),
        "{out:?}"
    );
}
