//! The one error type of the core crate.

use std::time::Duration;

use crate::kind::{Algorithm, LimitKind};

/// Why a limit could not be built. Each variant names the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// `amount` was zero.
    #[error("must be at least 1")]
    ZeroAmount,
    /// `per` was a zero duration.
    #[error("the window must be longer than zero")]
    ZeroWindow,
    /// `per` was longer than ten years.
    #[error("the window {0:?} is longer than the maximum of ten years")]
    WindowTooLong(Duration),
    /// `per` could not be read.
    #[error("{0:?} is not a window (second, minute, hour, day, month, or a duration like 30s)")]
    BadWindow(String),
    /// `burst` was zero.
    #[error("must be at least 1 unit")]
    ZeroBurst,
    /// `burst` was set on an algorithm that has none.
    #[error("the {0} algorithm has no burst (only gcra does)")]
    BurstUnsupported(Algorithm),
    /// `per = "month"` on a rolling algorithm.
    #[error("a calendar month needs algorithm = \"fixed_window\" ({0} windows have a fixed length; use e.g. per = \"30d\")")]
    MonthNeedsFixedWindow(Algorithm),
    /// The algorithm cannot count this kind.
    #[error("{algorithm} cannot serve a {kind} limit")]
    KindAlgorithmMismatch {
        /// The kind of the limit.
        kind: LimitKind,
        /// The algorithm asked for.
        algorithm: Algorithm,
    },
    /// `lease` was zero.
    #[error("must be longer than zero")]
    ZeroLease,
    /// `kind` was not one of the known kinds.
    #[error(
        "{0:?} is not a limit kind (requests, tokens, input_tokens, output_tokens, concurrency)"
    )]
    UnknownKind(String),
    /// `algorithm` was not one of the known algorithms.
    #[error(
        "{0:?} is not an algorithm (gcra, sliding_window, sliding_log, fixed_window, concurrency)"
    )]
    UnknownAlgorithm(String),
    /// `utc_offset` could not be read.
    #[error("{0:?} is not an offset like +05:30, -08:00 or Z (strictly within 24 hours)")]
    BadUtcOffset(String),
}

impl LimitError {
    /// The configuration field at fault: `amount`, `per`, `burst`, `algorithm`, `lease`, `kind`
    /// or `utc_offset`.
    pub fn field(&self) -> &'static str {
        match self {
            LimitError::ZeroAmount => "amount",
            LimitError::ZeroWindow
            | LimitError::WindowTooLong(_)
            | LimitError::BadWindow(_)
            | LimitError::MonthNeedsFixedWindow(_) => "per",
            LimitError::ZeroBurst | LimitError::BurstUnsupported(_) => "burst",
            LimitError::KindAlgorithmMismatch { .. } | LimitError::UnknownAlgorithm(_) => {
                "algorithm"
            }
            LimitError::ZeroLease => "lease",
            LimitError::UnknownKind(_) => "kind",
            LimitError::BadUtcOffset(_) => "utc_offset",
        }
    }
}
