//! The shape of `docs/bench/results.toml`: every figure the report shows, as measured.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A measured figure: the median over the runs or processes of one measurement, and their
/// range where it was recorded.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// The median.
    pub median: f64,
    /// The smallest run.
    pub low: Option<f64>,
    /// The largest run.
    pub high: Option<f64>,
}

/// A range without a median (a figure reported as "from … to …").
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// The smallest run.
    pub low: f64,
    /// The largest run.
    pub high: f64,
}

/// Every figure of the report.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Results {
    /// The machines, by the name the sections use.
    pub machines: BTreeMap<String, Machine>,
    /// In process, against governor.
    pub governor: Governor,
    /// Memory per bucket.
    pub memory: Memory,
    /// The Redis store against the EVALSHA ceiling.
    pub redis: Redis,
    /// The service against a bare HTTP server.
    pub service: Service,
}

/// A machine the figures were measured on.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// The CPU, as `lscpu` names it.
    pub name: String,
    /// The rest: cores, caches, memory, software.
    pub description: String,
}

/// The in-process comparison with governor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Governor {
    /// The machine's key in `machines`.
    pub machine: String,
    /// When.
    pub date: String,
    /// The commit of the code measured.
    pub code: String,
    /// Processes of the paired benchmark per case.
    pub paired_processes: u32,
    /// Criterion runs per case.
    pub criterion_runs: u32,
    /// The ratios of time per check.
    pub cases: Vec<GovernorCase>,
    /// Two threads against one.
    pub scaling: Scaling,
    /// The answers with every limit's status.
    pub full: Vec<FullCase>,
    /// Instructions per decision.
    pub instructions: Instructions,
}

/// tollgate's admission time divided by governor's check time, for one case.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernorCase {
    /// Limits in the decision (governor always checks one).
    pub limits: u32,
    /// Distinct keys visited: `1`, `10k`, `1M`.
    pub keys: String,
    /// `admitted` or `denied`.
    pub mode: String,
    /// The highest ratio the goal allows.
    pub goal: Option<f64>,
    /// From the paired benchmark.
    pub paired: Span,
    /// From criterion.
    pub criterion: Option<Span>,
    /// Criterion's median time per check of tollgate, ns.
    pub tollgate_ns: Option<f64>,
    /// Criterion's median time per check of governor, ns.
    pub governor_ns: Option<f64>,
}

/// Two threads' throughput divided by one thread's, at 1M keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    /// The lowest ratio the goal allows.
    pub goal: f64,
    /// Processes of the paired benchmark.
    pub paired_processes: u32,
    /// Admitted and denied.
    pub modes: Vec<ScalingMode>,
}

/// The scaling figures of one mode.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingMode {
    /// `admitted` or `denied`.
    pub mode: String,
    /// tollgate, paired benchmark.
    pub tollgate_paired: Span,
    /// governor, paired benchmark.
    pub governor_paired: Span,
    /// tollgate, criterion.
    pub tollgate_criterion: Span,
    /// governor, criterion.
    pub governor_criterion: Span,
}

/// The full-`Decision` answers at one key count: time ÷ governor's, admitted and denied.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullCase {
    /// Distinct keys visited.
    pub keys: String,
    /// `check_now` by subject.
    pub check_now: [f64; 2],
    /// `check_prepared_now`.
    pub check_prepared_now: [f64; 2],
}

/// Instructions per decision, admitted and denied.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instructions {
    /// The commit counted.
    pub code: String,
    /// One limit, `admit_prepared_now`.
    pub one_limit: [u32; 2],
    /// Three limits at one key, `admit_prepared_now`.
    pub three_limits_one_key: [u32; 2],
}

/// Memory per bucket.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// The machine's key in `machines`.
    pub machine: String,
    /// The commit measured.
    pub code: String,
    /// Resident bytes per GCRA bucket.
    pub bytes_per_bucket: f64,
    /// The most the goal allows.
    pub goal: f64,
    /// The size of a prepared subject of one limit.
    pub prepared_subject_bytes: u32,
}

/// The Redis store.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// The machine's key in `machines`.
    pub machine: String,
    /// Redis, the compiler, the build.
    pub software: String,
    /// When.
    pub date: String,
    /// The commit measured.
    pub code: String,
    /// Interleaved repetitions of every case.
    pub repetitions: u32,
    /// Concurrent callers.
    pub callers: u32,
    /// Closed loop, with the ceilings.
    pub cases: Vec<RedisCase>,
    /// Open loop at fixed rates.
    pub open_loop: Vec<OpenLoop>,
    /// A six-node cluster.
    pub cluster: Cluster,
    /// Side by side with rate-limiter-flexible on the same server.
    pub rlf: Rlf,
}

/// tollgate against rate-limiter-flexible (`RateLimiterRedis` over ioredis), one private
/// redis-server, interleaved rounds (`crates/tollgate-bench/scripts/vs-rlf.sh`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlf {
    /// The machine's key in `machines`.
    pub machine: String,
    /// Redis, Node and the packages, the compiler.
    pub software: String,
    /// When.
    pub date: String,
    /// The commit measured.
    pub code: String,
    /// Interleaved rounds (one run of each side per caller count in each).
    pub rounds: u32,
    /// Seconds measured per run.
    pub duration_s: u32,
    /// tollgate-bench's tokio workers.
    pub tollgate_threads: u32,
    /// The machine's one-minute load average before the runs.
    pub load_average: Bounds,
    /// One row per caller count.
    pub cases: Vec<RlfCase>,
}

/// One caller count of the rate-limiter-flexible comparison: medians over the rounds and
/// their range.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlfCase {
    /// Concurrent callers on each side.
    pub callers: u32,
    /// tollgate, decisions per second.
    pub tollgate_rate: Span,
    /// rate-limiter-flexible, decisions per second.
    pub rlf_rate: Span,
    /// tollgate's rate divided by rate-limiter-flexible's in the same round.
    pub ratio: Span,
    /// Redis CPU per decision, tollgate, µs.
    pub tollgate_cpu_us: Span,
    /// Redis CPU per decision, rate-limiter-flexible, µs.
    pub rlf_cpu_us: Span,
    /// The load tool's CPU per decision, tollgate-bench, µs.
    pub tollgate_client_cpu_us: Span,
    /// The load tool's CPU per decision, Node, µs.
    pub rlf_client_cpu_us: Span,
    /// `EVALSHA` µs per call in Redis, tollgate.
    pub tollgate_evalsha_us: Span,
    /// `EVALSHA` µs per call in Redis, rate-limiter-flexible.
    pub rlf_evalsha_us: Span,
    /// Read events in Redis per decision (`INFO stats`), tollgate: below 1 when one read
    /// brings several calls.
    pub tollgate_reads: Span,
    /// Read events in Redis per decision, rate-limiter-flexible.
    pub rlf_reads: Span,
    /// p99 latency, tollgate, ms.
    pub tollgate_p99_ms: Span,
    /// p99 latency, rate-limiter-flexible, ms.
    pub rlf_p99_ms: Span,
}

/// One closed-loop case.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisCase {
    /// A stable name.
    pub id: String,
    /// What the row shows.
    pub label: String,
    /// Decisions (or script calls) per second.
    pub rate: u64,
    /// Percent of the `-P 1` ceiling.
    pub of_p1: Option<Span>,
    /// Percent of the `-P 16` ceiling.
    pub of_p16: Option<Span>,
    /// p50, p99, p99.9 in ms.
    pub latency_ms: Option<[f64; 3]>,
    /// Redis CPU per decision, µs.
    pub cpu_us: f64,
    /// Redis CPU per limit, µs.
    pub cpu_per_limit_us: f64,
}

/// One open-loop case.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenLoop {
    /// Decisions per second offered.
    pub rate: u64,
    /// Workers and priority.
    pub label: String,
    /// Median p50, ms.
    pub p50_ms: f64,
    /// p99 of each run, ms.
    pub p99_ms: Vec<f64>,
    /// Median p99.9, ms.
    pub p999_ms: f64,
}

/// The cluster figures.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The machine's key in `machines`.
    pub machine: String,
    /// When.
    pub date: String,
    /// The commit measured.
    pub code: String,
    /// Decisions per second, per run.
    pub rates: Vec<u64>,
    /// p99 over the runs, ms.
    pub p99_ms: Bounds,
    /// Redis CPU per decision on all nodes, µs.
    pub cpu_us: Bounds,
    /// `EVALSHA` µs per call.
    pub evalsha_us: Bounds,
}

/// The service.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The machine's key in `machines`.
    pub machine: String,
    /// When.
    pub date: String,
    /// The commit measured against the bare route.
    pub code: String,
    /// Decisions against the bare route, same minutes.
    pub bare: Vec<BareCase>,
    /// The current build's closed loop.
    pub current: ServiceCurrent,
    /// Open-loop latency.
    pub latency: Vec<ServiceLatency>,
    /// Redis mode.
    pub redis: ServiceRedis,
    /// The goals.
    pub goals: ServiceGoals,
}

/// One row of the bare-server comparison.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BareCase {
    /// What was requested.
    pub label: String,
    /// Requests per second, per run.
    pub rates: Vec<u64>,
    /// p99 per run, ms.
    pub p99_ms: Vec<f64>,
    /// Server CPU per request, per run, µs.
    #[serde(default)]
    pub server_cpu_us: Vec<f64>,
}

/// The current build's throughput.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceCurrent {
    /// The commit measured.
    pub code: String,
    /// wrk `check.lua`, decisions per second per run.
    pub wrk_rates: Vec<u64>,
    /// p99 per run, ms.
    pub wrk_p99_ms: Vec<f64>,
    /// Server CPU per decision, per run, µs.
    pub server_cpu_us: Vec<f64>,
    /// gRPC closed loop, decisions per second.
    pub grpc_rate: u64,
    /// Its p50, ms.
    pub grpc_p50_ms: f64,
    /// Its p99, ms.
    pub grpc_p99_ms: f64,
    /// User-space instructions per decision.
    pub instructions: u64,
    /// The commit counted.
    pub instructions_code: String,
}

/// Latency at one offered rate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLatency {
    /// `memory` or `redis`.
    pub store: String,
    /// Decisions per second offered.
    pub rate: u64,
    /// Per run, ms.
    pub p50_ms: Vec<f64>,
    /// Per run, ms.
    pub p90_ms: Vec<f64>,
    /// Per run, ms.
    pub p99_ms: Vec<f64>,
    /// Per run, ms.
    pub p999_ms: Vec<f64>,
}

/// Redis mode with a policy that admits everything.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRedis {
    /// wrk, decisions per second.
    pub wrk_rate: u64,
    /// Its p99, ms.
    pub wrk_p99_ms: f64,
    /// `tollgate bench` closed loop, decisions per second.
    pub closed_rate: u64,
    /// Its p99, ms.
    pub closed_p99_ms: f64,
    /// Redis CPU per decision, µs.
    pub cpu_us: f64,
}

/// The service's goals.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceGoals {
    /// Decisions per second.
    pub rate: u64,
    /// p99 at `half_rate`, ms.
    pub p99_ms: f64,
    /// The rate the latency goal is at.
    pub half_rate: u64,
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The smallest and largest of `values`.
pub fn bounds(values: &[f64]) -> Bounds {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Bounds { low, high }
}
