//! tollgate against governor in alternating batches: the ratios of `BENCHMARKS.md`, measured so
//! that both libraries see the same machine.
//!
//! `check.rs` (criterion) times each case for a few seconds, one after another. On a machine
//! whose speed changes from second to second (a virtual machine whose host is busy, with a
//! third of its time stolen in `top`), two cases measured seconds apart can differ by a fifth
//! with nothing changed, and so can their ratio. Here each case builds both targets, fills and
//! spot-checks them as `check.rs` does, then times short batches of each in turn (tollgate,
//! governor, governor, tollgate, …), so that every tollgate batch has a governor batch beside
//! it. A case's figure is the median over its rounds of the ratio within a round; the
//! quartiles say how far the rounds spread. A two-thread case pairs each library's
//! two-thread batch with its own one-thread batch: `2t/1t` is the throughput of two threads
//! over that of one.
//!
//! Run with `cargo bench -p tollgate-benches --bench paired`; an argument keeps the cases whose
//! name contains it (`cargo bench -p tollgate-benches --bench paired -- three_limit`).

use std::hint::black_box;
use std::time::Duration;

use governor::DefaultKeyedRateLimiter;
use tollgate::{Cost, Limiter, Policy};

use tollgate_benches::{
    fill, run, single_limit, spot_check, three_limits, Governor, Mode, Target, TollgatePrepared,
    MAX_KEYS,
};

/// Rounds per case (odd: the median is one round's ratio).
const ROUNDS: usize = 101;

/// The time one batch aims at: long beside the clock's resolution, short beside the
/// machine's changes of speed.
const BATCH: Duration = Duration::from_micros(500);

/// One side of a pairing: a target, its keys and where its next check starts.
struct Side<'a, T> {
    target: &'a T,
    n: usize,
    cursors: Vec<usize>,
}

impl<T: Target> Side<'_, T> {
    /// Times `iters` checks on each of its threads at once (each from its own cursor): the
    /// wall time from the common start to the last thread's end.
    fn time(&mut self, iters: u64) -> Duration {
        run(self.target, self.n, iters, &mut self.cursors)
    }
}

/// `threads` cursors spread evenly over `n` keys.
fn cursors(threads: usize, n: usize) -> Vec<usize> {
    (0..threads).map(|t| t * n / threads).collect()
}

/// How many checks fill a [`BATCH`] on `side`, from a trial batch.
fn batch_of<T: Target>(side: &mut Side<'_, T>) -> u64 {
    let trial = 1_000;
    let took = side.time(trial).max(Duration::from_nanos(1));
    let per = took.as_secs_f64() / trial as f64;
    ((BATCH.as_secs_f64() / per) as u64).clamp(10, 1_000_000)
}

/// The median and quartiles of `v` (sorted here).
fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

/// Times `a` and `b` in alternating batches of the same number of checks per thread and
/// prints the median time per check of each and the median ratio `a ÷ b` with its quartiles
/// (`scale` multiplies each round's ratio: 2 turns a time ratio of two threads against one
/// into a ratio of throughputs).
fn pair<A: Target, B: Target>(case: &str, a: &mut Side<'_, A>, b: &mut Side<'_, B>, scale: f64) {
    let iters = batch_of(a).min(batch_of(b));
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // a b, then b a: neither always runs first.
        let (x, y) = if round % 2 == 0 {
            let x = a.time(iters);
            (x, b.time(iters))
        } else {
            let y = b.time(iters);
            (a.time(iters), y)
        };
        let per = |d: Duration| d.as_secs_f64() * 1e9 / iters as f64;
        ta.push(per(x));
        tb.push(per(y));
        ratios.push(scale * per(x) / per(y));
    }
    let (ma, _, _) = quartiles(&mut ta);
    let (mb, _, _) = quartiles(&mut tb);
    let (r, q1, q3) = quartiles(&mut ratios);
    println!("{case:44} {ma:9.1} {mb:9.1} {r:7.3} [{q1:.3}-{q3:.3}]  ({ROUNDS} rounds of {iters})");
}

/// Builds, fills and spot-checks a target for `n` keys, as `check.rs` does. In every case
/// governor's target is built first: where the allocator puts a table of a million entries
/// changed governor's own check from 180 to 330 ns on this machine (the same code, in two
/// builds of this benchmark whose tollgate had been built first), so governor's tables are
/// allocated before anything of tollgate's can move them.
fn ready<T: Target>(target: T, n: usize, admits: bool, what: &str) -> T {
    fill(&target, n);
    spot_check(&target, n, admits, what);
    target
}

fn governor(mode: Mode, n: usize) -> Governor {
    ready(
        Governor {
            limiter: DefaultKeyedRateLimiter::keyed(mode.quota()),
        },
        n,
        mode.admits(),
        "governor",
    )
}

fn admit(policy: Policy, names: &[String], cost: Cost, mode: Mode) -> TollgatePrepared {
    let target = TollgatePrepared::new(Limiter::with_policy(policy), names, cost, true);
    ready(target, names.len(), mode.admits(), "tollgate_admit")
}

fn main() {
    let filter: Option<String> = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .filter(|a| !a.is_empty());
    let wanted = |case: &str| filter.as_deref().is_none_or(|f| case.contains(f));
    let names: Vec<String> = (0..MAX_KEYS).map(|i| format!("tenant-{i}")).collect();
    println!(
        "{:44} {:>9} {:>9} {:>7} quartiles",
        "case (a ÷ b)", "a ns", "b ns", "ratio"
    );
    let modes = [Mode::Admitted, Mode::Denied];
    for (label, n) in [("hot", 1), ("10k", 10_000), ("1M", MAX_KEYS)] {
        for mode in modes {
            let case = format!("check/{label}/{}/admit÷governor", mode.name());
            if !wanted(&case) {
                continue;
            }
            let g = governor(mode, n);
            let t = admit(single_limit(mode.requests()), &names[..n], Cost::ONE, mode);
            let (mut a, mut b) = (side(&t, n, 1), side(&g, n, 1));
            pair(&case, &mut a, &mut b, 1.0);
        }
    }
    for (label, n) in [("hot", 1), ("10k", 10_000)] {
        for mode in modes {
            let case = format!("three_limit/{label}/{}/admit÷governor10k", mode.name());
            if !wanted(&case) {
                continue;
            }
            let cost = Cost::tokens(1_000);
            let g = governor(mode, 10_000);
            let t = admit(three_limits(mode), &names[..n], cost, mode);
            let (mut a, mut b) = (side(&t, n, 1), side(&g, 10_000, 1));
            pair(&case, &mut a, &mut b, 1.0);
        }
    }
    for mode in modes {
        let n = MAX_KEYS;
        let case = format!("scaling/1M/{}/admit", mode.name());
        if wanted(&case) {
            let t = admit(single_limit(mode.requests()), &names, Cost::ONE, mode);
            let mut two = side(&t, n, 2);
            let mut one = one_thread_beside(&two);
            pair(&format!("{case} 2t/1t"), &mut one, &mut two, 2.0);
        }
        let case = format!("scaling/1M/{}/governor", mode.name());
        if wanted(&case) {
            let g = governor(mode, n);
            let mut two = side(&g, n, 2);
            let mut one = one_thread_beside(&two);
            pair(&format!("{case} 2t/1t"), &mut one, &mut two, 2.0);
        }
    }
    black_box(&names);
}

fn side<T: Target>(target: &T, n: usize, threads: usize) -> Side<'_, T> {
    Side {
        target,
        n,
        cursors: cursors(threads, n),
    }
}

/// The one-thread side of a scaling pair on the same target as `two`: its cursor starts a
/// quarter of the keys away from each of the two threads' (which start half-way apart), so
/// that no batch walks keys that the other side's batch has just touched. With both starting
/// at key 0, each round's second batch found the first one's cache lines on the other core:
/// the per-round ratios split by which side ran first (about 1.1-1.6 against 2.1-3.0).
fn one_thread_beside<'a, T: Target>(two: &Side<'a, T>) -> Side<'a, T> {
    Side {
        target: two.target,
        n: two.n,
        cursors: vec![two.n / 4],
    }
}
