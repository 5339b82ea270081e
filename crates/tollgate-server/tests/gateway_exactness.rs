//! Exactness of the gateway across a fleet: 200 concurrent streamed completions of random
//! sizes, from four client processes (the official OpenAI SDK), through two `tollgate`
//! processes (the real binary) sharing one private Redis, against one tenant's token limit.
//!
//! - Settlement is exact: what the tenant was charged in total (a day-long fixed-window
//!   counter beside the limit, which never refills) equals the sum of the usage the upstream
//!   reported.
//! - Admission is bounded: the tokens admitted (each call's actual usage) never exceed what
//!   the limit allows over the span of the admissions plus what the estimates under-reserved:
//!
//!   Σ actual ≤ burst + rate × T + Σ max(0, actual − reserved)
//!
//!   where T is the time from the first call reaching the upstream to the last (plus a
//!   margin for the time between an admission and its arrival upstream). Under-reservation is
//!   the only way past the limit: a call is admitted on its estimate, and settling a larger
//!   actual charges the bucket after the fact (it goes into debt, and later calls wait).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_gateway::config::{EstimateConfig, GatewayConfig, ProviderKind, TokenizerChoice};
use tollgate_gateway::count::estimate;
use tollgate_gateway::keys::Keys;
use tollgate_gateway::provider::Endpoint;
use tollgate_test::upstream::Behavior;
use tollgate_test::{free_port, FakeUpstream, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
const KEY: &str = "sk-exactness-key-000000000000001";
/// Tokens per second the limit refills, and the most it admits at once.
const RATE: u64 = 2_000;
const BURST: u64 = 3_000;
const PROCESSES: usize = 4;
const PER_PROCESS: usize = 50;

struct Instance {
    child: Child,
    url: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(Command::new("bash")
            .arg(repo().join("scripts/venv"))
            .status()
            .unwrap()
            .success());
    }
    py
}

async fn instance(dir: &std::path::Path, name: &str, redis: &str, fake: &FakeUpstream) -> Instance {
    let port = free_port().unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[server]
http = "127.0.0.1:{port}"
grpc = "off"

[redis]
url = "{redis}"
fallback = false

[gateway]
max_wait = "120s"

[[rules]]
name = "tpm"
match = {{ tenant = "*" }}
limits = [{{ kind = "tokens", amount = {per_minute}, per = "minute", burst = {BURST} }}]

[[rules]]
name = "ledger"
match = {{ tenant = "*" }}
limits = [{{ kind = "tokens", amount = 1000000000, per = "day", algorithm = "fixed_window" }}]

[[upstreams]]
kind = "openai"
url = "{upstream}"
"#,
            per_minute = RATE * 60,
            upstream = fake.openai_url(),
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--no-watch", "--log-level", "warn", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "{name} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Instance { child, url }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_settles_exactly_and_admits_no_more_than_the_limit_plus_under_reservation() {
    let redis = RedisServer::start().unwrap();
    let fake = FakeUpstream::start().await.unwrap();
    fake.set_behavior(Behavior {
        delay: Duration::from_millis(3),
        max_chunks: 200,
        ..Behavior::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let a = instance(dir.path(), "a", &redis.url(), &fake).await;
    let b = instance(dir.path(), "b", &redis.url(), &fake).await;

    // Four client processes; each says when it is ready, and all start at once.
    let py = python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/exactness_client.py");
    let mut clients: Vec<Child> = (0..PROCESSES)
        .map(|i| {
            Command::new(&py)
                .arg(&script)
                .args([
                    &a.url,
                    &b.url,
                    &PER_PROCESS.to_string(),
                    &(7 + i).to_string(),
                    KEY,
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut readers: Vec<BufReader<std::process::ChildStdout>> = clients
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()))
        .collect();
    let readers = tokio::task::spawn_blocking(move || {
        for r in &mut readers {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready");
        }
        readers
    })
    .await
    .unwrap();
    for c in &mut clients {
        writeln!(c.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let outputs = tokio::task::spawn_blocking(move || {
        readers
            .into_iter()
            .map(|mut r| {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for c in &mut clients {
        assert!(c.wait().unwrap().success());
    }
    for o in &outputs {
        assert_eq!(o["ok"], PER_PROCESS, "{o}");
    }

    let seen = fake.seen();
    let total = PROCESSES * PER_PROCESS;
    assert_eq!(seen.len(), total);
    assert!(seen.iter().all(|s| s.completed && s.usage_reported));
    let reported: u64 = seen.iter().map(|s| s.input_tokens + s.output_tokens).sum();

    // Exact settlement: the ledger (both instances, one Redis) holds exactly the upstream's
    // reported usage, once every settlement has run.
    let tenant = Keys::new(&GatewayConfig::default()).hash(KEY);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ledger = 0;
    while Instant::now() < deadline {
        let u: Value = http
            .get(format!("{}/v1/usage?tenant={tenant}", a.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ledger = u["limits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rule"] == json!("ledger"))
            .and_then(|l| l["used"].as_u64())
            .unwrap();
        if ledger == reported {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ledger, reported,
        "settled in total vs reported by the upstream"
    );

    // Bounded admission.
    let mut under = 0u64;
    for s in &seen {
        let mut body = s.body.clone();
        // The upstream saw the usage request tollgate added; the estimate is the same.
        if let Some(o) = body.as_object_mut() {
            o.remove("stream_options");
        }
        let e = estimate(
            ProviderKind::OpenAi,
            Endpoint::ChatCompletions,
            &body,
            TokenizerChoice::Auto,
            &EstimateConfig::default(),
            None,
        )
        .unwrap();
        let actual = s.input_tokens + s.output_tokens;
        under += actual.saturating_sub(e.tokens());
    }
    let first = seen.iter().filter_map(|s| s.arrived).min().unwrap();
    let last = seen.iter().filter_map(|s| s.arrived).max().unwrap();
    let span = (last - first) + Duration::from_millis(500);
    let bound = BURST + (RATE as f64 * span.as_secs_f64()).ceil() as u64 + under;
    eprintln!(
        "exactness: {total} calls, {reported} tokens reported and settled, admitted over {:.2} s; bound {bound} = burst {BURST} + {RATE}/s x span + under-reserved {under}",
        span.as_secs_f64()
    );
    assert!(reported <= bound, "admitted {reported} > bound {bound}");
    // The limit was the constraint (the calls could not all have gone at once).
    assert!(reported > BURST * 2, "{reported}");
}
