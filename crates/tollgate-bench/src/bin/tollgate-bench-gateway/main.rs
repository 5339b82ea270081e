//! `tollgate-bench-gateway`: the load generator of the gateway's benchmarks
//! (`crates/tollgate-bench/scripts/gateway.sh`, `BENCHMARKS.md`, "The gateway").
//!
//! - `load`: HTTP/1.1 keep-alive connections sending one request each at a time, closed loop
//!   (each sends as soon as its previous answer is read: the maximum throughput) or open loop
//!   (`--rate`: the calls are scheduled at a fixed rate across the connections, and latency is
//!   counted from when a call was due, so that a stalled server is not hidden by the client
//!   waiting for it). Prints one JSON object: throughput, latency and time to the first byte
//!   of the body (p50, p90, p99, p99.9, max).
//! - `hold`: opens `--streams` streamed calls at once and keeps them open, then reads the
//!   resident memory of the process `--pid` (the gateway) before and after: the memory one
//!   open stream costs.
//!
//! The same binary, the same requests and the same connections measure the upstream called
//! directly, tollgate in front of it and LiteLLM's proxy in front of it, so the ratios compare
//! the servers alone.

mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// The gateway benchmarks' load generator.
#[derive(Parser)]
struct Cli {
    /// Tokio worker threads of the client.
    #[arg(long, default_value_t = 1, global = true)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

/// Where and what to send.
#[derive(clap::Args, Clone)]
struct Target {
    /// The endpoint, `http://HOST:PORT/PATH`.
    #[arg(long)]
    url: String,
    /// An extra request header, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The JSON body (default: a short chat completion, streamed with `--stream`).
    #[arg(long)]
    body: Option<String>,
    /// Ask for a streamed answer (with the default body).
    #[arg(long)]
    stream: bool,
    /// The model named in the default body.
    #[arg(long, default_value = "gpt-4o")]
    model: String,
}

#[derive(Subcommand)]
enum Command {
    /// Closed- or open-loop load; prints throughput and latency.
    Load {
        #[command(flatten)]
        target: Target,
        /// Connections (each with one call in flight at a time).
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Calls per second across all connections (open loop); none: closed loop.
        #[arg(long)]
        rate: Option<f64>,
        /// How long to measure.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Load before measuring (not counted).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        warmup: Duration,
    },
    /// Opens streams and keeps them open; prints the memory they cost the process `--pid`.
    Hold {
        #[command(flatten)]
        target: Target,
        /// Streams to hold open at once.
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        /// The process whose resident memory is measured (the gateway).
        #[arg(long)]
        pid: u32,
        /// Streams being opened at a time.
        #[arg(long, default_value_t = 256)]
        opening: usize,
        /// How long to hold them once all are open, before measuring.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        hold: Duration,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("no runtime: {e}")));
    let out = rt.block_on(async {
        match cli.command {
            Command::Load {
                target,
                connections,
                rate,
                duration,
                warmup,
            } => load(&target, connections, rate, duration, warmup).await,
            Command::Hold {
                target,
                streams,
                pid,
                opening,
                hold: keep,
            } => hold(&target, streams, pid, opening, keep).await,
        }
    });
    match out {
        Ok(v) => println!("{v}"),
        Err(e) => fail(&e),
    }
}

fn fail(e: &str) -> ! {
    eprintln!("tollgate-bench-gateway: {e}");
    std::process::exit(1)
}

/// The address, host header value and path of `url`, and the whole request.
fn prepare(t: &Target) -> Result<(SocketAddr, Vec<u8>), String> {
    let rest = t
        .url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {}: only http:// is supported", t.url))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .map_err(|e| format!("--url {}: {e}", t.url))?
        .next()
        .ok_or_else(|| format!("--url {}: no address", t.url))?;
    let body = t.body.clone().unwrap_or_else(|| {
        json!({"model": t.model, "max_tokens": 16, "stream": t.stream,
               "messages": [{"role": "user", "content": "Say a few words about rate limits."}]})
        .to_string()
    });
    let path = if path.is_empty() { "/" } else { path };
    Ok((addr, wire::post(host, path, &t.headers, &body)))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap_or_else(|e| fail(&e.to_string()))
}

fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999), "max": h.max(),
    })
}

/// Counts shared by the connections.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    non_2xx: AtomicU64,
    errors: AtomicU64,
}

async fn load(
    t: &Target,
    connections: usize,
    rate: Option<f64>,
    duration: Duration,
    warmup: Duration,
) -> Result<Value, String> {
    let (addr, request) = prepare(t)?;
    let request = Arc::new(request);
    let counts = Arc::new(Counts::default());
    let t0 = Instant::now() + Duration::from_millis(100);
    let measure_from = t0 + warmup;
    let end = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..connections {
        let (request, counts) = (Arc::clone(&request), Arc::clone(&counts));
        tasks.spawn(async move {
            let (mut latency, mut first_byte) = (histogram(), histogram());
            let mut conn: Option<wire::Conn> = None;
            let mut k = 0u64;
            loop {
                // Open loop: call k of this connection is due at t0 + (i + k·C) / rate.
                let due = match rate {
                    Some(r) => {
                        let at = t0
                            + Duration::from_secs_f64(
                                (i as f64 + (k * connections as u64) as f64) / r,
                            );
                        k += 1;
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now().max(t0),
                };
                if due >= end {
                    break;
                }
                if rate.is_none() && due == t0 {
                    tokio::time::sleep_until(t0.into()).await;
                }
                if conn.is_none() {
                    match wire::Conn::open(addr).await {
                        Ok(c) => conn = Some(c),
                        Err(_) => {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let sent = if rate.is_some() { due } else { Instant::now() };
                match c.call(&request).await {
                    Ok(a) => {
                        let done = Instant::now();
                        if sent >= measure_from && done <= end + Duration::from_secs(5) {
                            let ok = (200..300).contains(&a.status);
                            let which = if ok { &counts.ok } else { &counts.non_2xx };
                            which.fetch_add(1, Ordering::Relaxed);
                            let us = |d: Duration| (d.as_micros() as u64).max(1);
                            let _ = latency.record(us(done - sent));
                            let _ =
                                first_byte.record(us(a.first_byte.saturating_duration_since(sent)));
                        }
                        if a.close {
                            conn = None;
                        }
                    }
                    Err(_) => {
                        if sent >= measure_from {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        conn = None;
                    }
                }
            }
            (latency, first_byte)
        });
    }
    let (mut latency, mut first_byte) = (histogram(), histogram());
    while let Some(done) = tasks.join_next().await {
        let (l, f) = done.map_err(|e| e.to_string())?;
        latency.add(l).map_err(|e| e.to_string())?;
        first_byte.add(f).map_err(|e| e.to_string())?;
    }
    let ok = counts.ok.load(Ordering::Relaxed);
    Ok(json!({
        "mode": if rate.is_some() { "open" } else { "closed" },
        "url": t.url, "connections": connections, "rate": rate,
        "duration_s": duration.as_secs_f64(),
        "ok": ok, "non_2xx": counts.non_2xx.load(Ordering::Relaxed),
        "errors": counts.errors.load(Ordering::Relaxed),
        "rps": ok as f64 / duration.as_secs_f64(),
        "latency_us": summary(&latency), "first_byte_us": summary(&first_byte),
    }))
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status: no VmRSS"))
}

async fn hold(
    t: &Target,
    streams: usize,
    pid: u32,
    opening: usize,
    keep: Duration,
) -> Result<Value, String> {
    let (addr, request) = prepare(t)?;
    let request = Arc::new(request);
    let before = rss_kib(pid)?;
    let gate = Arc::new(tokio::sync::Semaphore::new(opening.max(1)));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel::<Result<u16, String>>();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (request, gate, opened) = (Arc::clone(&request), Arc::clone(&gate), opened_tx.clone());
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let mut c = match wire::Conn::open(addr).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = opened.send(Err(e.to_string()));
                    return;
                }
            };
            match c.start(&request).await {
                Ok((status, _)) => {
                    let _ = opened.send(Ok(status));
                }
                Err(e) => {
                    let _ = opened.send(Err(e.to_string()));
                    return;
                }
            }
            drop(permit);
            // Keep reading what the stream sends until the task is dropped.
            let _ = c.drain().await;
        });
    }
    drop(opened_tx);
    let (mut ok, mut refused, mut errors, mut first_error) = (0usize, 0usize, 0usize, None);
    for _ in 0..streams {
        match opened_rx.recv().await {
            Some(Ok(200)) => ok += 1,
            Some(Ok(_)) => refused += 1,
            Some(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
            None => break,
        }
    }
    let open_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(keep).await;
    let during = rss_kib(pid)?;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_close = rss_kib(pid)?;
    let grown = during.saturating_sub(before) as f64 * 1024.0;
    Ok(json!({
        "streams": streams, "open": ok, "refused": refused, "errors": errors,
        "first_error": first_error, "opened_in_s": open_s,
        "rss_before_kib": before, "rss_open_kib": during, "rss_after_close_kib": after_close,
        "bytes_per_stream": if ok > 0 { grown / ok as f64 } else { 0.0 },
    }))
}
