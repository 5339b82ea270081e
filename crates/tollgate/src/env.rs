//! Configuration from the environment variables that rate limiters are commonly run with.
//!
//! Services that already configure a rate limiter through the environment set `REDIS_URL` (the
//! shared store) and `TOKEN_BUCKET_SIZE` / `TOKEN_REFILL_RATE` (one token bucket per agent). This
//! module reads those variables into an [`EnvConfig`], so that such a service can move to
//! tollgate without changing its deployment:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `REDIS_URL` | the Redis store, such as `redis://:secret@10.0.0.5:6379/0` |
//! | `TOKEN_BUCKET_SIZE` | the most tokens one agent's bucket holds (a whole number, at least 1) |
//! | `TOKEN_REFILL_RATE` | tokens added to each bucket per second (a decimal such as `10` or `0.5`) |
//!
//! The two bucket variables go together: setting one without the other is an error rather
//! than a guess. An empty value counts as unset (as `docker compose` leaves `VAR=`).
//!
//! ```
//! use tollgate::env::EnvConfig;
//!
//! let env = EnvConfig::from_vars([
//!     ("REDIS_URL".to_string(), "redis://localhost:6379/0".to_string()),
//!     ("TOKEN_BUCKET_SIZE".to_string(), "1000".to_string()),
//!     ("TOKEN_REFILL_RATE".to_string(), "10.0".to_string()),
//! ])?;
//! assert_eq!(env.redis_url.as_deref(), Some("redis://localhost:6379/0"));
//! let policy = env.policy.expect("both bucket variables are set");
//! assert_eq!(policy.rules()[0].name(), tollgate::env::TOKEN_BUCKET_RULE);
//! # Ok::<(), tollgate::env::EnvError>(())
//! ```

use std::fmt;
use std::time::Duration;

use tollgate_core::{LimitKind, LimitSpec, Window, MAX_WINDOW};

use crate::policy::{Policy, Rule};

/// The variable naming the Redis store.
pub const REDIS_URL: &str = "REDIS_URL";
/// The variable giving the size of each agent's token bucket.
pub const TOKEN_BUCKET_SIZE: &str = "TOKEN_BUCKET_SIZE";
/// The variable giving the refill rate (tokens per second) of each agent's token bucket.
pub const TOKEN_REFILL_RATE: &str = "TOKEN_REFILL_RATE";
/// The name of the rule [`EnvConfig::policy`] holds.
pub const TOKEN_BUCKET_RULE: &str = "agent-token-bucket";

/// The most decimal places `TOKEN_REFILL_RATE` may have: the refill is exact to the microsecond
/// only down to that precision, and the window it implies must stay within the longest window.
const MAX_RATE_DECIMALS: u32 = 6;

/// What the environment configures. Every field is `None` when its variables are unset.
#[derive(Clone)]
#[non_exhaustive]
pub struct EnvConfig {
    /// `REDIS_URL`: the Redis store to keep buckets in. Redacted in `Debug`.
    pub redis_url: Option<String>,
    /// `TOKEN_BUCKET_SIZE` and `TOKEN_REFILL_RATE`: a policy of one rule,
    /// [`TOKEN_BUCKET_RULE`], giving each agent (the subject's `agent` attribute) a bucket of
    /// tokens of that size refilled at that rate. A call's cost in tokens is what it takes from
    /// its agent's bucket.
    pub policy: Option<Policy>,
    /// The bucket the policy was built from.
    pub token_bucket: Option<TokenBucket>,
}

/// The per-agent token bucket configured by `TOKEN_BUCKET_SIZE` and `TOKEN_REFILL_RATE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// The most tokens a bucket holds (its burst).
    pub size: u64,
    /// Tokens added per `refill_every`.
    pub refill_tokens: u64,
    /// The period over which `refill_tokens` are added: `TOKEN_REFILL_RATE` as an exact
    /// fraction, so `0.5` is one token every two seconds.
    pub refill_every: Duration,
}

impl TokenBucket {
    /// The limit this bucket is: GCRA over tokens, `refill_tokens` per `refill_every`, with a
    /// burst of `size`.
    pub fn limit(&self) -> LimitSpec {
        LimitSpec::new(
            LimitKind::Tokens,
            self.refill_tokens,
            Window::Length(self.refill_every),
        )
        .burst(self.size)
    }

    /// A policy of one rule, [`TOKEN_BUCKET_RULE`], with one such bucket per agent.
    ///
    /// # Errors
    /// A [`PolicyError`](crate::PolicyError) if the limit cannot be built (it always can for a
    /// bucket read by [`EnvConfig`]).
    pub fn policy(&self) -> Result<Policy, crate::PolicyError> {
        Policy::builder()
            .rule(
                Rule::builder(TOKEN_BUCKET_RULE)
                    .per("agent")
                    .limit(self.limit()),
            )
            .build()
    }
}

impl fmt::Debug for EnvConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("token_bucket", &self.token_bucket)
            .finish_non_exhaustive()
    }
}

/// An environment variable with a value tollgate cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The value is not valid UTF-8.
    #[error("{var}: not valid UTF-8")]
    NotUnicode {
        /// The variable.
        var: &'static str,
    },
    /// The value is malformed or out of range. The message never repeats a secret.
    #[error("{var}: {message}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What is wrong, such as `must be a whole number of at least 1, got "ten"`.
        message: String,
    },
    /// A variable that only makes sense with another was set alone.
    #[error("{var} is set but {missing} is not: set both (bucket size in tokens, refill rate in tokens per second)")]
    Incomplete {
        /// The variable that is set.
        var: &'static str,
        /// The variable that is missing.
        missing: &'static str,
    },
}

impl EnvError {
    /// The variable at fault.
    pub fn var(&self) -> &'static str {
        match self {
            EnvError::NotUnicode { var }
            | EnvError::Invalid { var, .. }
            | EnvError::Incomplete { var, .. } => var,
        }
    }
}

impl EnvConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// An [`EnvError`] naming the first variable that is set to something unusable.
    pub fn read() -> Result<EnvConfig, EnvError> {
        let mut vars = Vec::new();
        for var in [REDIS_URL, TOKEN_BUCKET_SIZE, TOKEN_REFILL_RATE] {
            match std::env::var(var) {
                Ok(v) => vars.push((var.to_owned(), v)),
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(EnvError::NotUnicode { var });
                }
            }
        }
        EnvConfig::from_vars(vars)
    }

    /// Reads `vars` as if they were the environment (other names are ignored; the last of a
    /// repeated name wins), so that configurations can be tested without touching the process
    /// environment.
    ///
    /// # Errors
    /// An [`EnvError`] naming the first variable that is set to something unusable.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<EnvConfig, EnvError> {
        let (mut redis_url, mut size, mut rate) = (None, None, None);
        for (name, value) in vars {
            let slot = match name.as_str() {
                REDIS_URL => &mut redis_url,
                TOKEN_BUCKET_SIZE => &mut size,
                TOKEN_REFILL_RATE => &mut rate,
                _ => continue,
            };
            let value = value.trim().to_owned();
            *slot = (!value.is_empty()).then_some(value);
        }
        if let Some(url) = &redis_url {
            check_redis_url(url)?;
        }
        let token_bucket = match (size, rate) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(EnvError::Incomplete {
                    var: TOKEN_BUCKET_SIZE,
                    missing: TOKEN_REFILL_RATE,
                })
            }
            (None, Some(_)) => {
                return Err(EnvError::Incomplete {
                    var: TOKEN_REFILL_RATE,
                    missing: TOKEN_BUCKET_SIZE,
                })
            }
            (Some(size), Some(rate)) => {
                let size = parse_size(&size)?;
                let (refill_tokens, refill_every) = parse_rate(&rate)?;
                Some(TokenBucket {
                    size,
                    refill_tokens,
                    refill_every,
                })
            }
        };
        let policy = match &token_bucket {
            None => None,
            Some(b) => Some(b.policy().map_err(|e| EnvError::Invalid {
                var: TOKEN_REFILL_RATE,
                message: e.to_string(),
            })?),
        };
        Ok(EnvConfig {
            redis_url,
            policy,
            token_bucket,
        })
    }

    /// Nothing configured: what an environment without any of the variables reads as.
    pub fn empty() -> EnvConfig {
        EnvConfig {
            redis_url: None,
            policy: None,
            token_bucket: None,
        }
    }
}

/// Refuses what is not a Redis URL, without repeating the URL (it may hold a password).
fn check_redis_url(url: &str) -> Result<(), EnvError> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("redis" | "rediss" | "redis+unix" | "unix") => Ok(()),
        Some(other) => Err(EnvError::Invalid {
            var: REDIS_URL,
            message: format!(
                "unsupported scheme {other:?}: use redis://, rediss:// or redis+unix://"
            ),
        }),
        None => Err(EnvError::Invalid {
            var: REDIS_URL,
            message: "not a URL: expected redis://[:password@]host[:port][/db]".to_owned(),
        }),
    }
}

/// `url` with any password replaced by `***`, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                // `redis://secret@host` puts the password in the user part.
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

fn parse_size(value: &str) -> Result<u64, EnvError> {
    match value.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(EnvError::Invalid {
            var: TOKEN_BUCKET_SIZE,
            message: format!("must be a whole number of tokens, at least 1; got {value:?}"),
        }),
    }
}

/// Parses a decimal rate per second into an exact `(tokens, per)` pair in lowest terms:
/// `10` → 10 per second, `0.5` → 1 per 2 seconds, `2.25` → 9 per 4 seconds.
fn parse_rate(value: &str) -> Result<(u64, Duration), EnvError> {
    let bad = |why: &str| EnvError::Invalid {
        var: TOKEN_REFILL_RATE,
        message: format!("{why}; got {value:?}"),
    };
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return Err(bad(
            "must be a decimal number of tokens per second, such as 10 or 0.5",
        ));
    }
    let frac = frac.trim_end_matches('0');
    let decimals = u32::try_from(frac.len()).unwrap_or(u32::MAX);
    if decimals > MAX_RATE_DECIMALS {
        return Err(bad("at most 6 decimal places"));
    }
    let denominator = 10u64.pow(decimals);
    let digits = format!("{int}{frac}");
    let numerator = digits.trim_start_matches('0').parse::<u64>().or_else(|_| {
        if digits.bytes().all(|b| b == b'0') {
            Ok(0)
        } else {
            Err(bad("too large"))
        }
    })?;
    if numerator == 0 {
        return Err(bad("must be more than 0"));
    }
    let g = gcd(numerator, denominator);
    let (tokens, seconds) = (numerator / g, denominator / g);
    let per = Duration::from_secs(seconds);
    if per > MAX_WINDOW {
        return Err(bad("too small"));
    }
    Ok((tokens, per))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn nothing_set_configures_nothing() {
        let env = EnvConfig::from_vars(vars(&[("PATH", "/bin")])).unwrap();
        assert!(env.redis_url.is_none());
        assert!(env.policy.is_none());
        assert!(env.token_bucket.is_none());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = EnvConfig::from_vars(vars(&[
            (REDIS_URL, ""),
            (TOKEN_BUCKET_SIZE, " "),
            (TOKEN_REFILL_RATE, ""),
        ]))
        .unwrap();
        assert!(env.redis_url.is_none() && env.policy.is_none());
    }

    #[test]
    fn the_bucket_variables_make_one_bucket_per_agent() {
        let env = EnvConfig::from_vars(vars(&[
            (TOKEN_BUCKET_SIZE, "1000"),
            (TOKEN_REFILL_RATE, "10.0"),
        ]))
        .unwrap();
        let b = env.token_bucket.unwrap();
        assert_eq!(
            (b.size, b.refill_tokens, b.refill_every),
            (1000, 10, Duration::from_secs(1))
        );
        let policy = env.policy.unwrap();
        let rule = &policy.rules()[0];
        assert_eq!(rule.name(), TOKEN_BUCKET_RULE);
        assert_eq!(rule.partition(), &[crate::Attr::Agent]);
        let limit = rule.limits_for(&crate::Subject::new().agent("a")).limits()[0].limit();
        assert_eq!(
            (limit.kind(), limit.capacity(), limit.amount()),
            (LimitKind::Tokens, 1000, 10)
        );
    }

    #[test]
    fn fractional_rates_are_exact() {
        for (rate, want) in [
            ("0.5", (1, 2)),
            ("2.25", (9, 4)),
            ("10", (10, 1)),
            ("0.000001", (1, 1_000_000)),
            ("007.50", (15, 2)),
            (".5", (1, 2)),
        ] {
            let (t, per) = parse_rate(rate).unwrap();
            assert_eq!((t, per.as_secs()), want, "{rate}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (pairs, var, needle) in [
            (
                vec![(TOKEN_BUCKET_SIZE, "ten"), (TOKEN_REFILL_RATE, "1")],
                TOKEN_BUCKET_SIZE,
                "whole number",
            ),
            (
                vec![(TOKEN_BUCKET_SIZE, "0"), (TOKEN_REFILL_RATE, "1")],
                TOKEN_BUCKET_SIZE,
                "at least 1",
            ),
            (
                vec![(TOKEN_BUCKET_SIZE, "10"), (TOKEN_REFILL_RATE, "-1")],
                TOKEN_REFILL_RATE,
                "decimal",
            ),
            (
                vec![(TOKEN_BUCKET_SIZE, "10"), (TOKEN_REFILL_RATE, "0.0")],
                TOKEN_REFILL_RATE,
                "more than 0",
            ),
            (
                vec![(TOKEN_BUCKET_SIZE, "10"), (TOKEN_REFILL_RATE, "1e3")],
                TOKEN_REFILL_RATE,
                "decimal",
            ),
            (
                vec![(TOKEN_BUCKET_SIZE, "10"), (TOKEN_REFILL_RATE, "0.0000001")],
                TOKEN_REFILL_RATE,
                "6 decimal places",
            ),
            (
                vec![(TOKEN_BUCKET_SIZE, "10")],
                TOKEN_BUCKET_SIZE,
                "TOKEN_REFILL_RATE is not",
            ),
            (
                vec![(TOKEN_REFILL_RATE, "1")],
                TOKEN_REFILL_RATE,
                "TOKEN_BUCKET_SIZE is not",
            ),
            (
                vec![(REDIS_URL, "http://:hunter2@h")],
                REDIS_URL,
                "unsupported scheme",
            ),
            (vec![(REDIS_URL, "localhost:6379")], REDIS_URL, "not a URL"),
        ] {
            let err = EnvConfig::from_vars(vars(&pairs)).unwrap_err();
            assert_eq!(err.var(), var, "{pairs:?}");
            let text = err.to_string();
            assert!(text.starts_with(var), "{text}");
            assert!(text.contains(needle), "{text} lacks {needle}");
            assert!(!text.contains("hunter2"), "{text} repeats a secret");
        }
    }

    #[test]
    fn debug_hides_the_redis_password() {
        let env = EnvConfig::from_vars(vars(&[(REDIS_URL, "redis://:hunter2@h:6379/1")])).unwrap();
        let text = format!("{env:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://:***@h:6379/1"), "{text}");
        assert_eq!(redact_url("redis://u:p@h/0"), "redis://u:***@h/0");
        assert_eq!(redact_url("redis://p@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:1/2"), "redis://h:1/2");
    }
}
