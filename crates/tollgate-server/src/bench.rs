//! `tollgate bench`: a load generator against a running service, over HTTP or gRPC. It runs
//! for a bounded time (or number of decisions), prints a progress line every second, and
//! reports decisions per second and latency percentiles.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::args::ClientOpts;

/// The longest run allowed.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Which API to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `POST /v1/check`.
    Http,
    /// Envoy's `ShouldRateLimit`.
    Grpc,
}

/// `tollgate bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Service, token, and `--json` for a JSON report.
    #[command(flatten)]
    pub client: ClientOpts,
    /// The service's gRPC address (for `--protocol grpc`).
    #[arg(
        long,
        env = "TOLLGATE_GRPC_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8081"
    )]
    pub grpc_url: String,
    /// Which API to load.
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,
    /// How long to run (at most 1h).
    #[arg(long, short, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many decisions (whichever comes first).
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Requests in flight at once.
    #[arg(long, short, default_value_t = 32)]
    pub concurrency: usize,
    /// Distinct tenants the calls are spread over (`bench-0` … `bench-N`).
    #[arg(long, default_value_t = 1000)]
    pub tenants: u64,
    /// The provider attribute of every call.
    #[arg(long, default_value = "bench")]
    pub provider: String,
    /// Tokens per call.
    #[arg(long, default_value_t = 0)]
    pub tokens: u64,
    /// Open loop: send this many decisions per second in total, on a fixed schedule spread
    /// over the `--concurrency` connections, whatever the answers' latency. A call sent late
    /// because the previous answer on its connection was late is timed from when it was due,
    /// so a service that falls behind shows it (no coordinated omission). Without it the load is closed-loop: each connection sends as
    /// soon as the previous answer arrived.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Threads that send the load [default: one per CPU core].
    #[arg(long, env = "TOLLGATE_BENCH_WORKERS", hide_env_values = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// No progress line.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tollgate_core::parse_duration(s)
        .filter(|d| !d.is_zero() && *d <= MAX_DURATION)
        .ok_or_else(|| format!("{s:?} is not a duration between 1ms and 1h, like 10s"))
}

#[derive(Default)]
struct Counts {
    allowed: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
    issued: AtomicU64,
}

impl Counts {
    fn done(&self) -> u64 {
        self.allowed.load(Ordering::Relaxed)
            + self.denied.load(Ordering::Relaxed)
            + self.errors.load(Ordering::Relaxed)
    }
}

/// One HTTP/1.1 connection of a worker, kept alive across calls.
struct HttpConn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

/// Where and how to send `POST /v1/check`: the request parts prepared once.
#[derive(Clone)]
struct HttpTarget {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: axum::http::HeaderValue,
    /// `Bearer <token>`.
    auth: Option<axum::http::HeaderValue>,
    /// The request path, `/v1/check` under the base URL's path.
    path: axum::http::Uri,
    /// One body per tenant, rendered once.
    bodies: Arc<Vec<bytes::Bytes>>,
}

impl HttpTarget {
    fn new(a: &BenchArgs, tenants: u64) -> Result<Self, String> {
        let uri: axum::http::Uri = a
            .client
            .url
            .parse()
            .map_err(|_| format!("--url {:?} is not a URL", a.client.url))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "--url {:?}: bench speaks plain http:// (put it next to the service)",
                a.client.url
            ));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("--url {:?} has no host", a.client.url))?;
        let port = uri.port_u16().unwrap_or(80);
        let authority = uri.authority().map_or(host, |x| x.as_str()).to_owned();
        let path = format!("{}/v1/check", uri.path().trim_end_matches('/'));
        let auth = match &a.client.token {
            Some(t) => Some(
                axum::http::HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| "the token is not a valid header value".to_owned())?,
            ),
            None => None,
        };
        // Bodies for at most 100,000 tenants are kept; beyond that tenants repeat.
        let n = tenants.min(100_000);
        let bodies = (0..n)
            .map(|i| {
                let v = json!({
                    "subject": { "tenant": format!("bench-{i}"), "provider": a.provider },
                    "cost": { "tokens": a.tokens },
                });
                bytes::Bytes::from(v.to_string())
            })
            .collect();
        Ok(HttpTarget {
            addr: format!(
                "{}:{port}",
                host.trim_start_matches('[').trim_end_matches(']')
            ),
            host: axum::http::HeaderValue::from_str(&authority)
                .map_err(|_| format!("--url {:?}: bad host", a.client.url))?,
            auth,
            path: path
                .parse()
                .map_err(|_| format!("--url {:?}: bad path", a.client.url))?,
            bodies: Arc::new(bodies),
        })
    }

    async fn connect(&self) -> Result<HttpConn, String> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| format!("HTTP handshake with {}: {e}", self.addr))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConn { sender })
    }

    async fn call(&self, conn: &mut Option<HttpConn>, tenant: u64) -> Answer {
        use http_body_util::BodyExt;
        if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
            match self.connect().await {
                Ok(c) => *conn = Some(c),
                Err(e) => return Answer::Error(e),
            }
        }
        let Some(c) = conn.as_mut() else {
            return Answer::Error("not connected".into());
        };
        if let Err(e) = c.sender.ready().await {
            *conn = None;
            return Answer::Error(format!("connection: {e}"));
        }
        let i = usize::try_from(tenant).unwrap_or(0) % self.bodies.len().max(1);
        let body = self.bodies.get(i).cloned().unwrap_or_default();
        let mut req = axum::http::Request::new(http_body_util::Full::new(body));
        *req.method_mut() = axum::http::Method::POST;
        *req.uri_mut() = self.path.clone();
        let h = req.headers_mut();
        h.insert(axum::http::header::HOST, self.host.clone());
        h.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        if let Some(a) = &self.auth {
            h.insert(axum::http::header::AUTHORIZATION, a.clone());
        }
        match c.sender.send_request(req).await {
            Ok(r) => {
                let status = r.status().as_u16();
                // Read the body so the connection is reused.
                if let Err(e) = r.into_body().collect().await {
                    *conn = None;
                    return Answer::Error(format!("reading the answer: {e}"));
                }
                match status {
                    200 => Answer::Allowed,
                    429 => Answer::Denied,
                    s => Answer::Error(format!("HTTP {s}")),
                }
            }
            Err(e) => {
                *conn = None;
                Answer::Error(e.to_string())
            }
        }
    }
}

#[derive(Clone)]
enum Target {
    Http(HttpTarget),
    Grpc {
        client: RateLimitServiceClient<tonic::transport::Channel>,
        token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    },
}

enum Answer {
    Allowed,
    Denied,
    Error(String),
}

/// A worker's handle on the target: its own HTTP connection, or a clone of the multiplexed
/// gRPC channel.
struct Worker {
    target: Target,
    conn: Option<HttpConn>,
}

impl Worker {
    async fn call(&mut self, tenant: u64, provider: &str, tokens: u64) -> Answer {
        match &mut self.target {
            Target::Http(h) => h.call(&mut self.conn, tenant).await,
            Target::Grpc { client, token } => {
                let mut req = tonic::Request::new(RateLimitRequest {
                    domain: "bench".into(),
                    descriptors: vec![RateLimitDescriptor {
                        entries: vec![
                            Entry {
                                key: "tenant".into(),
                                value: format!("bench-{tenant}"),
                            },
                            Entry {
                                key: "provider".into(),
                                value: provider.into(),
                            },
                        ],
                        ..RateLimitDescriptor::default()
                    }],
                    hits_addend: u32::try_from(tokens).unwrap_or(u32::MAX),
                });
                if let Some(t) = token {
                    req.metadata_mut().insert("authorization", t.clone());
                }
                match client.should_rate_limit(req).await {
                    Ok(r) if r.get_ref().overall_code == Code::OverLimit as i32 => Answer::Denied,
                    Ok(_) => Answer::Allowed,
                    Err(s) => Answer::Error(format!("gRPC {:?}: {}", s.code(), s.message())),
                }
            }
        }
    }
}

async fn target(a: &BenchArgs) -> Result<Target, String> {
    match a.protocol {
        Protocol::Http => {
            let t = HttpTarget::new(a, a.tenants.max(1))?;
            // Fail early when nothing listens.
            t.connect().await?;
            Ok(Target::Http(t))
        }
        Protocol::Grpc => {
            let client = RateLimitServiceClient::connect(a.grpc_url.clone())
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", a.grpc_url))?;
            let token = match &a.client.token {
                Some(t) => Some(
                    format!("Bearer {t}")
                        .parse()
                        .map_err(|_| "the token is not valid metadata".to_owned())?,
                ),
                None => None,
            };
            Ok(Target::Grpc { client, token })
        }
    }
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    // 1 µs to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Decisions answered (allowed + denied).
    pub decisions: u64,
    /// Allowed.
    pub allowed: u64,
    /// Denied.
    pub denied: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Latency histogram in microseconds.
    pub latency_us: Histogram<u64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

impl Report {
    /// Decisions per second.
    pub fn rate(&self) -> f64 {
        self.decisions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn json(&self, a: &BenchArgs) -> serde_json::Value {
        let q = |p: f64| self.latency_us.value_at_quantile(p);
        json!({
            "protocol": format!("{:?}", a.protocol).to_lowercase(),
            "concurrency": a.concurrency,
            "rate": a.rate,
            "tenants": a.tenants,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "decisions": self.decisions,
            "decisions_per_s": self.rate(),
            "allowed": self.allowed,
            "denied": self.denied,
            "errors": self.errors,
            "latency_us": {
                "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
                "max": self.latency_us.max(), "mean": self.latency_us.mean(),
            },
        })
    }
}

fn fmt_us(us: u64) -> String {
    if us >= 1000 {
        format!("{:.2}ms", us as f64 / 1000.0)
    } else {
        format!("{us}µs")
    }
}

/// Runs the load and returns the report.
///
/// # Errors
/// If the target cannot be reached at all.
pub async fn measure(a: &BenchArgs) -> Result<Report, String> {
    let tgt = target(a).await?;
    let template = new_histogram()?;
    let counts = Arc::new(Counts::default());
    let first_error = Arc::new(parking_lot::Mutex::new(None::<String>));
    let started = Instant::now();
    let deadline = started + a.duration;
    let limit = a.requests.unwrap_or(u64::MAX);
    let tenants = a.tenants.max(1);
    let concurrency = a.concurrency.max(1);
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(format!(
                "--rate {r}: give a positive number of decisions per second"
            ));
        }
    }
    // Open loop: each worker sends every `interval`, the workers staggered evenly.
    let interval = a
        .rate
        .map(|r| Duration::from_secs_f64(concurrency as f64 / r));
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let counts = Arc::clone(&counts);
        let first_error = Arc::clone(&first_error);
        let provider = a.provider.clone();
        let tokens = a.tokens;
        let mut hist = template.clone();
        // Each worker has its own HTTP connection; gRPC channels multiplex.
        let mut worker = Worker {
            target: tgt.clone(),
            conn: None,
        };
        let stagger = interval.map(|i| i.mul_f64(w as f64 / concurrency as f64));
        workers.push(tokio::spawn(async move {
            let mut i = w as u64;
            let mut due = started + stagger.unwrap_or_default();
            loop {
                // Open loop: when the previous answer came in time, wait for the schedule and
                // time from the send (the timer's own lateness, up to a millisecond, is the
                // client's, not the service's); when it came late, send at once and time from
                // when the call was due, so the service's slowness is counted in full.
                let mut behind = None;
                if interval.is_some() {
                    if Instant::now() < due {
                        tokio::time::sleep_until(due.into()).await;
                    } else {
                        behind = Some(due);
                    }
                }
                if Instant::now() >= deadline
                    || counts.issued.fetch_add(1, Ordering::Relaxed) >= limit
                {
                    break;
                }
                let tenant = i % tenants;
                i = i.wrapping_add(7919);
                let t0 = behind.unwrap_or_else(Instant::now);
                let answer = worker.call(tenant, &provider, tokens).await;
                let us = u64::try_from(t0.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                if let Some(every) = interval {
                    due += every;
                }
                match answer {
                    Answer::Allowed => {
                        counts.allowed.fetch_add(1, Ordering::Relaxed);
                        let _ = hist.record(us);
                    }
                    Answer::Denied => {
                        counts.denied.fetch_add(1, Ordering::Relaxed);
                        let _ = hist.record(us);
                    }
                    Answer::Error(e) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().get_or_insert(e);
                        // Do not spin on a dead service.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            hist
        }));
    }
    let progress = if a.quiet {
        None
    } else {
        let counts = Arc::clone(&counts);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0u64;
            loop {
                tick.tick().await;
                let done = counts.done();
                eprint!(
                    "\r[{:>4.0}s] {done} decisions, {}/s, allowed {}, denied {}, errors {}   ",
                    started.elapsed().as_secs_f64(),
                    done.saturating_sub(last),
                    counts.allowed.load(Ordering::Relaxed),
                    counts.denied.load(Ordering::Relaxed),
                    counts.errors.load(Ordering::Relaxed),
                );
                let _ = std::io::stderr().flush();
                last = done;
            }
        }))
    };
    let mut latency = template;
    for w in workers {
        if let Ok(h) = w.await {
            let _ = latency.add(&h);
        }
    }
    let elapsed = started.elapsed();
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let allowed = counts.allowed.load(Ordering::Relaxed);
    let denied = counts.denied.load(Ordering::Relaxed);
    let first_error = first_error.lock().take();
    Ok(Report {
        decisions: allowed + denied,
        allowed,
        denied,
        errors: counts.errors.load(Ordering::Relaxed),
        elapsed,
        latency_us: latency,
        first_error,
    })
}

/// `tollgate bench`.
pub async fn run(a: BenchArgs) -> ExitCode {
    let report = match measure(&a).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tollgate bench: {e}");
            return ExitCode::from(crate::client::FAILED);
        }
    };
    if a.client.json {
        println!("{}", report.json(&a));
    } else {
        let target = match a.protocol {
            Protocol::Http => format!("{}/v1/check", a.client.url.trim_end_matches('/')),
            Protocol::Grpc => format!("{} ShouldRateLimit", a.grpc_url),
        };
        let h = &report.latency_us;
        let mode = a.rate.map_or_else(
            || format!("{} in flight", a.concurrency),
            |r| {
                format!(
                    "open loop at {r:.0}/s over {} connections (late calls timed from when they were due)",
                    a.concurrency
                )
            },
        );
        println!(
            "{target}: {mode}, {} tenants, {:.1}s",
            a.tenants,
            report.elapsed.as_secs_f64()
        );
        println!(
            "decisions: {} ({:.0}/s): allowed {}, denied {}; errors {}",
            report.decisions,
            report.rate(),
            report.allowed,
            report.denied,
            report.errors
        );
        println!(
            "latency: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            fmt_us(h.value_at_quantile(0.5)),
            fmt_us(h.value_at_quantile(0.9)),
            fmt_us(h.value_at_quantile(0.99)),
            fmt_us(h.value_at_quantile(0.999)),
            fmt_us(h.max()),
        );
    }
    if let Some(e) = &report.first_error {
        eprintln!("first error: {e}");
    }
    if report.decisions == 0 {
        ExitCode::from(crate::client::FAILED)
    } else {
        ExitCode::SUCCESS
    }
}
