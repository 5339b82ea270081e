//! Logs (tracing, plain or JSON) and metrics (Prometheus).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Installs the log subscriber (once per process; later calls do nothing). `level` is an
/// `EnvFilter` directive such as `info` or `tollgate_server=debug`; `RUST_LOG` wins when set.
pub fn init_logs(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log file, a pipe or a journal gets plain
    // text (NO_COLOR turns them off at a terminal too).
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A subscriber may already be set (tests, embedding programs): keep it.
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Buckets of the latency histograms, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

/// The process's Prometheus recorder, installed on first use. Install it before building a
/// limiter, so that tollgate's own metrics are recorded from the first decision. `None` if
/// another recorder was installed first (the embedding program's).
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            process_collector().describe();
            start_at_zero();
            let upkeep = handle.clone();
            // Histograms keep samples until upkeep folds them; one thread for the process.
            let _ = std::thread::Builder::new()
                .name("tollgate-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            Some(handle)
        })
        .clone()
}

/// The `process_*` metrics' collector (CPU seconds, resident and virtual memory, open and
/// maximum file descriptors, threads, start time), read from the operating system at each
/// scrape.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Brings the `process_*` metrics up to date: called before each scrape is rendered.
pub fn collect_process_metrics() {
    process_collector().collect();
}

/// Every counter the service exports, with each label set known before the first event, at
/// zero: a dashboard or alert (`rate(...)`, `increase(...)`) then sees the series from the
/// start instead of from its first event, and `tollgate_build_info` says what runs.
/// Series labelled by rule appear with their rule's first event.
fn start_at_zero() {
    use metrics::{counter, gauge};
    gauge!("tollgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    counter!("tollgate_decisions_total", "outcome" => "allowed").increment(0);
    for api in crate::app::Api::ALL {
        counter!(
            "tollgate_server_decisions_total",
            "api" => api.label(),
            "outcome" => "allowed",
            "rule" => "",
            "limit" => ""
        )
        .increment(0);
    }
    for why in ["missing", "invalid", "tenant", "admin"] {
        counter!("tollgate_auth_failures_total", "why" => why).increment(0);
    }
    for result in ["ok", "error"] {
        counter!("tollgate_config_reloads_total", "result" => result).increment(0);
    }
    for listener in ["http", "grpc"] {
        counter!("tollgate_accept_errors_total", "listener" => listener).increment(0);
        for reason in [
            "read_timeout",
            "idle_timeout",
            "write_timeout",
            "evicted",
            "shutdown",
        ] {
            counter!("tollgate_connections_closed_total", "listener" => listener, "reason" => reason)
                .increment(0);
        }
    }
    for action in ["allow", "deny"] {
        counter!("tollgate_unmatched_total", "action" => action).increment(0);
    }
    for mode in ["closed", "open_or_local"] {
        counter!("tollgate_degraded_decisions_total", "mode" => mode).increment(0);
    }
    for name in [
        "tollgate_store_errors_total",
        "tollgate_store_overloaded_total",
        "tollgate_denial_cache_hits_total",
        "tollgate_redis_rollbacks_total",
        "tollgate_redis_script_loads_total",
        "tollgate_memory_store_full_total",
        "tollgate_memory_evicted_total",
        "tollgate_subject_index_full_total",
    ] {
        counter!(name).increment(0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tollgate_decisions_total",
        "Decisions made by the limiter, by outcome (allowed, denied, too_large, store_full, unavailable, unmatched), denying rule, kind and reason"
    );
    describe_histogram!(
        "tollgate_decision_seconds",
        Unit::Seconds,
        "Time the store took to decide"
    );
    describe_counter!("tollgate_store_errors_total", "Store calls that failed");
    describe_counter!(
        "tollgate_server_decisions_total",
        "Decisions answered by the service, by API, outcome (as tollgate_decisions_total), denying rule and limit (kind/window)"
    );
    describe_histogram!(
        "tollgate_server_request_seconds",
        Unit::Seconds,
        "Time to answer a decision request, by API"
    );
    describe_counter!(
        "tollgate_shadow_denials_total",
        "Calls admitted although a rule in shadow mode would have denied them"
    );
    describe_counter!(
        "tollgate_config_reloads_total",
        "Configuration reloads, by result (ok or error)"
    );
    describe_gauge!(
        "tollgate_active_buckets",
        "Buckets the memory store holds, by rule (a refilled one until the next sweep)"
    );
    describe_gauge!("tollgate_connections", "Open connections, by listener");
    describe_counter!(
        "tollgate_connections_closed_total",
        "Connections the service closed, by listener and reason (read_timeout, idle_timeout, write_timeout, evicted, shutdown)"
    );
    describe_counter!(
        "tollgate_accept_errors_total",
        "Failed accepts (such as running out of file descriptors), by listener"
    );
    describe_gauge!("tollgate_permits_held", "Granted permits not yet settled");
    describe_counter!(
        "tollgate_auth_failures_total",
        "Requests refused for a missing or wrong token, or another tenant"
    );
    describe_gauge!(
        "tollgate_build_info",
        "Always 1; the version label says which tollgate runs"
    );
    describe_counter!(
        "tollgate_unmatched_total",
        "Calls no rule's limits apply to, by what the policy did with them (allow or deny)"
    );
    describe_counter!(
        "tollgate_degraded_decisions_total",
        "Decisions made by the rules' failure modes while the shared store failed, by mode"
    );
    describe_counter!(
        "tollgate_store_overloaded_total",
        "Store calls refused because too many were already waiting for Redis"
    );
    describe_counter!(
        "tollgate_denial_cache_hits_total",
        "Denials answered from the local cache of a bucket known to be empty, without Redis"
    );
    describe_counter!(
        "tollgate_redis_rollbacks_total",
        "Multi-slot admissions undone because one slot's part failed"
    );
    describe_counter!(
        "tollgate_redis_script_loads_total",
        "Lua scripts loaded into Redis (after a restart or SCRIPT FLUSH)"
    );
    describe_counter!(
        "tollgate_memory_store_full_total",
        "Decisions refused because the memory store held its maximum of buckets"
    );
    describe_counter!(
        "tollgate_memory_evicted_total",
        "Refilled buckets the memory store dropped"
    );
    describe_counter!(
        "tollgate_subject_index_full_total",
        "Partitions not indexed for /v1/admin/subjects because the index was full"
    );
}
