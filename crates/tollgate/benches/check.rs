//! Keyed admission checks: tollgate's in-memory limiter against governor's keyed limiter, in
//! the same run on the same machine.
//!
//! Run with `cargo bench -p tollgate`; `BENCHMARKS.md` at the repository root explains the
//! cases and records the figures. Every benchmark reports throughput in checks, so that a
//! two-thread result can be divided by the one-thread result of the same group.
//!
//! - `check/<keys>/<mode>`: one GCRA requests limit per tenant (tollgate: a rule `.per("tenant")`;
//!   governor: `RateLimiter::keyed` with `u64` keys). `<keys>` is `hot` (one key), `10k` or
//!   `1M` distinct keys, visited in turn. `<mode>` is
//!   - `admitted`: every call admitted and every key's state stays resident (a rate of one per
//!     ten seconds with a burst of 10⁹, so no bucket refills between two visits and none runs
//!     dry);
//!   - `admitted_refilled`: every call admitted under a quota of `u32::MAX` per second, so every
//!     bucket has refilled before its next visit (tollgate then drops it: a full bucket equals no
//!     bucket; governor keeps it);
//!   - `denied`: one per hour, spent once per key before measuring, so every call is denied.
//! - `three_limit/<keys>/<mode>`: tollgate only, one rule with requests, tokens and concurrency
//!   limits checked together (`check_now`, `check_prepared_now` and `admit_prepared_now`; the
//!   concurrency limit is checked for a free slot, none is taken), at `hot` (one key) and `10k`
//!   keys: the goal's case is `10k`; `hot` keeps every line in cache, so the two together tell
//!   the cache's share of a decision.
//!
//! `tollgate_prepared` is `Limiter::check_prepared_now` on subjects prepared before measuring
//! (one `Prepared` per key, as governor's keys are built before measuring), and
//! `tollgate_admit` is `Limiter::admit_prepared_now` on the same: the same decision answered as
//! an `Admission` (allowed or not, retry_after, the denying limit) rather than a `Decision`
//! with every limit's status, as governor answers `Ok` or `NotUntil`.
//!
//! `tollgate` is `Limiter::check_now`, the synchronous call the memory store answers (as
//! governor's `check_key` is synchronous); `tollgate_async` is the async `Limiter::check` on the
//! same store, polled once.
//!
//! Keys are built before measuring (`tenant-{i}` strings for tollgate, the index as `u64` for
//! governor), and each limiter is filled with every key before measuring. The memory store's
//! future is ready at once, so it is polled a single time with `now_or_never`: no runtime is
//! measured.

use std::cell::OnceCell;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use futures::FutureExt;
use governor::{DefaultKeyedRateLimiter, Quota};
use tollgate::{Cost, LimitKind, LimitSpec, Limiter, Policy, Prepared, Rule, Subject, Window};

/// The largest key set; smaller sets use its prefix.
const MAX_KEYS: usize = 1_000_000;

/// Thread counts measured in every group (this machine has two cores).
const THREADS: [usize; 2] = [1, 2];

/// How many keys, evenly spread, are checked for the expected outcome around a measurement.
const SPOT_CHECKS: usize = 1_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Admitted,
    AdmittedRefilled,
    Denied,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Admitted, Mode::AdmittedRefilled, Mode::Denied];

    fn name(self) -> &'static str {
        match self {
            Mode::Admitted => "admitted",
            Mode::AdmittedRefilled => "admitted_refilled",
            Mode::Denied => "denied",
        }
    }

    fn admits(self) -> bool {
        self != Mode::Denied
    }

    /// The requests limit for tollgate.
    fn requests(self) -> LimitSpec {
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
    fn quota(self) -> Quota {
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
trait Target: Sync {
    fn check(&self, i: usize) -> bool;
    /// How many entries (buckets) the limiter holds.
    fn held(&self) -> usize;
}

struct Tollgate<'k> {
    limiter: Limiter,
    keys: &'k [String],
    cost: Cost,
    /// Through the async `check` (polled once) instead of `check_now`.
    asynchronous: bool,
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
struct TollgatePrepared {
    limiter: Limiter,
    keys: Vec<Prepared>,
    cost: Cost,
    /// Through `admit_prepared_now` (an `Admission`) instead of `check_prepared_now`.
    admit: bool,
}

impl TollgatePrepared {
    fn new(limiter: Limiter, keys: &[String], cost: Cost, admit: bool) -> Self {
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

struct Governor {
    limiter: DefaultKeyedRateLimiter<u64>,
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

fn single_limit(spec: LimitSpec) -> Policy {
    Policy::builder()
        .rule(Rule::builder("per-tenant").per("tenant").limit(spec))
        .build()
        .expect("a valid policy")
}

fn three_limits(mode: Mode) -> Policy {
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
fn fill(target: &impl Target, n: usize) {
    for i in 0..n {
        black_box(target.check(i));
    }
}

/// Asserts that keys spread over `0..n` get the `expected` outcome.
fn spot_check(target: &impl Target, n: usize, expected: bool, what: &str) {
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
fn drive(target: &impl Target, n: usize, iters: u64, mut cursor: usize) -> usize {
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
fn run(target: &impl Target, n: usize, iters: u64, cursors: &mut [usize]) -> Duration {
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

/// Measures the target that `build` makes at every thread count, each thread starting at its
/// own share of the keys. The target is built, filled and spot-checked on first use, so a
/// benchmark filtered out on the command line costs no setup.
fn measure<T: Target>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    lib: &str,
    n: usize,
    admits: bool,
    build: impl Fn() -> T,
) {
    let target: OnceCell<T> = OnceCell::new();
    let ready = || {
        target.get_or_init(|| {
            let t = build();
            fill(&t, n);
            eprintln!(
                "{name}: {lib} holds {} entries for {n} keys after the fill",
                t.held()
            );
            spot_check(&t, n, admits, lib);
            t
        })
    };
    for threads in THREADS {
        let mut cursors: Vec<usize> = (0..threads).map(|t| t * n / threads).collect();
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(format!("{lib}/{threads}t"), |b| {
            let t = ready();
            b.iter_custom(|iters| run(t, n, iters, &mut cursors));
        });
        if let Some(t) = target.get() {
            spot_check(t, n, admits, lib);
        }
    }
}

/// Measures tollgate's `check_now` (and, with `asynchronous`, its async `check`) and its
/// check of prepared subjects, each on a fresh limiter with `policy()`.
fn measure_tollgate(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    mode: Mode,
    policy: impl Fn() -> Policy,
    keys: &[String],
    cost: Cost,
    asynchronous: bool,
) {
    let n = keys.len();
    let variants: &[(&str, bool)] = if asynchronous {
        &[("tollgate", false), ("tollgate_async", true)]
    } else {
        &[("tollgate", false)]
    };
    for &(lib, asynchronous) in variants {
        measure(group, name, lib, n, mode.admits(), || Tollgate {
            limiter: Limiter::with_policy(policy()),
            keys,
            cost,
            asynchronous,
        });
    }
    for (lib, admit) in [("tollgate_prepared", false), ("tollgate_admit", true)] {
        measure(group, name, lib, n, mode.admits(), || {
            TollgatePrepared::new(Limiter::with_policy(policy()), keys, cost, admit)
        });
    }
}

fn key_sets() -> [(&'static str, usize); 3] {
    [("hot", 1), ("10k", 10_000), ("1M", MAX_KEYS)]
}

fn benches(c: &mut Criterion) {
    let names: Vec<String> = (0..MAX_KEYS).map(|i| format!("tenant-{i}")).collect();

    for (label, n) in key_sets() {
        let keys = &names[..n];
        for mode in Mode::ALL {
            let name = format!("check/{label}/{}", mode.name());
            let mut group = c.benchmark_group(&name);
            let policy = || single_limit(mode.requests());
            measure_tollgate(&mut group, &name, mode, policy, keys, Cost::ONE, true);
            measure(&mut group, &name, "governor", n, mode.admits(), || {
                Governor {
                    limiter: DefaultKeyedRateLimiter::keyed(mode.quota()),
                }
            });
            group.finish();
        }
    }

    // `hot` (one key, every line in cache) beside `10k` tells the cache's share of a
    // decision from its instructions' share.
    for ((label, n), mode) in [("hot", 1), ("10k", 10_000)]
        .into_iter()
        .flat_map(|k| [(k, Mode::Admitted), (k, Mode::Denied)])
    {
        let name = format!("three_limit/{label}/{}", mode.name());
        let mut group = c.benchmark_group(&name);
        let policy = || three_limits(mode);
        let keys = &names[..n];
        measure_tollgate(
            &mut group,
            &name,
            mode,
            policy,
            keys,
            Cost::tokens(1_000),
            false,
        );
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = check;
    config = config();
    targets = benches
}
criterion_main!(check);
