//! The error types of the `tollgate` crate.
//!
//! A denial is not an error: it is a [`Decision`](crate::Decision). Errors are what prevents a
//! decision at all: an invalid policy, or a store that could not answer.

use std::fmt;

/// Where in a file something was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file's path as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A policy that cannot be built, naming the rule and the field (and, for files, the place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The rule at fault, if the error is inside one.
    pub rule: Option<String>,
    /// The field at fault, such as `limits[1].burst` or `overrides[0].match.tenant`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
    /// Where the field is, when the policy came from a file.
    pub location: Option<Location>,
}

impl PolicyError {
    pub(crate) fn new(rule: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            rule: Some(rule.to_owned()),
            field: field.into(),
            message: message.into(),
            location: None,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule:?}: ")?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Why a store could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer in time; the operation may or may not have been applied.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The store could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The store answered something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The store cannot serve this limit or value (e.g. arithmetic beyond its exact range).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl StoreError {
    /// Whether trying again later may succeed (the store is down or slow, not broken).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Timeout(_) | StoreError::Unavailable(_))
    }
}

/// The error type of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy is invalid.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// No rule has this name.
    #[error("no rule named {0:?}")]
    UnknownRule(String),
    /// A call's own limits cannot be applied (they loosen the policy without permission,
    /// or change nothing that applies).
    #[error("call limits: {0}")]
    CallLimits(#[from] CallLimitsError),
    /// A policy file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_transient())
    }
}

/// Why a call's own limits cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallLimitsError {
    /// The call asked for more than the policy gives without being allowed to.
    #[error(
        "{field}: {asked} is looser than rule {rule:?}'s {policy}; loosening needs permission"
    )]
    Loosens {
        /// The call limit, such as `requests per minute`.
        field: String,
        /// The rule whose limit it would loosen.
        rule: &'static str,
        /// The policy's amount.
        policy: u64,
        /// The amount asked for.
        asked: u64,
    },
    /// No limit of that kind and window applies to the call.
    #[error("{field}: no {field} limit applies to this call, so there is nothing to change")]
    NothingToChange {
        /// The call limit, such as `requests per minute`.
        field: String,
    },
    /// The amount is zero, or the derived limit is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The call limit.
        field: String,
        /// What is wrong.
        message: String,
    },
}
