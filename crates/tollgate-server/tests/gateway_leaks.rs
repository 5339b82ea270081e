//! No leaks when clients leave: 10,000 streamed completions whose clients disconnect at
//! random points (before the answer's headers, right after them, or after a random number of
//! events). Afterwards no concurrency slot is held, every call admitted was settled once (as a
//! client that left), no stream is open, and the upstream saw every call that reached it
//! cancelled. (A client that leaves before the gateway has admitted its call costs nothing
//! and never reaches the upstream: it has nothing to settle.)
//!
//! The clients are raw sockets (a request written by hand, a random number of bytes read,
//! then the socket closed), 500 at a time (the tenant's concurrency limit), against the service
//! on its own port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_gateway::config::GatewayConfig;
use tollgate_gateway::keys::Keys;
use tollgate_server::config::Config;
use tollgate_server::server::{self, Options};
use tollgate_test::FakeUpstream;

const STREAMS: usize = 10_000;
const AT_ONCE: usize = 500;
const KEY: &str = "sk-leak-test-key-0000000000000001";

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One client: sends a streamed chat completion and leaves at `leave`: `Err(ms)` before the
/// response headers (which come after 100 ms), `Ok(n)` after `n` events of the body.
async fn client(addr: std::net::SocketAddr, leave: Result<usize, u64>, slow_first_byte: bool) {
    let body = r#"{"model":"gpt-4o","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"stream until I leave"}]}"#;
    let first_byte = if slow_first_byte {
        "x-fake-first-byte-ms: 100\r\n"
    } else {
        ""
    };
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\nx-fake-chunks: 100000\r\nx-fake-delay-ms: 1\r\n{first_byte}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let events = match leave {
        Ok(n) => n,
        Err(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return; // dropped: the socket closes before any answer
        }
    };
    // What arrived, scanned once: the head's end, then each event's blank line.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let (mut head_end, mut scanned, mut seen) = (None, 0usize, 0usize);
    loop {
        if head_end.is_none() {
            head_end = got.windows(4).position(|w| w == b"\r\n\r\n").map(|h| h + 4);
            scanned = head_end.unwrap_or(0);
        }
        if head_end.is_some() {
            let upto = got.len().saturating_sub(1).max(scanned);
            seen += got[scanned..].windows(2).filter(|w| *w == b"\n\n").count();
            scanned = upto;
            if seen >= events {
                break;
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => panic!("the stream ended before the client left"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got[..got.len().min(300)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clients_leaving_mid_stream_leak_nothing() {
    let fake = FakeUpstream::start().await.unwrap();
    let toml = format!(
        r#"
[gateway]
max_wait = "60s"

[[rules]]
name = "per-tenant"
match = {{ tenant = "*" }}
limits = [
  {{ kind = "concurrency", amount = {AT_ONCE} }},
  {{ kind = "tokens", amount = 1000000000, per = "minute" }},
]

[[upstreams]]
kind = "openai"
url = "{}"
"#,
        fake.openai_url()
    );
    let mut config = Config::from_toml(&toml, "leaks.toml").unwrap();
    config.server.http = "127.0.0.1:0".parse().unwrap();
    config.server.grpc = None;
    let s = server::start(Options {
        config,
        clock: Some(Arc::new(tollgate::SystemClock::new())),
        ..Options::default()
    })
    .await
    .unwrap();
    let addr = s.http;
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let plan: Vec<(Result<usize, u64>, bool)> = (0..STREAMS)
        .map(|_| match rng.random_range(0..20u32) {
            0 => (Err(rng.random_range(0..100u64)), true),
            1 => (Ok(0), false),
            _ => (Ok(rng.random_range(1..20usize)), false),
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    let mut plan = plan.into_iter();
    for (leave, slow) in plan.by_ref().take(AT_ONCE) {
        tasks.spawn(client(addr, leave, slow));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
        if let Some((leave, slow)) = plan.next() {
            tasks.spawn(client(addr, leave, slow));
        }
    }

    // Every call admitted settles (as a client that left), and every call that reached the
    // upstream ends there as cancelled.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (metrics, admitted) = loop {
        let m = http
            .get(format!("{}/metrics", s.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let admitted = metric(&m, "tollgate_gateway_admitted_total", "");
        let settled = metric(
            &m,
            "tollgate_gateway_settlements_total",
            "path=\"client_gone\"",
        );
        let arrived = fake.arrived();
        let finished = fake.seen().len();
        if settled == admitted
            && finished == arrived
            && metric(&m, "tollgate_gateway_open_streams", "") == 0.0
        {
            break (m, admitted as usize);
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s: {admitted} admitted, {settled} settled; the upstream finished {finished} of {arrived}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    assert_eq!(
        metric(&metrics, "tollgate_gateway_settlements_total", "path="),
        admitted as f64,
        "settled once each, all as clients gone"
    );
    // Nearly all calls were admitted (only clients that left at once may not have been).
    assert!(admitted >= STREAMS * 9 / 10, "{admitted}");
    let seen = fake.seen();
    assert!(
        seen.len() <= admitted && seen.len() >= STREAMS * 9 / 10,
        "{}",
        seen.len()
    );
    let cancelled = seen.iter().filter(|x| x.cancelled && !x.completed).count();
    assert_eq!(
        cancelled,
        seen.len(),
        "the upstream saw every call cancelled"
    );
    let tenant = Keys::new(&GatewayConfig::default()).hash(KEY);
    let u: Value = http
        .get(format!("{}/v1/usage?tenant={tenant}", s.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slots = u["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "concurrency")
        .and_then(|l| l["used"].as_u64())
        .unwrap();
    assert_eq!(slots, 0, "concurrency slots still held: {u}");
    eprintln!(
        "leaks: {STREAMS} streams left at random points in {:.1} s: {admitted} admitted and settled, {} reached the upstream and were cancelled there; 0 slots held",
        elapsed.as_secs_f64(),
        seen.len()
    );
    s.shutdown().await;
}
