//! Keyed admission checks: tollgate's in-memory limiter against governor's keyed limiter, in
//! the same run on the same machine.
//!
//! Run with `cargo bench -p tollgate-benches --bench check`; `BENCHMARKS.md` at the repository
//! root explains the cases and records the figures. Every benchmark reports throughput in
//! checks, so that a two-thread result can be divided by the one-thread result of the same
//! group.
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
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use governor::DefaultKeyedRateLimiter;
use tollgate::{Cost, Limiter, Policy};

use tollgate_benches::{
    fill, run, single_limit, spot_check, three_limits, Governor, Mode, Target, Tollgate,
    TollgatePrepared, MAX_KEYS, THREADS,
};

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
