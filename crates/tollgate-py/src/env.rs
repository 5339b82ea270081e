//! The configuration the seeds' users set in the environment: `REDIS_URL` (the Redis store),
//! `TOKEN_BUCKET_SIZE` and `TOKEN_REFILL_RATE` (a token bucket per agent).

use std::time::Duration;

use tollgate::{LimitKind, LimitSpec, Policy, PolicyError, Rule, Window};

/// What the environment configures.
pub(crate) struct EnvConfig {
    /// `REDIS_URL`, if set and not empty.
    pub(crate) redis_url: Option<String>,
    /// The per-agent token bucket, if `TOKEN_BUCKET_SIZE` or `TOKEN_REFILL_RATE` is set.
    pub(crate) policy: Option<Policy>,
}

/// The bucket size when only the refill rate is set.
const DEFAULT_SIZE: u64 = 1_000;
/// The refill rate (tokens per second) when only the size is set.
const DEFAULT_RATE: f64 = 10.0;

impl EnvConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the variable whose value is not a valid number.
    pub(crate) fn read() -> Result<EnvConfig, PolicyError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `get` (the environment, or a map in tests).
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<EnvConfig, PolicyError> {
        let set = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let redis_url = set("REDIS_URL");
        let size = set("TOKEN_BUCKET_SIZE");
        let rate = set("TOKEN_REFILL_RATE");
        let policy = if size.is_none() && rate.is_none() {
            None
        } else {
            let size = match size {
                None => DEFAULT_SIZE,
                Some(s) => s.parse::<u64>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                    bad(
                        "TOKEN_BUCKET_SIZE",
                        &s,
                        "a whole number of tokens, at least 1",
                    )
                })?,
            };
            let rate = match rate {
                None => DEFAULT_RATE,
                Some(s) => s
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| {
                        bad(
                            "TOKEN_REFILL_RATE",
                            &s,
                            "a positive number of tokens per second",
                        )
                    })?,
            };
            Some(token_bucket(size, rate)?)
        };
        Ok(EnvConfig { redis_url, policy })
    }
}

fn bad(var: &str, value: &str, want: &str) -> PolicyError {
    PolicyError {
        rule: None,
        field: var.to_owned(),
        message: format!("{value:?} is not {want}"),
        location: None,
    }
}

/// One bucket of `size` tokens per agent, refilled at `rate` tokens per second: `size`
/// tokens per the time a full refill takes, with bursts of `size`. While a shared store
/// fails, each instance enforces the bucket locally (the `local` failure mode).
fn token_bucket(size: u64, rate: f64) -> Result<Policy, PolicyError> {
    let refill = Duration::try_from_secs_f64(size as f64 / rate).map_err(|_| {
        bad(
            "TOKEN_REFILL_RATE",
            &rate.to_string(),
            "a usable refill rate",
        )
    })?;
    Policy::builder()
        .rule(
            Rule::builder("token-bucket")
                .per("agent")
                .failure_mode(tollgate::store::FailureMode::Local)
                .limit(LimitSpec::new(LimitKind::Tokens, size, Window::Length(refill)).burst(size)),
        )
        .build()
}
