//! Counting decisions: through the `metrics` facade for exporters, and in striped atomics for
//! a snapshot that needs no exporter.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::decision::Decision;

const STRIPES: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    allowed: AtomicU64,
    denied: AtomicU64,
}

/// Decision counters, striped per thread so that cores do not fight over one cache line.
pub(crate) struct Stats {
    stripes: [Stripe; STRIPES],
}

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = Cell::new(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
    }
    INDEX.with(Cell::get)
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            stripes: Default::default(),
        }
    }

    pub(crate) fn record(&self, d: &Decision, elapsed: Option<Duration>) {
        let stripe = &self.stripes[stripe_index()];
        if d.is_allowed() {
            stripe.allowed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tollgate_decisions_total", "outcome" => "allowed").increment(1);
        } else {
            stripe.denied.fetch_add(1, Ordering::Relaxed);
            let reason = d.reason().map_or("unknown", |r| r.code());
            let (rule, kind) = d
                .denied_by()
                .map_or(("", ""), |s| (s.rule, s.kind.as_str()));
            metrics::counter!(
                "tollgate_decisions_total",
                "outcome" => "denied",
                "rule" => rule,
                "kind" => kind,
                "reason" => reason
            )
            .increment(1);
        }
        if let Some(e) = elapsed {
            metrics::histogram!("tollgate_decision_seconds").record(e.as_secs_f64());
        }
    }

    pub(crate) fn snapshot(
        &self,
        active_buckets: Option<Vec<(&'static str, u64)>>,
    ) -> StatsSnapshot {
        let (allowed, denied) = self.stripes.iter().fold((0u64, 0u64), |(a, d), s| {
            (
                a.saturating_add(s.allowed.load(Ordering::Relaxed)),
                d.saturating_add(s.denied.load(Ordering::Relaxed)),
            )
        });
        let total = allowed.saturating_add(denied);
        StatsSnapshot {
            allowed,
            denied,
            deny_rate: if total == 0 {
                0.0
            } else {
                denied as f64 / total as f64
            },
            active_buckets,
        }
    }
}

/// Counts of decisions since the limiter was built.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsSnapshot {
    /// Decisions that admitted the call.
    pub allowed: u64,
    /// Decisions that denied it.
    pub denied: u64,
    /// `denied / (allowed + denied)`, 0 when there were none.
    pub deny_rate: f64,
    /// Buckets currently holding state, per rule, where the store can tell.
    pub active_buckets: Option<Vec<(&'static str, u64)>>,
}
