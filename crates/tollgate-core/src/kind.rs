//! What a limit counts and how it decides: the two vocabularies every other module names.
//!
//! Nothing here depends on the rest of the crate. Their configuration names are read back by
//! the `FromStr` implementations in `names.rs`, beside the error they return.

use std::fmt;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitKind {
    /// Calls.
    Requests,
    /// Tokens (input and output together).
    Tokens,
    /// Prompt tokens only.
    InputTokens,
    /// Completion tokens only.
    OutputTokens,
    /// Calls in flight at the same time.
    Concurrency,
}

impl LimitKind {
    /// All kinds, in a fixed order.
    pub const ALL: [LimitKind; 5] = [
        LimitKind::Requests,
        LimitKind::Tokens,
        LimitKind::InputTokens,
        LimitKind::OutputTokens,
        LimitKind::Concurrency,
    ];

    /// The name used in configuration and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::InputTokens => "input_tokens",
            LimitKind::OutputTokens => "output_tokens",
            LimitKind::Concurrency => "concurrency",
        }
    }

    /// Whether a reservation of this kind is settled against actual usage.
    pub const fn is_token_kind(self) -> bool {
        matches!(
            self,
            LimitKind::Tokens | LimitKind::InputTokens | LimitKind::OutputTokens
        )
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a limit decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// The generic cell rate algorithm with token-bucket semantics: smooth refill, bursts up to
    /// `burst`. One timestamp of state.
    Gcra,
    /// A rolling window approximated from the previous and current fixed windows. Two counters.
    SlidingWindow,
    /// An exact rolling window that remembers every admitted call. Best for small limits.
    SlidingLog,
    /// A counter that resets at each window boundary, aligned to the calendar.
    FixedWindow,
    /// Leases on in-flight slots, each with an expiry.
    Concurrency,
}

impl Algorithm {
    /// All algorithms, in a fixed order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::SlidingLog,
        Algorithm::FixedWindow,
        Algorithm::Concurrency,
    ];

    /// The name used in configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Gcra => "gcra",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::SlidingLog => "sliding_log",
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::Concurrency => "concurrency",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
