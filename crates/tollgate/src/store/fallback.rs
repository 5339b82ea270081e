//! The fallback store: a shared store (Redis) behind a circuit breaker, so that the rate
//! limiter never becomes the outage, and so that a busy host never passes for a failing Redis.
//!
//! # When the primary counts as failing
//!
//! A call can be slow because Redis is in trouble, or because this host is: the process waited
//! for a CPU, or the call queued behind hundreds of others before it was written. Only the
//! first is a reason to stop asking Redis; answering the second with the failure modes would
//! hand out wrong answers (a rule that fails open admits everything) while Redis is healthy.
//! So the breaker judges Redis by what belongs to Redis, as the store reports it
//! ([`Store::wire_health`]):
//!
//! - A connection error (refused, reset, closed) fails the call at once, and counts; so does
//!   one seen while a slow call waits (a cluster node that cannot be reached).
//! - Silence: a connection that has had requests written and no reply read for longer than
//!   the threshold. The threshold is twice Redis's usual latency on this host (the smoothed
//!   wire time, request handed to the connection to reply read, plus four times its mean
//!   deviation, as TCP sets its retransmission timeout), never less than
//!   [`FallbackConfig::deadline`] (25 ms), plus twice the host's recent scheduling delay, and
//!   never more than 1 s. Twice: on a busy host, Redis too waits for a CPU, and a reply twice
//!   as late as the usual late one is still jitter, not an outage. The host's delay
//!   ([`WireHealth::host_delay`]: how late this process's own 1 ms timer fired over the last
//!   second or two) is added because a Redis on the same host waits for a CPU as long, at
//!   once, as this process does: a burst of load that starves both makes a silence no
//!   average foresaw. On a quiet host it is about nothing, and the threshold is the deadline.
//!   Silence is counted only while this process runs its
//!   tasks (see [`WireHealth::silence`]): a process that the host did not run for a while
//!   finds every connection silent when it wakes, until it reads the replies that arrived
//!   meanwhile, and that is not Redis's silence.
//! - Calls queued on this host and not yet written (the Redis store's backlog, the
//!   `tollgate_redis_backlog` gauge) and time spent waiting for a CPU are load, never a
//!   failure of Redis.
//!
//! A call is therefore answered by the failure modes only while Redis is at fault, or once it
//! has waited [`FallbackConfig::max_wait`] (5 s), the bound on every decision. The deadline is
//! no longer how long a call may take: a caller on a busy host waits for the exact answer
//! as long as Redis keeps answering. A call still unanswered after `max_wait` while Redis
//! answers others is answered by the failure modes and counted as `overloaded`
//! ([`FallbackStats::overloaded`], `tollgate_store_overloaded_total`), not as a failure. So a
//! killed Redis is noticed at its first refused call, a paused or unreachable one once its
//! silence passes the threshold (the deadline, on a host where Redis answers in well under
//! it: a decision waits the deadline and no longer), and no decision waits longer than
//! `max_wait`. A primary that reports nothing of its connections is judged by the deadline
//! alone: a call that misses it fails.
//!
//! # The breaker and the failure modes
//!
//! - The circuit breaker opens after consecutive failures or a high failure rate; while open,
//!   no decision waits on the primary. After a pause it lets a few probes through (half-open)
//!   and closes again when they succeed.
//! - While the primary is failing, each rule follows its [`FailureMode`]: `local` (the
//!   default) enforces an in-memory share of the limit (the limit divided by the expected
//!   number of instances), `open` admits, `closed` denies as
//!   [`Outcome::Unavailable`](crate::Outcome::Unavailable). Such decisions say so
//!   ([`Decision::is_degraded`](crate::Decision::is_degraded)) and are counted. A `local`
//!   limit reports what its local share knows; an `open` or `closed` one reports nothing
//!   remaining, never a full bucket it cannot vouch for. Nothing spent locally is replayed to
//!   the primary, so nothing is counted twice; when the primary returns, buckets resume from
//!   its state. While the primary fails, [`usage`](Store::usage) fails too
//!   ([`StoreError::Unavailable`]): the shared state cannot be read, and the local share is not
//!   the fleet's usage.
//! - A request id goes to the primary, which remembers its admission; a decision made by the
//!   failure modes remembers it locally, so a retry while still degraded spends nothing more
//!   locally, and a retry once the primary is back is answered by the primary (which may have
//!   run the first attempt after all, and then answers it again rather than spending twice).
//!
//! # The denial cache
//!
//! Once the primary denies a request until `T`, the same request is denied locally until `T`
//! without a round trip. The cached time starts when the request was sent, so the cache
//! expires no later than the primary's own answer would change. A request whose costs are at
//! least the cached ones is denied the same way (its `retry_after` is then a lower bound).
//! Concurrency denials are not cached: a slot can be released at any moment. Capacity given
//! back through another instance (a refund, a reset made there) is seen here only when the
//! cached denial expires, so such calls may be denied for up to their `retry_after` longer
//! than the primary alone would deny them; a reset through this instance forgets the cached
//! denials it covers. Turn the cache off ([`FallbackConfig::denial_cache`]) where that
//! matters more than the saved round trips.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::time::Instant;
use tollgate_core::{Algorithm, Clock, LeaseId, Limit, SystemClock, Timestamp, Usage, Verdict};

use super::health::WireHealth;
use super::memory::{MemoryKey, MemoryStore};
use super::{Degraded, FailureMode, Mode, Op, Route, Settlement, Store, StoreOutcome};
use crate::error::StoreError;
use crate::key::BucketName;

/// Decisions applied to the local share are settled there.
pub const LOCAL: Route = Route(1);

/// The least time between two looks at a slow call's primary.
const LOOK_AGAIN: Duration = Duration::from_millis(1);

/// The most silence a primary is allowed before it counts as failing, however slow it
/// usually answers (on a host so busy that Redis itself waits hundreds of milliseconds for a
/// CPU, its usual latency is that long).
const SILENCE_CEILING: Duration = Duration::from_secs(1);

/// What the primary's connections say about a slow call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blame {
    /// A connection failed since the call began.
    Errors,
    /// A connection has been silent for this long, beyond the threshold.
    Silent(Duration),
    /// The primary is answering; look again at this instant.
    Nothing(Instant),
}

/// Settings of a [`FallbackStore`].
#[derive(Clone, Debug)]
pub struct FallbackConfig {
    /// How long the primary may leave requests unanswered before it counts as failing
    /// (default 25 ms): the least silence blamed on it. Where the primary's replies usually
    /// take longer, the threshold follows them (see the [module docs](self)). For a primary
    /// that reports nothing of its connections ([`Store::wire_health`] is `None`), the longest
    /// a call may take.
    pub deadline: Duration,
    /// The longest any decision waits on the primary, whatever the reason (default 5 s). A
    /// call still unanswered then, although the primary is not failing (this host is too busy
    /// to get the answer through), is answered by the failure modes and counted as
    /// `overloaded`, not as a failure of the primary. Never less than `deadline`. A primary
    /// with its own, shorter, response timeout ends such calls sooner (the Redis store's
    /// `RedisConfig::response_timeout`): give it at least this.
    pub max_wait: Duration,
    /// Consecutive failures that open the breaker (default 5).
    pub consecutive_failures: u32,
    /// The failure rate over the last `rate_window` calls that opens the breaker (default 0.5).
    pub failure_rate: f64,
    /// How many recent calls the failure rate is computed over (default 100, at least 20 of
    /// which must have been made).
    pub rate_window: usize,
    /// How long the breaker stays open before probing (default 1 s).
    pub open_for: Duration,
    /// Successful probes that close the breaker again (default 3).
    pub probes: u32,
    /// How many instances share the limits: a `local` rule enforces `1 / expected_instances`
    /// of each limit while degraded (default 1).
    pub expected_instances: u32,
    /// Whether to remember the primary's denials (default true).
    pub denial_cache: bool,
    /// The most denials remembered (default 100,000).
    pub denial_cache_capacity: usize,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            deadline: Duration::from_millis(25),
            max_wait: Duration::from_secs(5),
            consecutive_failures: 5,
            failure_rate: 0.5,
            rate_window: 100,
            open_for: Duration::from_secs(1),
            probes: 3,
            expected_instances: 1,
            denial_cache: true,
            denial_cache_capacity: 100_000,
        }
    }
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go to the primary.
    Closed,
    /// Calls do not go to the primary until the pause is over.
    Open,
    /// A few probe calls go to the primary.
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 half-open, 2 open (the `tollgate_breaker_state` gauge).
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

enum Gate {
    Call,
    Probe,
    Refuse,
}

/// How a call to the primary went, as the breaker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Judged {
    /// The primary answered (a reply, or an error that is not an outage).
    Answered,
    /// The primary is at fault: its connection failed, or it left requests unanswered for
    /// longer than the threshold.
    Failed,
    /// The call reached `max_wait` while the primary was answering: this host's load.
    Overloaded,
}

struct BreakerInner {
    state: BreakerState,
    consecutive: u32,
    recent: VecDeque<bool>,
    recent_failures: usize,
    open_until: Instant,
    probes_in_flight: u32,
    probe_successes: u32,
    opened: u64,
}

/// Opens after failures, probes after a pause, closes after successful probes.
struct Breaker {
    config: FallbackConfig,
    inner: Mutex<BreakerInner>,
}

impl Breaker {
    fn new(config: FallbackConfig) -> Self {
        Breaker {
            config,
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                consecutive: 0,
                recent: VecDeque::new(),
                recent_failures: 0,
                open_until: Instant::now(),
                probes_in_flight: 0,
                probe_successes: 0,
                opened: 0,
            }),
        }
    }

    fn set(inner: &mut BreakerInner, state: BreakerState) {
        if inner.state != state {
            inner.state = state;
            metrics::gauge!("tollgate_breaker_state").set(state.gauge());
            tracing::info!(?state, "tollgate: store circuit breaker");
        }
    }

    fn gate(&self, now: Instant) -> Gate {
        let mut b = self.inner.lock();
        match b.state {
            BreakerState::Closed => Gate::Call,
            BreakerState::Open if now < b.open_until => Gate::Refuse,
            BreakerState::Open | BreakerState::HalfOpen => {
                if b.state == BreakerState::Open {
                    Self::set(&mut b, BreakerState::HalfOpen);
                    b.probes_in_flight = 0;
                    b.probe_successes = 0;
                }
                if b.probes_in_flight < self.config.probes.max(1) {
                    b.probes_in_flight = b.probes_in_flight.saturating_add(1);
                    Gate::Probe
                } else {
                    Gate::Refuse
                }
            }
        }
    }

    fn record(&self, gate: &Gate, judged: Judged, now: Instant) {
        let mut b = self.inner.lock();
        if matches!(gate, Gate::Probe) {
            b.probes_in_flight = b.probes_in_flight.saturating_sub(1);
            if b.state != BreakerState::HalfOpen || judged == Judged::Overloaded {
                return;
            }
            if judged == Judged::Answered {
                b.probe_successes = b.probe_successes.saturating_add(1);
                if b.probe_successes >= self.config.probes.max(1) {
                    b.consecutive = 0;
                    b.recent.clear();
                    b.recent_failures = 0;
                    Self::set(&mut b, BreakerState::Closed);
                }
            } else {
                self.open(&mut b, now);
            }
            return;
        }
        if b.state != BreakerState::Closed || judged == Judged::Overloaded {
            return;
        }
        let ok = judged == Judged::Answered;
        b.consecutive = if ok {
            0
        } else {
            b.consecutive.saturating_add(1)
        };
        b.recent.push_back(ok);
        if !ok {
            b.recent_failures = b.recent_failures.saturating_add(1);
        }
        while b.recent.len() > self.config.rate_window.max(1) {
            if b.recent.pop_front() == Some(false) {
                b.recent_failures = b.recent_failures.saturating_sub(1);
            }
        }
        let rate_tripped = b.recent.len() >= 20
            && (b.recent_failures as f64) >= self.config.failure_rate * b.recent.len() as f64;
        if b.consecutive >= self.config.consecutive_failures.max(1) || rate_tripped {
            self.open(&mut b, now);
        }
    }

    fn open(&self, b: &mut BreakerInner, now: Instant) {
        b.open_until = now + self.config.open_for;
        b.opened = b.opened.saturating_add(1);
        Self::set(b, BreakerState::Open);
    }

    fn state(&self) -> BreakerState {
        self.inner.lock().state
    }
}

/// A remembered denial of one request by the primary.
struct Remembered<K> {
    /// The request's buckets and costs, in order.
    ops: SmallVec<[(K, u64); 3]>,
    verdicts: SmallVec<[Verdict; 3]>,
    /// When the request was sent, and when the denial lapses.
    sent: Instant,
    until: Instant,
    at: Timestamp,
}

/// Denials by the bucket that denied them.
struct DenialCache<K> {
    map: Mutex<HashMap<K, Arc<Remembered<K>>>>,
    capacity: usize,
}

impl<K: Clone + Eq + std::hash::Hash> DenialCache<K> {
    fn lookup(&self, ops: &[Op<K>], now: Instant) -> Option<StoreOutcome> {
        let map = self.map.lock();
        let hit = ops.iter().find_map(|op| map.get(&op.key))?.clone();
        drop(map);
        if now >= hit.until || hit.ops.len() != ops.len() {
            return None;
        }
        let same = hit
            .ops
            .iter()
            .zip(ops)
            .all(|((k, c), op)| *k == op.key && op.cost >= *c);
        if !same {
            return None;
        }
        let elapsed =
            u64::try_from(now.saturating_duration_since(hit.sent).as_micros()).unwrap_or(u64::MAX);
        let verdicts = hit
            .verdicts
            .iter()
            .map(|v| Verdict {
                retry_after_us: v.retry_after_us.saturating_sub(elapsed),
                reset_after_us: v.reset_after_us.saturating_sub(elapsed),
                ..*v
            })
            .collect();
        Some(StoreOutcome {
            now: hit.at.saturating_add(Duration::from_micros(elapsed)),
            verdicts,
            spent: false,
            store_full: false,
            route: Route::PRIMARY,
            degraded: Some(Degraded::CachedDenial),
        })
    }

    fn remember(&self, ops: &[Op<K>], outcome: &StoreOutcome, sent: Instant) {
        // Only exact denials: rate denials, not concurrency (a slot frees at any moment), not a
        // cost that never fits (it is answered at once anyway).
        let denying: Vec<(usize, &Verdict)> = outcome
            .verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.admitted)
            .collect();
        if denying.is_empty()
            || denying.iter().any(|(i, v)| {
                v.never_fits
                    || ops
                        .get(*i)
                        .is_none_or(|op| op.limit.algorithm() == Algorithm::Concurrency)
            })
        {
            return;
        }
        let Some(longest) = denying.iter().map(|(_, v)| v.retry_after_us).max() else {
            return;
        };
        let Some((first, _)) = denying.first() else {
            return;
        };
        let Some(key) = ops.get(*first).map(|op| op.key.clone()) else {
            return;
        };
        let entry = Arc::new(Remembered {
            ops: ops.iter().map(|op| (op.key.clone(), op.cost)).collect(),
            verdicts: outcome.verdicts.clone(),
            sent,
            until: sent + Duration::from_micros(longest),
            at: outcome.now,
        });
        let mut map = self.map.lock();
        if map.len() >= self.capacity {
            let now = Instant::now();
            map.retain(|_, e| e.until > now);
            if map.len() >= self.capacity {
                return;
            }
        }
        map.insert(key, entry);
    }

    fn forget(&self, keys: impl Iterator<Item = K>) {
        let mut map = self.map.lock();
        for k in keys {
            map.remove(&k);
        }
    }
}

/// A bucket's key in the primary and in the local share.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FallbackKey<K> {
    /// The primary's key.
    pub primary: K,
    /// The local share's key.
    pub local: MemoryKey,
}

/// Counts of what the fallback store did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FallbackStats {
    /// Decisions made by the rules' failure modes.
    pub degraded: u64,
    /// Denials answered from the cache: calls the primary was spared.
    pub cached_denials: u64,
    /// Calls to the primary that failed, or that it left unanswered beyond the threshold.
    pub primary_failures: u64,
    /// Calls that reached `max_wait` while the primary was answering (this host's load).
    pub overloaded: u64,
    /// How often the breaker opened.
    pub breaker_opened: u64,
}

/// See the [module docs](self).
pub struct FallbackStore<P: Store> {
    primary: P,
    local: MemoryStore,
    config: FallbackConfig,
    breaker: Breaker,
    cache: DenialCache<P::Key>,
    degraded: AtomicU64,
    cached: AtomicU64,
    failures: AtomicU64,
    overloaded: AtomicU64,
}

impl<P: Store + std::fmt::Debug> std::fmt::Debug for FallbackStore<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackStore")
            .field("primary", &self.primary)
            .field("config", &self.config)
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl<P: Store> FallbackStore<P> {
    /// Wraps `primary` with the default settings and a system clock for the local share.
    pub fn new(primary: P) -> Self {
        Self::with_config(primary, FallbackConfig::default(), SystemClock::new())
    }

    /// Wraps `primary`; the local share reads `local_clock`.
    pub fn with_config(
        primary: P,
        config: FallbackConfig,
        local_clock: impl Clock + 'static,
    ) -> Self {
        metrics::gauge!("tollgate_breaker_state").set(BreakerState::Closed.gauge());
        FallbackStore {
            primary,
            local: MemoryStore::with_clock(local_clock),
            cache: DenialCache {
                map: Mutex::new(HashMap::new()),
                capacity: config.denial_cache_capacity,
            },
            breaker: Breaker::new(config.clone()),
            config,
            degraded: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
        }
    }

    /// The primary store.
    pub fn primary(&self) -> &P {
        &self.primary
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The silence above which the primary counts as failing now: twice its usual latency, at
    /// least the deadline and at most 1 s (see the [module docs](self));
    /// the deadline for a primary that reports nothing of its connections.
    pub fn silence_threshold(&self) -> Duration {
        self.primary
            .wire_health()
            .map_or(self.config.deadline, |h| self.threshold(&h))
    }

    /// What the store has done so far.
    pub fn stats(&self) -> FallbackStats {
        FallbackStats {
            degraded: self.degraded.load(Ordering::Relaxed),
            cached_denials: self.cached.load(Ordering::Relaxed),
            primary_failures: self.failures.load(Ordering::Relaxed),
            overloaded: self.overloaded.load(Ordering::Relaxed),
            breaker_opened: self.breaker.inner.lock().opened,
        }
    }

    /// A limit's local share: amount and burst divided by the expected instances (at least 1).
    fn share(&self, limit: &Limit) -> Limit {
        let n = u64::from(self.config.expected_instances.max(1));
        if n == 1 {
            return *limit;
        }
        let mut spec = limit.spec();
        spec.amount = spec.amount.div_ceil(n).max(1);
        spec.burst = spec.burst.map(|b| b.div_ceil(n).max(1));
        spec.build().unwrap_or(*limit)
    }

    fn local_ops(&self, ops: &[Op<FallbackKey<P::Key>>]) -> Vec<Op<MemoryKey>> {
        ops.iter()
            .map(|op| Op {
                key: op.key.local,
                limit: self.share(&op.limit),
                cost: op.cost,
                failure: op.failure,
            })
            .collect()
    }

    fn primary_ops(ops: &[Op<FallbackKey<P::Key>>]) -> Vec<Op<P::Key>> {
        ops.iter()
            .map(|op| Op {
                key: op.key.primary.clone(),
                limit: op.limit,
                cost: op.cost,
                failure: op.failure,
            })
            .collect()
    }

    /// Runs `call` against the primary through the breaker, waiting as long as the primary
    /// is answering (at most `max_wait`), and counts how it went.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let gate = self.breaker.gate(Instant::now());
        if matches!(gate, Gate::Refuse) {
            return Err(StoreError::Unavailable("circuit breaker open".into()));
        }
        let (result, judged) = self.judged(call, Instant::now()).await;
        match judged {
            Judged::Answered => {}
            Judged::Failed => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tollgate_store_errors_total").increment(1);
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "tollgate: a call to the shared store failed");
                }
            }
            Judged::Overloaded => {
                self.overloaded.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tollgate_store_overloaded_total").increment(1);
            }
        }
        self.breaker.record(&gate, judged, Instant::now());
        result
    }

    /// The silence above which the primary is at fault: twice its usual latency, at least the
    /// deadline, plus twice the host's recent scheduling delay; at most [`SILENCE_CEILING`]
    /// (so that a silent primary is found soon, however slow it usually is), and never more
    /// than `max_wait`.
    fn threshold(&self, health: &WireHealth) -> Duration {
        let floor = self.config.deadline;
        let ceiling = SILENCE_CEILING.min(self.max_wait()).max(floor);
        health
            .usual
            .saturating_mul(2)
            .max(floor)
            .saturating_add(health.host_delay.saturating_mul(2))
            .min(ceiling)
    }

    fn max_wait(&self) -> Duration {
        self.config.max_wait.max(self.config.deadline)
    }

    /// What the primary's connections say about a call begun at `started` and still
    /// unanswered `now`.
    fn blame(&self, health: &WireHealth, started: Instant, now: Instant) -> Blame {
        if health.last_error.is_some_and(|e| e >= started) {
            return Blame::Errors;
        }
        let threshold = self.threshold(health);
        // To the millisecond: silence is counted in ticks of one, and a call begun on an idle
        // connection is silent from just after its start.
        if health.silence + LOOK_AGAIN > threshold {
            Blame::Silent(health.silence)
        } else {
            // Nothing to blame before the silence could first exceed the threshold.
            Blame::Nothing(now + (threshold - health.silence).max(LOOK_AGAIN))
        }
    }

    /// Awaits `call`, begun at `started`, and judges how it went. Past the deadline, the call
    /// is given up on only if the primary is at fault (a connection error since the call
    /// began, or a silence beyond the threshold) or once `max_wait` has passed.
    async fn judged<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
        started: Instant,
    ) -> (Result<T, StoreError>, Judged) {
        let mut call = std::pin::pin!(call);
        let hard = started + self.max_wait();
        let mut wake = started + self.config.deadline;
        loop {
            let now = match tokio::time::timeout_at(wake, &mut call).await {
                Ok(result) => {
                    let judged = self.judge_result(&result, started);
                    return (result, judged);
                }
                Err(_) => Instant::now(),
            };
            let Some(health) = self.primary.wire_health() else {
                return (
                    Err(StoreError::Timeout(self.config.deadline)),
                    Judged::Failed,
                );
            };
            match self.blame(&health, started, now) {
                Blame::Errors => {
                    return (
                        Err(StoreError::Unavailable(
                            "the connection to the shared store failed".into(),
                        )),
                        Judged::Failed,
                    );
                }
                Blame::Silent(silence) => {
                    tracing::warn!(
                        ?silence,
                        threshold = ?self.threshold(&health),
                        in_flight = health.in_flight,
                        "tollgate: the shared store left requests unanswered"
                    );
                    return (Err(StoreError::Timeout(silence)), Judged::Failed);
                }
                Blame::Nothing(next) => wake = next,
            }
            if now >= hard {
                return (
                    Err(StoreError::Timeout(self.max_wait())),
                    Judged::Overloaded,
                );
            }
            wake = wake.min(hard);
        }
    }

    /// How a call that came back with `result` went. The primary's own timeout counts
    /// against it only if its connections show it at fault.
    fn judge_result<T>(&self, result: &Result<T, StoreError>, started: Instant) -> Judged {
        match result {
            Ok(_) => Judged::Answered,
            Err(e) if !e.is_transient() => Judged::Answered,
            Err(StoreError::Timeout(_)) => match self.primary.wire_health() {
                Some(health) => match self.blame(&health, started, Instant::now()) {
                    Blame::Nothing(_) => Judged::Overloaded,
                    Blame::Errors | Blame::Silent(_) => Judged::Failed,
                },
                None => Judged::Failed,
            },
            Err(_) => Judged::Failed,
        }
    }

    /// The decision the rules' failure modes make without the primary. A `local` limit reports
    /// what its local share knows; an `open` or `closed` one, which nothing tracks meanwhile,
    /// reports nothing remaining (never a full bucket it cannot vouch for). A request id
    /// spent locally is remembered locally, so a retry while still degraded spends nothing
    /// more.
    fn degrade(
        &self,
        ops: &[Op<FallbackKey<P::Key>>],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> StoreOutcome {
        self.degraded.fetch_add(1, Ordering::Relaxed);
        let unavailable = ops.iter().any(|op| op.failure == FailureMode::Closed);
        let reason = if unavailable {
            "closed"
        } else {
            "open_or_local"
        };
        metrics::counter!("tollgate_degraded_decisions_total", "mode" => reason).increment(1);
        let locals: Vec<usize> = (0..ops.len())
            .filter(|&i| {
                ops.get(i)
                    .is_some_and(|op| op.failure == FailureMode::Local)
            })
            .collect();
        let all_local = self.local_ops(ops);
        let local_ops: Vec<Op<MemoryKey>> = locals
            .iter()
            .filter_map(|&i| all_local.get(i).cloned())
            .collect();
        let local_mode = if unavailable { Mode::Peek } else { mode };
        let local = (!local_ops.is_empty()).then(|| {
            match Store::decide_sync(&self.local, &local_ops, local_mode, lease, request_id) {
                Some(Ok(o)) => o,
                // The memory store always decides at once and never fails.
                _ => self.local.decide_now(&local_ops, local_mode, lease),
            }
        });
        let now = local
            .as_ref()
            .map_or_else(|| self.local.clock().now(), |o| o.now);
        let mut verdicts: SmallVec<[Verdict; 3]> = ops
            .iter()
            .map(|op| {
                let capacity = op.limit.capacity();
                Verdict {
                    admitted: op.failure == FailureMode::Open,
                    never_fits: false,
                    capacity,
                    remaining: 0,
                    reset_after_us: 0,
                    retry_after_us: 0,
                }
            })
            .collect();
        if let Some(o) = &local {
            for (&i, v) in locals.iter().zip(&o.verdicts) {
                if let Some(slot) = verdicts.get_mut(i) {
                    *slot = *v;
                }
            }
        }
        let admitted = !unavailable && verdicts.iter().all(|v| v.admitted);
        StoreOutcome {
            now,
            verdicts,
            // A local replay of a request id spent nothing.
            spent: admitted && mode == Mode::Spend && local.as_ref().is_none_or(|o| o.spent),
            store_full: local.as_ref().is_some_and(|o| o.store_full),
            route: LOCAL,
            degraded: Some(Degraded::FailureModes { unavailable }),
        }
    }

    fn local_settlements(
        &self,
        items: &[Settlement<FallbackKey<P::Key>>],
    ) -> Vec<Settlement<MemoryKey>> {
        items
            .iter()
            .map(|s| s.map(|k| k.local, |l| self.share(l)))
            .collect()
    }

    fn primary_settlements(items: &[Settlement<FallbackKey<P::Key>>]) -> Vec<Settlement<P::Key>> {
        items
            .iter()
            .map(|s| s.map(|k| k.primary.clone(), |l| *l))
            .collect()
    }
}

impl<P: Store> Store for FallbackStore<P> {
    type Key = FallbackKey<P::Key>;

    fn bucket_key(&self, name: &BucketName<'_>) -> Self::Key {
        FallbackKey {
            primary: self.primary.bucket_key(name),
            local: self.local.bucket_key(name),
        }
    }

    async fn decide(
        &self,
        ops: &[Op<Self::Key>],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> Result<StoreOutcome, StoreError> {
        let primary_ops = Self::primary_ops(ops);
        let sent = Instant::now();
        if self.config.denial_cache {
            if let Some(hit) = self.cache.lookup(&primary_ops, sent) {
                self.cached.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tollgate_denial_cache_hits_total").increment(1);
                return Ok(hit);
            }
        }
        match self
            .guarded(self.primary.decide(&primary_ops, mode, lease, request_id))
            .await
        {
            Ok(outcome) => {
                if self.config.denial_cache && outcome.verdicts.iter().any(|v| !v.admitted) {
                    self.cache.remember(&primary_ops, &outcome, sent);
                }
                Ok(outcome)
            }
            Err(e) if e.is_transient() => Ok(self.degrade(ops, mode, lease, request_id)),
            Err(e) => Err(e),
        }
    }

    async fn settle(
        &self,
        items: &[Settlement<Self::Key>],
        route: Route,
    ) -> Result<usize, StoreError> {
        // Capacity given back may end a remembered denial early.
        self.cache
            .forget(items.iter().map(|s| s.key().primary.clone()));
        if route == LOCAL {
            return Ok(self.local.settle_sync(&self.local_settlements(items)));
        }
        let primary = Self::primary_settlements(items);
        self.guarded(self.primary.settle(&primary, route)).await
    }

    fn settle_now(
        &self,
        items: &[Settlement<Self::Key>],
        route: Route,
    ) -> Option<Result<usize, StoreError>> {
        (route == LOCAL).then(|| Ok(self.local.settle_sync(&self.local_settlements(items))))
    }

    async fn usage(&self, ops: &[Op<Self::Key>]) -> Result<(Timestamp, Vec<Usage>), StoreError> {
        let primary_ops = Self::primary_ops(ops);
        // Usage is the shared state's: while it cannot be read, say so rather than report
        // the local share's (mostly empty) buckets as if they were the fleet's.
        self.guarded(self.primary.usage(&primary_ops))
            .await
            .map_err(|e| match e {
                StoreError::Timeout(_) | StoreError::Unavailable(_) => StoreError::Unavailable(
                    format!("the shared store's usage could not be read: {e}"),
                ),
                e => e,
            })
    }

    async fn reset(&self, keys: &[Self::Key]) -> Result<(), StoreError> {
        self.cache.forget(keys.iter().map(|k| k.primary.clone()));
        let local: Vec<MemoryKey> = keys.iter().map(|k| k.local).collect();
        self.local.reset(&local).await?;
        let primary: Vec<P::Key> = keys.iter().map(|k| k.primary.clone()).collect();
        self.guarded(self.primary.reset(&primary)).await
    }

    async fn reset_rule(&self, rule: &'static str, rule_id: u32) -> Result<u64, StoreError> {
        self.cache.map.lock().clear();
        self.local.reset_rule(rule, rule_id).await?;
        self.guarded(self.primary.reset_rule(rule, rule_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(deadline_ms: u64, max_wait_ms: u64) -> FallbackStore<MemoryStore> {
        let config = FallbackConfig {
            deadline: Duration::from_millis(deadline_ms),
            max_wait: Duration::from_millis(max_wait_ms),
            consecutive_failures: 1,
            ..FallbackConfig::default()
        };
        FallbackStore::with_config(MemoryStore::new(), config, SystemClock::new())
    }

    fn usual(ms: u64) -> WireHealth {
        WireHealth {
            usual: Duration::from_millis(ms),
            ..WireHealth::default()
        }
    }

    #[test]
    fn the_threshold_is_twice_the_usual_latency_between_the_deadline_and_1_s() {
        let s = store(25, 5000);
        let t = |ms| s.threshold(&usual(ms));
        assert_eq!(
            t(0),
            Duration::from_millis(25),
            "no sample yet: the deadline"
        );
        assert_eq!(t(3), Duration::from_millis(25));
        assert_eq!(
            t(40),
            Duration::from_millis(80),
            "twice a busy host's usual latency"
        );
        assert_eq!(t(400), Duration::from_millis(800));
        assert_eq!(t(4000), SILENCE_CEILING, "however slow Redis usually is");
        assert_eq!(
            store(25, 100).threshold(&usual(4000)),
            Duration::from_millis(100),
            "never beyond max_wait"
        );
        assert_eq!(
            store(400, 5000).threshold(&usual(0)),
            Duration::from_millis(400),
            "never below the deadline"
        );
    }

    #[test]
    fn the_hosts_scheduling_delay_widens_the_threshold_twice_over() {
        let s = store(25, 5000);
        let busy = |usual_ms, delay_ms| {
            s.threshold(&WireHealth {
                host_delay: Duration::from_millis(delay_ms),
                ..usual(usual_ms)
            })
        };
        assert_eq!(busy(0, 0), Duration::from_millis(25), "a quiet host");
        assert_eq!(
            busy(3, 10),
            Duration::from_millis(45),
            "the deadline, and twice what the host kept this process waiting"
        );
        assert_eq!(busy(15, 10), Duration::from_millis(50));
        assert_eq!(busy(15, 900), SILENCE_CEILING, "never beyond the ceiling");
        // A silence that the host's delay explains is not blamed; a longer one is.
        let started = Instant::now();
        let now = started + Duration::from_millis(40);
        let silent = |ms| WireHealth {
            silence: Duration::from_millis(ms),
            host_delay: Duration::from_millis(10),
            in_flight: 50,
            ..usual(15)
        };
        assert!(matches!(
            s.blame(&silent(39), started, now),
            Blame::Nothing(_)
        ));
        assert!(matches!(
            s.blame(&silent(60), started, now),
            Blame::Silent(_)
        ));
    }

    #[test]
    fn only_a_connection_error_since_the_call_began_or_a_long_silence_is_blamed() {
        let s = store(25, 5000);
        let started = Instant::now();
        let now = started + Duration::from_millis(30);
        let earlier_error = WireHealth {
            last_error: Some(started - Duration::from_millis(1)),
            ..usual(1)
        };
        assert!(matches!(
            s.blame(&earlier_error, started, now),
            Blame::Nothing(_)
        ));
        let error = WireHealth {
            last_error: Some(started + Duration::from_millis(2)),
            ..usual(1)
        };
        assert_eq!(s.blame(&error, started, now), Blame::Errors);
        let silent = WireHealth {
            silence: Duration::from_millis(30),
            in_flight: 4,
            ..usual(1)
        };
        assert_eq!(
            s.blame(&silent, started, now),
            Blame::Silent(Duration::from_millis(30))
        );
        // A busy connection that keeps answering: look again when its silence could first
        // pass the threshold.
        let answering = WireHealth {
            silence: Duration::from_millis(5),
            in_flight: 128,
            backlog: 900,
            ..usual(1)
        };
        assert_eq!(
            s.blame(&answering, started, now),
            Blame::Nothing(now + Duration::from_millis(20))
        );
        // The same silence on a host where Redis usually takes 60 ms is not a failure.
        let slow_host = WireHealth {
            silence: Duration::from_millis(30),
            ..usual(60)
        };
        assert!(matches!(
            s.blame(&slow_host, started, now),
            Blame::Nothing(_)
        ));
    }

    #[test]
    fn an_overloaded_call_never_opens_the_breaker() {
        let s = store(25, 5000);
        let now = Instant::now();
        for _ in 0..10 {
            let gate = s.breaker.gate(now);
            s.breaker.record(&gate, Judged::Overloaded, now);
        }
        assert_eq!(s.breaker_state(), BreakerState::Closed);
        let gate = s.breaker.gate(now);
        s.breaker.record(&gate, Judged::Failed, now);
        assert_eq!(
            s.breaker_state(),
            BreakerState::Open,
            "one failure opens it here"
        );
    }

    #[test]
    fn a_primary_that_reports_nothing_is_judged_by_the_deadline() {
        let s = store(25, 5000);
        assert_eq!(s.silence_threshold(), Duration::from_millis(25));
    }
}
