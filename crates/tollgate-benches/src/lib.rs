//! What the in-process benchmarks measure: the limiters under test behind one trait, the quotas
//! of each mode, the policies, and the fill and spot checks around a measurement.
//! `benches/check.rs` times them with criterion; `benches/paired.rs` times tollgate and governor
//! in alternating batches; `benches/instructions.rs` runs one case a given number of times for
//! valgrind's callgrind to count its instructions.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use futures::FutureExt;
use governor::{DefaultKeyedRateLimiter, Quota};
use tollgate::{Cost, LimitKind, LimitSpec, Limiter, Policy, Prepared, Rule, Subject, Window};

/// The largest key set; smaller sets use its prefix.
pub const MAX_KEYS: usize = 1_000_000;

/// Thread counts measured in every group (this machine has two cores).
pub const THREADS: [usize; 2] = [1, 2];

/// How many keys, evenly spread, are checked for the expected outcome around a measurement.
pub const SPOT_CHECKS: usize = 1_000;

/// What every measured call is answered: how the quota is set against the calls.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every call admitted, no bucket refilled between two visits (a rate of one per ten
    /// seconds with a burst of 10⁹).
    Admitted,
    /// Every call admitted, every bucket refilled before its next visit.
    AdmittedRefilled,
    /// Every call denied (one per hour, spent by the fill).
    Denied,
}

impl Mode {
    /// Every mode, in the order the benchmarks run them.
    pub const ALL: [Mode; 3] = [Mode::Admitted, Mode::AdmittedRefilled, Mode::Denied];

    /// The mode's name in a case's name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Admitted => "admitted",
            Mode::AdmittedRefilled => "admitted_refilled",
            Mode::Denied => "denied",
        }
    }

    /// Whether the mode's calls are admitted.
    pub fn admits(self) -> bool {
        self != Mode::Denied
    }

    /// The requests limit for tollgate.
    pub fn requests(self) -> LimitSpec {
        match self {
            Mode::Admitted => LimitSpec::new(
                LimitKind::Requests,
                1,
                Window::Length(Duration::from_secs(10)),
            )
            .burst(1_000_000_000),
            Mode::AdmittedRefilled => {
                LimitSpec::new(LimitKind::Requests, u64::from(u32::MAX), Window::SECOND)
            }
            Mode::Denied => LimitSpec::new(LimitKind::Requests, 1, Window::HOUR),
        }
    }

    /// The same quota for governor.
    pub fn quota(self) -> Quota {
        match self {
            Mode::Admitted => Quota::with_period(Duration::from_secs(10))
                .expect("non-zero period")
                .allow_burst(NonZeroU32::new(1_000_000_000).expect("non-zero burst")),
            Mode::AdmittedRefilled => Quota::per_second(NonZeroU32::MAX),
            Mode::Denied => Quota::per_hour(NonZeroU32::MIN),
        }
    }
}

/// Something that answers "is the call for key `i` admitted?", spending if so.
pub trait Target: Sync {
    /// Decides the call for key `i`: `true` if admitted.
    fn check(&self, i: usize) -> bool;
    /// How many entries (buckets) the limiter holds.
    fn held(&self) -> usize;
}

/// tollgate's `check_now` (or async `check`) on a subject built per call from its key.
pub struct Tollgate<'k> {
    /// The limiter under test.
    pub limiter: Limiter,
    /// The tenant of each key index.
    pub keys: &'k [String],
    /// The cost of every call.
    pub cost: Cost,
    /// Through the async `check` (polled once) instead of `check_now`.
    pub asynchronous: bool,
}

impl Target for Tollgate<'_> {
    #[inline]
    fn check(&self, i: usize) -> bool {
        let subject = Subject::new().tenant(self.keys[i].as_str());
        let decision = if self.asynchronous {
            self.limiter
                .check(&subject, self.cost)
                .now_or_never()
                .expect("the memory store's future is ready at once")
        } else {
            self.limiter
                .check_now(&subject, self.cost)
                .expect("the memory store decides at once")
        };
        decision
            .expect("the memory store does not fail")
            .is_allowed()
    }

    fn held(&self) -> usize {
        self.limiter.store().len()
    }
}

/// tollgate with every key's subject prepared before measuring ([`Limiter::prepare`]): a
/// decision skips resolving the subject against the policy.
pub struct TollgatePrepared {
    limiter: Limiter,
    keys: Vec<Prepared>,
    cost: Cost,
    /// Through `admit_prepared_now` (an `Admission`) instead of `check_prepared_now`.
    admit: bool,
}

impl TollgatePrepared {
    /// Prepares every key's subject on `limiter`; `admit` answers through
    /// `admit_prepared_now`, otherwise through `check_prepared_now`.
    pub fn new(limiter: Limiter, keys: &[String], cost: Cost, admit: bool) -> Self {
        let keys = keys
            .iter()
            .map(|k| limiter.prepare(&Subject::new().tenant(k.as_str())))
            .collect();
        TollgatePrepared {
            limiter,
            keys,
            cost,
            admit,
        }
    }
}

impl Target for TollgatePrepared {
    #[inline]
    fn check(&self, i: usize) -> bool {
        if self.admit {
            return self
                .limiter
                .admit_prepared_now(&self.keys[i], self.cost)
                .expect("the memory store decides at once")
                .expect("the memory store does not fail")
                .is_allowed();
        }
        self.limiter
            .check_prepared_now(&self.keys[i], self.cost)
            .expect("the memory store decides at once")
            .expect("the memory store does not fail")
            .is_allowed()
    }

    fn held(&self) -> usize {
        self.limiter.store().len()
    }
}

/// governor's keyed limiter, keyed by the key's index.
pub struct Governor {
    /// The limiter under test.
    pub limiter: DefaultKeyedRateLimiter<u64>,
}

impl Target for Governor {
    #[inline]
    fn check(&self, i: usize) -> bool {
        self.limiter.check_key(&(i as u64)).is_ok()
    }

    fn held(&self) -> usize {
        self.limiter.len()
    }
}

/// One rule `.per("tenant")` with the one limit `spec`.
pub fn single_limit(spec: LimitSpec) -> Policy {
    Policy::builder()
        .rule(Rule::builder("per-tenant").per("tenant").limit(spec))
        .build()
        .expect("a valid policy")
}

/// One rule `.per("tenant")` with a requests, a tokens and a concurrency limit.
pub fn three_limits(mode: Mode) -> Policy {
    let requests = match mode {
        Mode::Denied => LimitSpec::new(LimitKind::Requests, 1, Window::HOUR),
        _ => LimitSpec::new(LimitKind::Requests, 600, Window::MINUTE).burst(1_000_000_000),
    };
    Policy::builder()
        .rule(
            Rule::builder("per-tenant")
                .per("tenant")
                .limit(requests)
                .limit(
                    LimitSpec::new(LimitKind::Tokens, 1_000_000, Window::MINUTE)
                        .burst(1_000_000_000_000),
                )
                .limit(LimitSpec::concurrency(100)),
        )
        .build()
        .expect("a valid policy")
}

/// Spends once from every key: fills the store, and exhausts every key in `denied` mode.
pub fn fill(target: &impl Target, n: usize) {
    for i in 0..n {
        black_box(target.check(i));
    }
}

/// Asserts that keys spread over `0..n` get the `expected` outcome.
pub fn spot_check(target: &impl Target, n: usize, expected: bool, what: &str) {
    let step = (n / SPOT_CHECKS).max(1);
    for i in (0..n).step_by(step) {
        assert_eq!(
            target.check(i),
            expected,
            "{what}: key {i} was not {}",
            if expected { "admitted" } else { "denied" }
        );
    }
}

/// Checks `iters` keys in turn from `cursor`, wrapping at `n`; returns the next cursor.
#[inline]
pub fn drive(target: &impl Target, n: usize, iters: u64, mut cursor: usize) -> usize {
    for _ in 0..iters {
        black_box(target.check(cursor));
        cursor += 1;
        if cursor == n {
            cursor = 0;
        }
    }
    cursor
}

/// Runs `iters` checks on each of `cursors.len()` threads at once; returns the wall time from
/// the common start to the last thread's end.
pub fn run(target: &impl Target, n: usize, iters: u64, cursors: &mut [usize]) -> Duration {
    if let [cursor] = cursors {
        let start = Instant::now();
        *cursor = drive(target, n, iters, *cursor);
        return start.elapsed();
    }
    let barrier = Barrier::new(cursors.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = cursors
            .iter()
            .map(|&cursor| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let next = drive(target, n, iters, cursor);
                    (start.elapsed(), next)
                })
            })
            .collect();
        let mut longest = Duration::ZERO;
        for (handle, cursor) in handles.into_iter().zip(cursors.iter_mut()) {
            let (elapsed, next) = handle.join().expect("a benchmark thread panicked");
            longest = longest.max(elapsed);
            *cursor = next;
        }
        longest
    })
}
