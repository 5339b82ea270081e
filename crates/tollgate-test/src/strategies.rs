//! Proptest strategies shared by the property tests that compare a store with tollgate-core's
//! pure algorithms: random limits of every algorithm, and random steps (time moving, spends,
//! peeks, settlements) to apply to a bucket and to the model alike.

use std::time::Duration;

use proptest::prelude::*;
use tollgate::{Algorithm, LimitKind, LimitSpec, UtcOffset, Window};
use tollgate_core::Limit;

/// One thing that happens to a bucket.
#[derive(Clone, Debug)]
pub enum Step {
    /// Time moves forwards by this many microseconds.
    Advance(u64),
    /// Time moves backwards by this many microseconds.
    Back(u64),
    /// A decision that spends this cost.
    Spend(u64),
    /// A decision that only looks.
    Peek(u64),
    /// The last spend is refunded by this cost.
    Refund(u64),
    /// The last spend is charged this much more.
    Charge(u64),
    /// The last lease is released.
    Release,
    /// The last lease is renewed.
    Renew,
    /// The store forgets every full bucket (where it has such a thing).
    Sweep,
}

/// Steps, mostly spends and time moving forwards.
pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..5_000_000).prop_map(Step::Advance),
        1 => (0u64..2_000_000).prop_map(Step::Back),
        6 => (0u64..40).prop_map(Step::Spend),
        2 => (0u64..40).prop_map(Step::Peek),
        2 => (0u64..40).prop_map(Step::Refund),
        1 => (0u64..60).prop_map(Step::Charge),
        1 => Just(Step::Release),
        1 => Just(Step::Renew),
        1 => Just(Step::Sweep),
    ]
}

/// A small limit of any algorithm: GCRA (twice as often: it is the default, and the stores
/// have their own paths for it), sliding window, sliding log, a calendar day or month at any
/// UTC offset, or concurrency with a short lease.
pub fn limit() -> impl Strategy<Value = Limit> {
    let windows = prop_oneof![
        Just(Window::SECOND),
        Just(Window::MINUTE),
        Just(Window::Length(Duration::from_millis(1500))),
        Just(Window::HOUR),
    ];
    // Every generated spec is valid; were one not, proptest would count it as rejected.
    (0usize..6, 1u64..30, windows, 1u64..40, -86_399i32..86_400).prop_filter_map(
        "a valid limit",
        |(alg, amount, window, burst, off)| {
            let spec = match alg {
                0 | 5 => LimitSpec::new(LimitKind::Tokens, amount, window).burst(burst),
                1 => LimitSpec::new(LimitKind::Tokens, amount, window)
                    .algorithm(Algorithm::SlidingWindow),
                2 => LimitSpec::new(LimitKind::Tokens, amount, window)
                    .algorithm(Algorithm::SlidingLog),
                3 => LimitSpec::new(
                    LimitKind::Tokens,
                    amount,
                    if off % 2 == 0 {
                        Window::Month
                    } else {
                        Window::DAY
                    },
                )
                .algorithm(Algorithm::FixedWindow)
                .utc_offset(UtcOffset::from_seconds(off).unwrap_or_default()),
                _ => LimitSpec::concurrency(amount % 5 + 1).lease(Duration::from_secs(3)),
            };
            spec.build().ok()
        },
    )
}
