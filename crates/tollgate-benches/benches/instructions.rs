//! One in-process case run a given number of times, for valgrind's callgrind to count the
//! instructions of a decision: `instructions.sh` runs each case twice with different numbers of
//! calls, counting only inside [`measured`], and divides the difference of the two counts by
//! the difference of the calls, which takes out whatever the first calls do once.
//!
//! `cargo bench -p tollgate-benches --bench instructions -- <case> <calls>` runs a case
//! natively (nothing is printed); the cases are those of [`CASES`], all on one key (every line in
//! cache), after a fill and a spot check.

use std::hint::black_box;

use tollgate::{Cost, Limiter};
use tollgate_benches::{
    fill, single_limit, spot_check, three_limits, Mode, Target, Tollgate, TollgatePrepared,
};

/// Every case: `<call>/<limits>/<mode>`, where `<call>` is `admit` (`admit_prepared_now`),
/// `prepared` (`check_prepared_now`) or `check_now` (by subject, matched against the policy on
/// every call), and `<limits>` is `one` (a GCRA requests limit) or `three` (requests, tokens and
/// concurrency, at a cost of 1,000 tokens).
const CASES: [&str; 8] = [
    "admit/one/admitted",
    "admit/one/denied",
    "admit/three/admitted",
    "admit/three/denied",
    "prepared/one/admitted",
    "prepared/one/denied",
    "check_now/one/admitted",
    "check_now/one/denied",
];

/// The one call that callgrind counts (`--toggle-collect=*measured*`): kept out of line so that
/// its instructions are the decision's and the call's, not the loop's.
#[inline(never)]
fn measured<T: Target>(target: &T) -> bool {
    target.check(0)
}

fn drive<T: Target>(target: T, admits: bool, calls: u64) {
    fill(&target, 1);
    spot_check(&target, 1, admits, "before");
    for _ in 0..calls {
        black_box(measured(black_box(&target)));
    }
    spot_check(&target, 1, admits, "after");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let [case, calls] = args.as_slice() else {
        eprintln!(
            "usage: instructions <case> <calls>; cases: {}",
            CASES.join(", ")
        );
        std::process::exit(2);
    };
    let calls: u64 = calls.parse().expect("<calls> is a number");
    let parts: Vec<&str> = case.split('/').collect();
    let [call, limits, mode] = parts.as_slice() else {
        panic!("a case is <call>/<limits>/<mode>: {case}");
    };
    let mode = match *mode {
        "admitted" => Mode::Admitted,
        "denied" => Mode::Denied,
        other => panic!("unknown mode {other}"),
    };
    let (policy, cost) = match *limits {
        "one" => (single_limit(mode.requests()), Cost::ONE),
        "three" => (three_limits(mode), Cost::tokens(1_000)),
        other => panic!("unknown limits {other}"),
    };
    let keys = vec!["tenant-0".to_string()];
    let limiter = Limiter::with_policy(policy);
    match *call {
        "admit" => drive(
            TollgatePrepared::new(limiter, &keys, cost, true),
            mode.admits(),
            calls,
        ),
        "prepared" => drive(
            TollgatePrepared::new(limiter, &keys, cost, false),
            mode.admits(),
            calls,
        ),
        "check_now" => drive(
            Tollgate {
                limiter,
                keys: &keys,
                cost,
                asynchronous: false,
            },
            mode.admits(),
            calls,
        ),
        other => panic!("unknown call {other}"),
    }
}
