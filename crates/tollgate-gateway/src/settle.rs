//! Settlement on every exit path. A [`Ticket`] holds a call's permits from the moment they
//! are granted; whatever ends the call (the answer is complete, the upstream fails, the client
//! goes away, the handler is dropped), the ticket settles exactly once, writes the request's
//! log line and counts it. A ticket that is dropped unsettled settles as
//! [`Path::ClientGone`]: nothing can leave a slot held or a reservation unsettled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::store::Store;
use tollgate::{Cost, Permit};

use crate::config::FailedCost;
use crate::estimate::Estimator;
use crate::provider::Usage;

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The answer completed with its usage: settled at the actual usage.
    Completed,
    /// The answer completed without usage: settled at the estimate (a stream's output at
    /// the tokens of the text it streamed), and counted.
    UsageMissing,
    /// The upstream refused or failed before any output (an error status, a connect failure,
    /// a timeout): the reservation is cancelled (or one request kept, if so configured).
    UpstreamError,
    /// The client went away: the upstream call is cancelled at once, and the input plus the
    /// output streamed so far (tokenized) is settled.
    ClientGone,
    /// The upstream broke the stream after output began: the input plus the output streamed
    /// so far is settled.
    StreamBroken,
}

impl Path {
    /// Every path, in the order above.
    pub const ALL: [Path; 5] = [
        Path::Completed,
        Path::UsageMissing,
        Path::UpstreamError,
        Path::ClientGone,
        Path::StreamBroken,
    ];

    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Completed => "completed",
            Path::UsageMissing => "usage_missing",
            Path::UpstreamError => "upstream_error",
            Path::ClientGone => "client_gone",
            Path::StreamBroken => "stream_broken",
        }
    }
}

/// What the log line says about a call besides its settlement.
#[derive(Clone, Debug)]
pub struct CallLog {
    /// tollgate's id of the request.
    pub request_id: String,
    /// The managed key's name, or `passthrough`.
    pub caller: String,
    /// The tenant (a key's hash in passthrough mode).
    pub tenant: String,
    /// The upstream's name.
    pub provider: String,
    /// The model.
    pub model: String,
    /// The endpoint.
    pub endpoint: &'static str,
    /// Whether streamed.
    pub stream: bool,
    /// How long the call waited for capacity.
    pub waited: Duration,
}

/// A granted call's permits, settled once on whatever path ends the call.
pub struct Ticket<S: Store> {
    permits: Vec<Permit<S>>,
    /// Estimated input and output tokens.
    pub estimate: (u64, u64),
    estimator: Estimator,
    failed: FailedCost,
    started: Instant,
    first_byte: Option<Duration>,
    status: u16,
    log: Arc<CallLog>,
    settled: bool,
}

impl<S: Store> std::fmt::Debug for Ticket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("request_id", &self.log.request_id)
            .field("estimate", &self.estimate)
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}

/// What a settlement spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The path.
    pub path: Path,
    /// The usage settled (actual, or the estimate where none was reported).
    pub usage: Usage,
    /// Whether `usage` is the provider's own report.
    pub reported: bool,
}

impl<S: Store> Ticket<S> {
    /// A ticket for granted `permits` (the policy's, and the learned limit's if any).
    pub fn new(
        permits: Vec<Permit<S>>,
        estimate: (u64, u64),
        estimator: Estimator,
        failed: FailedCost,
        log: Arc<CallLog>,
    ) -> Self {
        Ticket {
            permits,
            estimate,
            estimator,
            failed,
            started: Instant::now(),
            first_byte: None,
            status: 0,
            log,
            settled: false,
        }
    }

    /// Keeps the permits' concurrency leases alive while a long call runs.
    pub fn keep_alive(&mut self, every: Duration) {
        for p in &mut self.permits {
            p.keep_alive(every);
        }
    }

    /// Notes the upstream's status and time to first byte.
    pub fn answered(&mut self, status: u16) {
        self.status = status;
        if self.first_byte.is_none() {
            self.first_byte = Some(self.started.elapsed());
        }
    }

    /// The estimator that counted the call (to count streamed output).
    pub fn estimator(&self) -> &Estimator {
        &self.estimator
    }

    /// Settles a completed answer: at `usage` if reported, else at the estimate with the
    /// output at `counted_output` (a stream's tokenized text) or the reservation.
    pub fn complete(self, usage: Option<Usage>, counted_output: Option<u64>) {
        match usage {
            Some(u) => self.settle(Settlement {
                path: Path::Completed,
                usage: u,
                reported: true,
            }),
            None => {
                let usage = Usage {
                    input: self.estimate.0,
                    output: counted_output.unwrap_or(self.estimate.1),
                    cached_input: 0,
                };
                self.settle(Settlement {
                    path: Path::UsageMissing,
                    usage,
                    reported: false,
                })
            }
        }
    }

    /// Settles a call cut short (`ClientGone` or `StreamBroken`): the input as reported, else
    /// estimated, and the tokens of the output streamed so far.
    pub fn cut_short(self, path: Path, input_reported: Option<u64>, output_text: &str) {
        let output = self.estimator.count(output_text);
        let usage = Usage {
            input: input_reported.unwrap_or(self.estimate.0),
            output,
            cached_input: 0,
        };
        self.settle(Settlement {
            path,
            usage,
            reported: false,
        })
    }

    /// Settles a call the upstream refused or failed before any output.
    pub fn failed(self) {
        self.settle(Settlement {
            path: Path::UpstreamError,
            usage: Usage::default(),
            reported: false,
        })
    }

    /// Settles now: the commit (or cancel) runs on its own task, so that a dropped
    /// response body settles at once without anyone awaiting it.
    pub fn settle(mut self, s: Settlement) {
        self.settled = true;
        let permits = std::mem::take(&mut self.permits);
        let log = Arc::clone(&self.log);
        let estimate = self.estimate;
        let failed = self.failed;
        let elapsed = self.started.elapsed();
        let first_byte = self.first_byte;
        let status = self.status;
        let run = async move {
            let cost = match s.path {
                Path::UpstreamError => match failed {
                    FailedCost::Refund => None,
                    FailedCost::Request => Some(Cost::split(0, 0)),
                },
                _ => Some(Cost::split(s.usage.input, s.usage.output)),
            };
            let mut store_error = None;
            for mut p in permits {
                let r = match cost {
                    Some(c) => p.commit(c).await,
                    None => p.cancel().await,
                };
                if let Err(e) = r {
                    store_error = Some(e.to_string());
                }
            }
            record(
                &log,
                &s,
                estimate,
                elapsed,
                first_byte,
                status,
                store_error.as_deref(),
            );
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(run);
            }
            Err(_) => {
                // No runtime (a ticket dropped outside one): the permits' own drop releases
                // the slots; the log line is still written.
                tracing::warn!(request_id = %self.log.request_id, "settled outside a runtime");
            }
        }
    }
}

impl<S: Store> Drop for Ticket<S> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped before any answer reached the client: the handler was cancelled because
        // the client left (or the service is stopping). The upstream call, owned by the
        // same future, is gone with it.
        let t = Ticket {
            permits: std::mem::take(&mut self.permits),
            estimate: self.estimate,
            estimator: self.estimator,
            failed: self.failed,
            started: self.started,
            first_byte: self.first_byte,
            status: self.status,
            log: Arc::clone(&self.log),
            settled: false,
        };
        self.settled = true;
        t.cut_short(Path::ClientGone, None, "");
    }
}

fn record(
    log: &CallLog,
    s: &Settlement,
    estimate: (u64, u64),
    elapsed: Duration,
    first_byte: Option<Duration>,
    status: u16,
    store_error: Option<&str>,
) {
    let provider = log.provider.clone();
    metrics::counter!("tollgate_gateway_settlements_total", "path" => s.path.as_str()).increment(1);
    if s.path != Path::UpstreamError {
        let model = crate::metrics::model_label(&log.model);
        metrics::counter!("tollgate_gateway_tokens_total", "provider" => provider.clone(), "model" => model.clone(), "direction" => "input")
            .increment(s.usage.input);
        metrics::counter!("tollgate_gateway_tokens_total", "provider" => provider.clone(), "model" => model, "direction" => "output")
            .increment(s.usage.output);
    }
    if s.reported {
        let error = s.usage.total() as f64 - (estimate.0 + estimate.1) as f64;
        metrics::histogram!("tollgate_gateway_estimate_error_tokens", "provider" => provider.clone())
            .record(error);
    }
    if s.path == Path::UsageMissing {
        metrics::counter!("tollgate_gateway_usage_missing_total", "provider" => provider.clone())
            .increment(1);
    }
    metrics::histogram!("tollgate_gateway_upstream_seconds", "provider" => provider.clone())
        .record(elapsed.as_secs_f64());
    if let Some(fb) = first_byte {
        metrics::histogram!("tollgate_gateway_upstream_first_byte_seconds", "provider" => provider)
            .record(fb.as_secs_f64());
    }
    tracing::info!(
        target: "tollgate_gateway::request",
        request_id = %log.request_id,
        caller = %log.caller,
        tenant = %log.tenant,
        provider = %log.provider,
        model = %log.model,
        endpoint = log.endpoint,
        stream = log.stream,
        status,
        path = s.path.as_str(),
        estimate_input = estimate.0,
        estimate_output = estimate.1,
        reserved = estimate.0 + estimate.1,
        actual_input = s.usage.input,
        actual_output = s.usage.output,
        cached_input = s.usage.cached_input,
        usage_reported = s.reported,
        waited_ms = log.waited.as_millis() as u64,
        first_byte_ms = first_byte.map_or(0, |d| d.as_millis() as u64),
        elapsed_ms = elapsed.as_millis() as u64,
        store_error = store_error.unwrap_or(""),
        "gateway call settled"
    );
}
