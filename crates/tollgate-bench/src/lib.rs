//! Load generator for tollgate's Redis store.
//!
//! Drives decisions from many concurrent tokio tasks that share one [`tollgate::Limiter`] over a
//! [`RedisStore`], against one Redis server or a Redis Cluster, for a set time; then reports
//! decisions per second, allowed and denied counts, errors, latency percentiles, and (from
//! `INFO commandstats` and `INFO cpu` of the servers) how many Redis calls and how much Redis
//! CPU one decision took. `BENCHMARKS.md` records the figures (`docs/bench-redis.md` in full);
//! [`report`] writes that page's tables and charts from `docs/bench/results.toml`.
//!
//! Two ways to drive the load:
//!
//! - closed loop (the default): `--concurrency` tasks each issue a decision as soon as their
//!   previous one answered; latency is the time of each call.
//! - open loop (`--rate R`): a pacing task schedules decisions at `R` per second and
//!   `--concurrency` callers serve them in order. Latency is measured from each decision's
//!   *scheduled* start, so a stall counts for every decision it delayed (no coordinated
//!   omission); the service time (from the actual start) and the start lag are reported too.
//!   The pacer wakes at most every 50 µs and starts what fell due meanwhile together; it runs
//!   on the runtime's workers (a `timerfd` in tokio's reactor), not on a thread of its own.
//!
//! Rules: one rule per tenant, `--limits 1` a GCRA requests limit (checked with
//! [`Limiter::check`]); `--limits 3` requests, tokens and concurrency in that rule (reserved with
//! [`Limiter::reserve`], and the permit dropped at once, which sends a release to Redis).

use std::error::Error;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::{Cost, LimitKind, LimitSpec, Limiter, Policy, Reservation, Rule, Subject, Window};

pub mod report;
pub mod server_stats;

use server_stats::{ServerStats, StatsDelta};

/// A boxed error for the tool's failures (connection, policy, runtime).
pub type BoxError = Box<dyn Error + Send + Sync>;

/// How each decision picks its tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Pick {
    /// Uniformly at random (as `redis-benchmark -r`).
    Random,
    /// In turn, from a counter shared by all callers.
    RoundRobin,
}

/// The command line of `tollgate-bench`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "tollgate-bench",
    version,
    about = "Drive concurrent tollgate decisions against a Redis server or cluster and report throughput and latency"
)]
pub struct Args {
    /// Redis URL; repeat for the seed nodes of a cluster (with --cluster). Required: the tool
    /// never picks a server by itself.
    #[arg(long = "redis", value_name = "URL", required = true)]
    pub redis: Vec<String>,
    /// Connect to a Redis Cluster through the --redis seed nodes.
    #[arg(long)]
    pub cluster: bool,
    /// Concurrent callers (tokio tasks sharing one limiter).
    #[arg(long, short = 'c', default_value_t = 50)]
    pub concurrency: usize,
    /// Limiters, each over its own store and so its own connection (per node), that the
    /// callers are spread over in turn. 1 (the default) is how an application uses tollgate;
    /// more shows whether one multiplexed connection limits throughput.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub connections: u16,
    /// How long to measure, after the warm-up (e.g. `10s`, `1m`).
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long to run before measuring (loads the scripts, creates the keys).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Limits per decision: 1 (GCRA requests, `check`) or 3 (requests + tokens + concurrency
    /// in one rule, `reserve` and drop the permit).
    #[arg(long, default_value_t = 1, value_parser = parse_limits)]
    pub limits: u8,
    /// Distinct tenants (one rule partition, so one hash tag, each).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tenants: u64,
    /// How each decision picks its tenant.
    #[arg(long, value_enum, default_value_t = Pick::Random)]
    pub pick: Pick,
    /// Open loop: schedule this many decisions per second (latency from the scheduled start).
    /// Without it, closed loop: every caller goes again as soon as it has its answer.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// The key prefix (keys are `<prefix>:{<tenant>}:bench:<limit>`).
    #[arg(long, default_value = "tollgate-bench")]
    pub prefix: String,
    /// Requests per minute per tenant (GCRA). With the default burst, a tenant's bucket keeps
    /// state for the whole run (each call adds a second to it) and every call is admitted.
    #[arg(long, default_value_t = 60)]
    pub rpm: u64,
    /// Tokens per minute per tenant (--limits 3; GCRA).
    #[arg(long, default_value_t = 6_000)]
    pub tpm: u64,
    /// The burst of the requests and tokens limits: how much may be spent at once (lower it
    /// to see denials).
    #[arg(long, default_value_t = 1_000_000_000)]
    pub burst: u64,
    /// Tokens each decision reserves (--limits 3).
    #[arg(long, default_value_t = 100)]
    pub tokens: u64,
    /// Concurrent calls allowed per tenant (--limits 3).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_concurrent: u64,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Do not read INFO commandstats / INFO cpu from the servers.
    #[arg(long)]
    pub no_server_stats: bool,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_limits(s: &str) -> Result<u8, String> {
    match s {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!("--limits must be 1 or 3, not {s:?}")),
    }
}

/// Latency percentiles of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1_000.0;
        Latency {
            count: h.len(),
            mean_us: h.mean() / 1_000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "mean_us": round2(self.mean_us),
            "p50_us": round2(self.p50_us),
            "p99_us": round2(self.p99_us),
            "p999_us": round2(self.p999_us),
            "max_us": round2(self.max_us),
        })
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  max {:.0} µs  (mean {:.0} µs)",
            self.p50_us, self.p99_us, self.p999_us, self.max_us, self.mean_us
        )
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Summary {
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Limits per decision.
    pub limits: u8,
    /// Concurrent callers.
    pub concurrency: usize,
    /// The open-loop target, decisions per second.
    pub target_rate: Option<f64>,
    /// Tokio worker threads.
    pub threads: usize,
    /// Limiters (connections) the callers were spread over.
    pub connections: u16,
    /// Whether the store was a cluster.
    pub cluster: bool,
    /// Distinct tenants.
    pub tenants: u64,
    /// The measured time (from the end of the warm-up to the last answer).
    pub elapsed: Duration,
    /// Decisions answered in the measured time (allowed + denied + errors).
    pub decisions: u64,
    /// Decisions allowed.
    pub allowed: u64,
    /// Decisions denied.
    pub denied: u64,
    /// Decisions that failed.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Open loop: decisions still unanswered 30 s after the end of the schedule.
    pub missed: u64,
    /// Latency (open loop: from the scheduled start).
    pub latency: Latency,
    /// Open loop: from the actual start of each decision.
    pub service: Option<Latency>,
    /// Open loop: how late each decision started after its schedule.
    pub start_lag: Option<Latency>,
    /// CPU time of this process (user + system) during the measured time, in seconds.
    pub client_cpu_s: f64,
    /// CPU time the whole machine was busy (all processes, from `/proc/stat`) during the
    /// measured time, in seconds.
    pub machine_busy_s: f64,
    /// Server counters over the measured time, if read.
    pub server: Option<StatsDelta>,
}

impl Summary {
    /// Decisions per second.
    pub fn rate(&self) -> f64 {
        self.decisions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// `v` divided by the number of decisions.
    fn per_decision(&self, v: f64) -> f64 {
        v / self.decisions.max(1) as f64
    }

    /// The summary as a JSON object.
    pub fn json(&self) -> serde_json::Value {
        let server = self.server.as_ref().map(|s| {
            serde_json::json!({
                "nodes": s.nodes,
                "evalsha_calls": s.evalsha_calls,
                "evalsha_usec": s.evalsha_usec,
                "evalsha_usec_per_call": s.evalsha_usec_per_call().map(round2),
                "eval_calls": s.eval_calls,
                "script_calls_per_decision": round2(self.per_decision(s.script_calls as f64)),
                "script_usec_per_decision": round2(self.per_decision(s.script_usec as f64)),
                "script_usec_per_limit": round2(self.per_decision(s.script_usec as f64) / f64::from(self.limits)),
                "cpu_s": round2(s.cpu_s),
                "cpu_usec_per_decision": round2(self.per_decision(s.cpu_s * 1e6)),
                "cpu_usec_per_limit": round2(self.per_decision(s.cpu_s * 1e6) / f64::from(self.limits)),
                "reads_per_decision": round2(self.per_decision(s.io[0] as f64)),
                "writes_per_decision": round2(self.per_decision(s.io[1] as f64)),
                "bytes_in_per_decision": round2(self.per_decision(s.io[2] as f64)),
                "bytes_out_per_decision": round2(self.per_decision(s.io[3] as f64)),
                "commands": s.commands.iter().map(|(k, c, u)| serde_json::json!({"cmd": k, "calls": c, "usec": u})).collect::<Vec<_>>(),
            })
        });
        serde_json::json!({
            "mode": self.mode,
            "limits": self.limits,
            "concurrency": self.concurrency,
            "target_rate": self.target_rate,
            "threads": self.threads,
            "connections": self.connections,
            "cluster": self.cluster,
            "tenants": self.tenants,
            "elapsed_s": round2(self.elapsed.as_secs_f64()),
            "decisions": self.decisions,
            "decisions_per_s": self.rate().round(),
            "allowed": self.allowed,
            "denied": self.denied,
            "errors": self.errors,
            "first_error": self.first_error,
            "unfinished": self.missed,
            "latency": self.latency.json(),
            "service": self.service.map(|l| l.json()),
            "start_lag": self.start_lag.map(|l| l.json()),
            "client_cpu_s": round2(self.client_cpu_s),
            "client_cpu_usec_per_decision": round2(self.per_decision(self.client_cpu_s * 1e6)),
            "machine_busy_s": round2(self.machine_busy_s),
            "other_cpu_s": self.server.as_ref().map(|s| round2((self.machine_busy_s - self.client_cpu_s - s.cpu_s).max(0.0))),
            "server": server,
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = self
            .target_rate
            .map(|r| format!(", target {r:.0}/s"))
            .unwrap_or_default();
        writeln!(
            f,
            "tollgate-bench: {} loop, {} limit(s), {} callers{target}, {} tenants, {} thread(s), {} connection(s){}",
            self.mode,
            self.limits,
            self.concurrency,
            self.tenants,
            self.threads,
            self.connections,
            if self.cluster { ", cluster" } else { "" }
        )?;
        writeln!(
            f,
            "  decisions   {} in {:.2} s = {:.0}/s",
            self.decisions,
            self.elapsed.as_secs_f64(),
            self.rate()
        )?;
        writeln!(
            f,
            "  outcomes    allowed {}  denied {}  errors {}{}",
            self.allowed,
            self.denied,
            self.errors,
            if self.missed > 0 {
                format!("  unfinished {}", self.missed)
            } else {
                String::new()
            }
        )?;
        if let Some(e) = &self.first_error {
            writeln!(f, "  first error {e}")?;
        }
        writeln!(f, "  latency     {}", self.latency)?;
        if let Some(s) = &self.service {
            writeln!(f, "  service     {s}")?;
        }
        if let Some(s) = &self.start_lag {
            writeln!(f, "  start lag   {s}")?;
        }
        writeln!(
            f,
            "  client CPU  {:.2} s = {:.1} µs/decision",
            self.client_cpu_s,
            self.per_decision(self.client_cpu_s * 1e6)
        )?;
        if let Some(s) = &self.server {
            let limits = f64::from(self.limits);
            writeln!(
                f,
                "  redis       {} node(s): {:.2} script calls/decision (EVALSHA {:.2} µs/call); {:.2} µs in scripts/decision = {:.2} µs/limit",
                s.nodes,
                self.per_decision(s.script_calls as f64),
                s.evalsha_usec_per_call().unwrap_or(0.0),
                self.per_decision(s.script_usec as f64),
                self.per_decision(s.script_usec as f64) / limits,
            )?;
            writeln!(
                f,
                "  redis CPU   {:.2} s = {:.1} µs/decision = {:.1} µs/limit (user+sys, network I/O included)",
                s.cpu_s,
                self.per_decision(s.cpu_s * 1e6),
                self.per_decision(s.cpu_s * 1e6) / limits,
            )?;
            writeln!(
                f,
                "  redis I/O   {:.3} reads, {:.3} writes, {:.0} bytes in, {:.0} bytes out per decision",
                self.per_decision(s.io[0] as f64),
                self.per_decision(s.io[1] as f64),
                self.per_decision(s.io[2] as f64),
                self.per_decision(s.io[3] as f64),
            )?;
            let mut line = String::new();
            for (cmd, calls, usec) in &s.commands {
                let _ = write!(line, " {cmd}={calls}/{usec}µs");
            }
            writeln!(f, "  commands   {line}")?;
            writeln!(
                f,
                "  machine     {:.2} CPU-s busy, of which {:.2} s neither this process nor redis",
                self.machine_busy_s,
                (self.machine_busy_s - self.client_cpu_s - s.cpu_s).max(0.0)
            )?;
        } else {
            writeln!(f, "  machine     {:.2} CPU-s busy", self.machine_busy_s)?;
        }
        Ok(())
    }
}

/// Counters shared by the callers and the progress line.
#[derive(Default)]
struct Counters {
    done: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Everything a caller needs.
struct Ctx {
    limiters: Vec<Limiter<RedisStore>>,
    limits: u8,
    cost: Cost,
    tenants: Vec<String>,
    pick: Pick,
    turn: AtomicU64,
    /// Counts of measured decisions.
    measured: Counters,
    /// Counts of every decision, for the progress line.
    all: Counters,
    /// Set once the warm-up is over.
    measuring: AtomicBool,
}

/// A small xorshift generator per caller.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

impl Ctx {
    fn tenant(&self, rng: &mut Rng) -> &str {
        self.tenants
            .get(self.tenant_index(rng))
            .map_or("t0", String::as_str)
    }

    fn tenant_index(&self, rng: &mut Rng) -> usize {
        let n = self.tenants.len() as u64;
        let i = match self.pick {
            Pick::Random => rng.next() % n,
            Pick::RoundRobin => self.turn.fetch_add(1, Ordering::Relaxed) % n,
        };
        usize::try_from(i).unwrap_or(0)
    }

    /// One decision by limiter `which` (modulo their number): `Ok(true)` allowed, `Ok(false)`
    /// denied.
    async fn decide(&self, which: usize, tenant: &str) -> Result<bool, tollgate::Error> {
        let subject = Subject::new().tenant(tenant);
        let Some(limiter) = self.limiters.get(which % self.limiters.len().max(1)) else {
            return Err(tollgate::Error::from(tollgate::StoreError::Unavailable(
                "no limiter".into(),
            )));
        };
        if self.limits == 1 {
            return limiter
                .check(&subject, self.cost)
                .await
                .map(|d| d.is_allowed());
        }
        match limiter.reserve(&subject, self.cost).await? {
            // Dropping the permit releases its concurrency slot: a detached settle.lua call.
            Reservation::Granted(permit) => {
                drop(permit);
                Ok(true)
            }
            Reservation::Denied(_) => Ok(false),
        }
    }

    fn count(&self, measured: bool, result: &Result<bool, tollgate::Error>) {
        let sets: &[&Counters] = if measured {
            &[&self.all, &self.measured]
        } else {
            &[&self.all]
        };
        for c in sets {
            c.done.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(true) => c.allowed.fetch_add(1, Ordering::Relaxed),
                Ok(false) => c.denied.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    let mut first = c.first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if first.is_none() {
                        *first = Some(e.to_string());
                    }
                    c.errors.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }
}

/// A histogram of nanoseconds from 1 ns to 10 minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(ns);
}

/// CPU time (user + system) of this process so far, in seconds, from `/proc/self/stat`.
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The kernel's USER_HZ is 100 on every Linux architecture tollgate supports.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU-seconds the whole machine has been busy (all CPUs, all processes), from `/proc/stat`.
fn machine_busy_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    busy / 100.0
}

/// The policy of the run.
fn policy(args: &Args) -> Result<Policy, BoxError> {
    let mut rule = Rule::builder("bench")
        .per("tenant")
        .limit(LimitSpec::new(LimitKind::Requests, args.rpm, Window::MINUTE).burst(args.burst));
    if args.limits == 3 {
        rule = rule
            .limit(LimitSpec::new(LimitKind::Tokens, args.tpm, Window::MINUTE).burst(args.burst))
            .limit(LimitSpec::concurrency(args.max_concurrent));
    }
    Ok(Policy::builder().rule(rule).build()?)
}

/// Runs the benchmark described by `args` and prints its summary (text or JSON) on stdout.
///
/// # Errors
/// If the runtime cannot start, the policy is invalid, or the store cannot connect.
pub fn run(args: &Args) -> Result<Summary, BoxError> {
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let summary = rt.block_on(run_async(args, threads.max(1)))?;
    if args.json {
        println!("{}", summary.json());
    } else {
        print!("{summary}");
    }
    Ok(summary)
}

async fn run_async(args: &Args, threads: usize) -> Result<Summary, BoxError> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err("--rate must be a positive number of decisions per second".into());
        }
    }
    let config = RedisConfig {
        prefix: args.prefix.clone(),
        ..RedisConfig::default()
    };
    let policy = policy(args)?;
    let mut limiters = Vec::new();
    for _ in 0..args.connections {
        let store = if args.cluster {
            RedisStore::connect_cluster(&args.redis, config.clone()).await?
        } else {
            let [url] = args.redis.as_slice() else {
                return Err("give one --redis URL, or --cluster with seed nodes".into());
            };
            RedisStore::connect_with(url, config.clone()).await?
        };
        limiters.push(Limiter::with_store(policy.clone(), store));
    }
    let stats = if args.no_server_stats {
        None
    } else {
        match ServerStats::connect(&args.redis, args.cluster).await {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("tollgate-bench: not reading server stats: {e}");
                None
            }
        }
    };
    let cost = if args.limits == 3 {
        Cost::tokens(args.tokens)
    } else {
        Cost::ONE
    };
    let ctx = Arc::new(Ctx {
        limiters,
        limits: args.limits,
        cost,
        tenants: (0..args.tenants).map(|i| format!("t{i}")).collect(),
        pick: args.pick,
        turn: AtomicU64::new(0),
        measured: Counters::default(),
        all: Counters::default(),
        measuring: AtomicBool::new(false),
    });

    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let progress =
        (!args.quiet).then(|| tokio::spawn(progress(Arc::clone(&ctx), start, measure_from)));

    // Take the "before" snapshot when the warm-up ends.
    let before = {
        let ctx = Arc::clone(&ctx);
        let stats = stats.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            ctx.measuring.store(true, Ordering::Relaxed);
            let cpu = process_cpu_s();
            let busy = machine_busy_s();
            let snap = match &stats {
                Some(s) => s.snapshot().await.ok(),
                None => None,
            };
            (cpu, busy, snap)
        })
    };

    let (hists, missed) = match args.rate {
        None => (closed_loop(&ctx, args.concurrency, end).await, 0),
        // On a worker, not on the thread that blocks on the runtime: the decisions it spawns
        // then start on that worker's own queue.
        Some(rate) => {
            let (ctx, concurrency) = (Arc::clone(&ctx), args.concurrency);
            tokio::spawn(async move { open_loop(&ctx, concurrency, rate, measure_from, end).await })
                .await??
        }
    };
    let finished = Instant::now();
    let (cpu_before, busy_before, snap_before) = before.await?;
    let cpu_after = process_cpu_s();
    let busy_after = machine_busy_s();
    // Let the releases of dropped permits (detached tasks) reach the server before reading it.
    if args.limits == 3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let server = match (&stats, snap_before) {
        (Some(s), Some(b)) => s.snapshot().await.ok().map(|a| a.since(&b)),
        _ => None,
    };
    if let Some(p) = progress {
        p.abort();
    }

    let m = &ctx.measured;
    let first_error = m
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(Summary {
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        limits: args.limits,
        concurrency: args.concurrency,
        target_rate: args.rate,
        threads,
        connections: args.connections,
        cluster: args.cluster,
        tenants: args.tenants,
        elapsed: finished.saturating_duration_since(measure_from),
        decisions: m.done.load(Ordering::Relaxed),
        allowed: m.allowed.load(Ordering::Relaxed),
        denied: m.denied.load(Ordering::Relaxed),
        errors: m.errors.load(Ordering::Relaxed),
        first_error,
        missed,
        latency: Latency::of(&hists.total),
        service: args.rate.map(|_| Latency::of(&hists.service)),
        start_lag: args.rate.map(|_| Latency::of(&hists.lag)),
        client_cpu_s: (cpu_after - cpu_before).max(0.0),
        machine_busy_s: (busy_after - busy_before).max(0.0),
        server,
    })
}

/// Latency histograms.
struct Hists {
    /// Closed loop: each call. Open loop: from the scheduled start.
    total: Histogram<u64>,
    /// Open loop: from the actual start.
    service: Histogram<u64>,
    /// Open loop: actual start minus scheduled start.
    lag: Histogram<u64>,
}

impl Hists {
    fn new() -> Hists {
        Hists {
            total: histogram(),
            service: histogram(),
            lag: histogram(),
        }
    }

    fn add(&mut self, other: &Hists) {
        let _ = self.total.add(&other.total);
        let _ = self.service.add(&other.service);
        let _ = self.lag.add(&other.lag);
    }
}

async fn closed_loop(ctx: &Arc<Ctx>, concurrency: usize, end: Instant) -> Hists {
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let ctx = Arc::clone(ctx);
            tokio::spawn(async move {
                let mut hist = histogram();
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((i as u64 + 1) << 17));
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let measured = ctx.measuring.load(Ordering::Relaxed);
                    let tenant = ctx.tenant(&mut rng);
                    let result = ctx.decide(i, tenant).await;
                    if measured {
                        record(&mut hist, t0.elapsed());
                    }
                    ctx.count(measured, &result);
                }
                hist
            })
        })
        .collect();
    let mut all = Hists::new();
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = all.total.add(&h);
        }
    }
    all
}

/// The open loop's pacer wakes at most once per this long; decisions that fall due in between
/// start together at the next wake-up, and their latency still counts from their own slot.
/// Waking for every decision (every 17 µs at 57,000/s) cost more client CPU than the decisions
/// themselves, on cores that Redis shares.
const PACER_TICK: Duration = Duration::from_micros(50);

/// A sleep with microsecond precision inside the runtime: a `timerfd` watched by tokio's
/// reactor. (`tokio::time` counts in milliseconds; a pacing thread of its own would be one more
/// thread to schedule on cores that Redis shares, and every start it handed over woke a
/// worker.)
struct Pacer {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl Pacer {
    fn new() -> std::io::Result<Pacer> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // Deprecated because an `AsyncFd` of a type that does not own its descriptor could see
        // it closed while registered (tokio-rs/tokio#8587). It holds the `OwnedFd` itself
        // here, which is closed only when the `AsyncFd` has deregistered it on drop; the
        // `unsafe` replacement is forbidden in this workspace.
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
        Ok(Pacer { fd })
    }

    /// Sleeps for `d` (at least 1 ns).
    async fn sleep(&self, d: Duration) -> std::io::Result<()> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        let d = d.max(Duration::from_nanos(1));
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            },
        };
        timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut expirations).map_err(std::io::Error::from)
            }) {
                Ok(r) => return r.map(drop),
                // Not expired yet (a spurious readiness): wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

/// One scheduled decision of the open loop.
struct Slot {
    /// When it is due.
    at: Instant,
    /// Its number in the schedule.
    which: usize,
    /// The tenant's index.
    tenant: usize,
}

/// Open loop: a pacing task queues the scheduled decisions, and `concurrency` caller tasks take
/// them in schedule order, each as soon as its previous decision is answered (a queue served by
/// `concurrency` callers). The pacer runs on the runtime's own workers and sleeps on a
/// [`Pacer`], so the load tool adds no thread of its own, and no task is spawned per decision
/// (a spawn cost an allocation and a copy of the decision's future, about a tenth of the tool's
/// CPU at 85,000 decisions/s). The queue is a plain mutex-guarded deque with a semaphore that
/// counts its slots: queuing `n` slots wakes `n` waiting callers at once (a receiver handed from
/// caller to caller would wake them one after another, across the workers).
async fn open_loop(
    ctx: &Arc<Ctx>,
    concurrency: usize,
    rate: f64,
    measure_from: Instant,
    end: Instant,
) -> Result<(Hists, u64), BoxError> {
    // `None` tells one caller to stop; the pacer queues one per caller after the last slot.
    let queue: Arc<Mutex<std::collections::VecDeque<Option<Slot>>>> = Arc::default();
    let queued = Arc::new(tokio::sync::Semaphore::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (ctx, queue, queued, answered) = (
                Arc::clone(ctx),
                Arc::clone(&queue),
                Arc::clone(&queued),
                Arc::clone(&answered),
            );
            tokio::spawn(async move {
                let mut h = Hists::new();
                loop {
                    match queued.acquire().await {
                        Ok(p) => p.forget(),
                        Err(_) => break,
                    }
                    let slot = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some(Some(slot)) = slot else { break };
                    let started = Instant::now();
                    let tenant = ctx.tenants.get(slot.tenant).map_or("t0", String::as_str);
                    let result = ctx.decide(slot.which, tenant).await;
                    let done = Instant::now();
                    let measured = slot.at >= measure_from;
                    if measured {
                        record(&mut h.total, done.saturating_duration_since(slot.at));
                        record(&mut h.service, done.saturating_duration_since(started));
                        record(&mut h.lag, started.saturating_duration_since(slot.at));
                    }
                    ctx.count(measured, &result);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                h
            })
        })
        .collect();
    let pacer = Pacer::new()?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut i: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut due = 0usize;
        {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let at = start + interval.mul_f64(i as f64);
                if at > now || at >= end {
                    break;
                }
                q.push_back(Some(Slot {
                    at,
                    which: usize::try_from(i).unwrap_or(0),
                    tenant: ctx.tenant_index(&mut rng),
                }));
                due += 1;
                i += 1;
            }
        }
        queued.add_permits(due);
        // Sleep until the next slot, but at least PACER_TICK: the decisions that fall due
        // meanwhile start together (each timed from its own slot), so the pacer costs one
        // wake-up per tick instead of one per decision.
        let next = start + interval.mul_f64(i as f64);
        pacer
            .sleep(
                next.saturating_duration_since(Instant::now())
                    .max(PACER_TICK),
            )
            .await?;
    }
    // No more slots: the callers finish what is queued and stop. Give up on stragglers after
    // 30 s.
    queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend((0..concurrency).map(|_| None));
    queued.add_permits(concurrency);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut all = Hists::new();
    for c in callers {
        let abort = c.abort_handle();
        match tokio::time::timeout_at(give_up, c).await {
            Ok(Ok(h)) => all.add(&h),
            Ok(Err(_)) => {}
            Err(_) => abort.abort(),
        }
    }
    let missed = i.saturating_sub(answered.load(Ordering::Relaxed));
    Ok((all, missed))
}

/// Prints a progress line on stderr once a second.
async fn progress(ctx: Arc<Ctx>, start: Instant, measure_from: Instant) {
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let mut last = 0u64;
    loop {
        let now = tick.tick().await.into_std();
        let a = &ctx.all;
        let done = a.done.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0}s{}] {:>7}/s  total {:>9}  allowed {:>9}  denied {:>7}  errors {:>5}",
            now.saturating_duration_since(start).as_secs_f64(),
            if now <= measure_from { " warm-up" } else { "" },
            done - last,
            done,
            a.allowed.load(Ordering::Relaxed),
            a.denied.load(Ordering::Relaxed),
            a.errors.load(Ordering::Relaxed),
        );
        last = done;
    }
}
