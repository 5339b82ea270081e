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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tollgate_decisions_total",
        "Decisions made by the limiter, by outcome, denying rule, kind and reason"
    );
    describe_histogram!(
        "tollgate_decision_seconds",
        Unit::Seconds,
        "Time the store took to decide"
    );
    describe_counter!("tollgate_store_errors_total", "Store calls that failed");
    describe_counter!(
        "tollgate_server_decisions_total",
        "Decisions answered by the service, by API, outcome, rule and limit"
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
}
