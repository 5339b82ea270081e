//! Counting decisions: through the `metrics` facade for exporters, and in per-thread counters
//! for a snapshot that needs no exporter.
//!
//! The labels of a denial (rule, kind, reason) are known when the policy is built, so each
//! limit carries them as `&'static` label sets ([`DenialLabels`]): counting a denial builds no
//! key and allocates nothing, and the recorder is still asked on every decision, so a recorder
//! installed at any time sees every decision from then on.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use metrics::{Key, Label, Level, Metadata};
use thread_local::ThreadLocal;
use tollgate_core::LimitKind;

use crate::decision::{DenyReason, Outcome};

const DECISIONS: &str = "tollgate_decisions_total";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

static ALLOWED_LABELS: [Label; 1] = [Label::from_static_parts("outcome", "allowed")];
static ALLOWED: Key = Key::from_static_parts(DECISIONS, &ALLOWED_LABELS);

/// The label sets of the denials one limit can cause, interned once per (rule, kind, quota).
#[derive(Debug)]
pub(crate) struct DenialLabels {
    /// Denied because the limit has no room now (reason `requests`, `tokens`, `concurrency`
    /// or `quota`).
    denied: Key,
    /// Denied because the cost can never fit (reason `too_large`).
    too_large: Key,
}

/// The `outcome` label of a denial for `reason`: the decision's outcome as the service's
/// answers and `tollgate_server_decisions_total` name it (`denied`, or `too_large`).
fn denial_outcome(reason: DenyReason) -> &'static str {
    if reason == DenyReason::TooLarge {
        Outcome::TooLarge.as_str()
    } else {
        Outcome::Denied.as_str()
    }
}

fn labels(rule: &'static str, kind: LimitKind, reason: DenyReason) -> &'static [Label] {
    Box::leak(Box::new([
        Label::from_static_parts("outcome", denial_outcome(reason)),
        Label::from_static_parts("rule", rule),
        Label::from_static_parts("kind", kind.as_str()),
        Label::from_static_parts("reason", reason.code()),
    ]))
}

/// The process-wide label sets for denials by a limit of `kind` in rule `rule`. Each distinct
/// triple is stored once, however often policies are rebuilt (as rule names are interned).
pub(crate) fn denial_labels(
    rule: &'static str,
    kind: LimitKind,
    quota: bool,
) -> &'static DenialLabels {
    type Interned = HashMap<(&'static str, LimitKind, bool), &'static DenialLabels>;
    static SETS: OnceLock<Mutex<Interned>> = OnceLock::new();
    let mut sets = SETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    sets.entry((rule, kind, quota)).or_insert_with(|| {
        let reason = DenyReason::of_limit(kind, quota);
        Box::leak(Box::new(DenialLabels {
            denied: Key::from_static_parts(DECISIONS, labels(rule, kind, reason)),
            too_large: Key::from_static_parts(DECISIONS, labels(rule, kind, DenyReason::TooLarge)),
        }))
    })
}

/// One thread's counts. Only the owning thread writes them, with a plain load and store
/// rather than a locked read-modify-write (a snapshot reads them from any thread); a thread
/// that exits leaves its counts to the next thread given its id, so none are lost. Each
/// thread's counts sit on cache lines of their own (128 bytes: a line and the one the CPU
/// fetches with it), so that two cores counting do not pass one line back and forth.
#[derive(Default)]
#[repr(align(128))]
struct Counts {
    allowed: AtomicU64,
    denied: AtomicU64,
    /// Synchronous decisions left before the next one whose latency is measured.
    countdown: AtomicU32,
}

impl Counts {
    #[inline]
    fn bump(counter: &AtomicU64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// Whether this synchronous decision is one whose latency is measured.
    #[inline(always)]
    fn sampled(&self) -> bool {
        let n = self.countdown.load(Ordering::Relaxed);
        let sampled = n == 0;
        let next = if sampled { LATENCY_SAMPLE - 1 } else { n - 1 };
        self.countdown.store(next, Ordering::Relaxed);
        sampled
    }
}

/// Decision counters, one set per thread so that cores neither fight over a cache line nor
/// pay for atomic increments.
pub(crate) struct Stats {
    per_thread: ThreadLocal<Counts>,
}

/// Synchronous decisions (the memory store's, about a hundred nanoseconds) have their latency
/// measured for one decision in this many per thread and limiter: two clock reads would cost
/// more than half of the decision. Decisions that wait for a store (Redis) are all measured.
const LATENCY_SAMPLE: u32 = 64;

/// A decision being counted, from before the store is asked: the deciding thread's counts,
/// looked up once for the sample and the count, and the latency sample's start if this
/// decision is measured. It must not be held across an `await`: the task may resume on
/// another thread, and only the owning thread may write its counts. So it is not `Send` (a
/// future holding one is rejected where futures must be `Send`), and a decision that waits
/// for its store takes its sample after the wait ([`Stats::after_wait`]).
#[derive(Clone, Copy)]
pub(crate) struct Sample<'a> {
    counts: &'a Counts,
    started: Option<quanta::Instant>,
    not_send: PhantomData<*const ()>,
}

fn count(key: &Key) {
    metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(1);
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            per_thread: ThreadLocal::new(),
        }
    }

    /// Begins counting a synchronous decision: one in [`LATENCY_SAMPLE`] is measured.
    #[inline(always)]
    pub(crate) fn begin(&self) -> Sample<'_> {
        let counts = self.per_thread.get_or_default();
        let started = counts.sampled().then(quanta::Instant::now);
        Sample {
            counts,
            started,
            not_send: PhantomData,
        }
    }

    /// The count of a decision that waited for its store since `started`, taken on the thread
    /// that resumed it: every one is measured.
    pub(crate) fn after_wait(&self, started: quanta::Instant) -> Sample<'_> {
        self.unsampled(Some(started))
    }

    /// Begins counting a decision that asks no store (no limit applies): not measured.
    pub(crate) fn begin_unmeasured(&self) -> Sample<'_> {
        self.unsampled(None)
    }

    /// A count on this thread, measured from `started` if given, without the 1-in-64 draw.
    fn unsampled(&self, started: Option<quanta::Instant>) -> Sample<'_> {
        Sample {
            counts: self.per_thread.get_or_default(),
            started,
            not_send: PhantomData,
        }
    }

    /// Counts a decision begun as `sample` that came out as `outcome`. `denier` holds the
    /// label sets of the limit that denied it, if one did.
    #[inline(always)]
    pub(crate) fn record(
        &self,
        sample: Sample<'_>,
        outcome: Outcome,
        denier: Option<&'static DenialLabels>,
    ) {
        let counts = sample.counts;
        if outcome == Outcome::Allowed {
            Counts::bump(&counts.allowed);
            count(&ALLOWED);
        } else {
            Counts::bump(&counts.denied);
            match (outcome, denier) {
                (Outcome::Denied, Some(l)) => count(&l.denied),
                (Outcome::TooLarge, Some(l)) => count(&l.too_large),
                _ => {
                    let reason = DenyReason::of_outcome(outcome, || None)
                        .map_or("unknown", DenyReason::code);
                    metrics::counter!(
                        DECISIONS,
                        "outcome" => outcome.as_str(),
                        "rule" => "",
                        "kind" => "",
                        "reason" => reason
                    )
                    .increment(1);
                }
            }
        }
        if let Some(started) = sample.started {
            metrics::histogram!("tollgate_decision_seconds")
                .record(started.elapsed().as_secs_f64());
        }
    }

    pub(crate) fn snapshot(
        &self,
        active_buckets: Option<Vec<(&'static str, u64)>>,
    ) -> StatsSnapshot {
        let (allowed, denied) = self.per_thread.iter().fold((0u64, 0u64), |(a, d), s| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up_exactly_after_they_exit() {
        let stats = Stats::new();
        // More threads than the first thread-id bucket holds, in two waves, so that later
        // threads reuse the ids (and the counters) of exited ones.
        for _wave in 0..2 {
            std::thread::scope(|s| {
                for t in 0..20 {
                    let stats = &stats;
                    s.spawn(move || {
                        for i in 0..1_000 {
                            let d = if (i + t) % 4 == 0 {
                                Outcome::Denied
                            } else {
                                Outcome::Allowed
                            };
                            stats.record(stats.begin_unmeasured(), d, None);
                        }
                    });
                }
            });
        }
        let snap = stats.snapshot(None);
        assert_eq!(snap.allowed + snap.denied, 40_000);
        assert_eq!(snap.denied, 10_000);
        assert!((snap.deny_rate - 0.25).abs() < 1e-12);
    }
}
