//! Learned upstream limits: the providers' own rate-limit headers slow the gateway down
//! before the provider starts refusing.
//!
//! The rule:
//!
//! 1. **The provider's limit, shared by the fleet.** When an upstream reports its limits
//!    (`x-ratelimit-limit-{requests,tokens}`, `anthropic-ratelimit-{requests,tokens}-limit`),
//!    the gateway adds a rule `learned.<upstream>` that allows `headroom` × that many requests
//!    and tokens per minute (the providers' limits are per minute), per caller in passthrough
//!    mode (each client key has its own provider limits) and for the whole upstream in
//!    managed mode (one key). The rule's buckets live in the same store as the policy's, so
//!    that with Redis every instance of a fleet spends from one bucket and the fleet as a
//!    whole stays under the provider's limit. A changed report replaces the rule (a limit that
//!    changes starts a fresh bucket); the same report changes nothing.
//! 2. **An exhausted provider holds calls back.** When an upstream reports nothing remaining
//!    of a dimension (`remaining = 0`), calls of that caller to that upstream are refused
//!    (429 in the provider's shape, `retry-after` until the reported reset) without being
//!    sent, until the reset: the provider would refuse them, and sending them would only
//!    spend its quota of errors. Each instance learns this from its own answers.
//!
//! Learned limits are reserved after the policy's and settled with the same usage; a call the
//! learned rule refuses has its policy reservation cancelled (spends nothing).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tollgate::store::Store;
use tollgate::{Cost, LimitKind, LimitSpec, Limiter, Policy, Reservation, Rule, Subject, Window};

use crate::config::{KeyMode, LearnedConfig};
use crate::provider::Observed;

/// The provider limits learned so far, and the holds of exhausted upstreams.
pub struct Learned<S: Store> {
    limiter: Limiter<S>,
    config: LearnedConfig,
    per_tenant: bool,
    limits: Mutex<HashMap<String, Learnt>>,
    holds: Mutex<HashMap<(String, String), Instant>>,
}

impl<S: Store> std::fmt::Debug for Learned<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learned")
            .field("limits", &*self.limits.lock())
            .finish_non_exhaustive()
    }
}

/// The requests and tokens per minute an upstream reported.
type Learnt = (Option<u64>, Option<u64>);

/// The most holds kept (callers × upstreams); beyond it expired holds are swept first, and
/// new holds are not recorded.
const MAX_HOLDS: usize = 100_000;

/// The answer of the learned limits for one call.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned once per call, and moved into the ticket
pub enum Gate<S: Store> {
    /// Nothing learned applies.
    Open,
    /// Admitted by the learned rule: the permit to settle with the call.
    Granted(tollgate::Permit<S>),
    /// The learned rule refused: its decision.
    Denied(tollgate::Decision),
    /// The upstream reported itself exhausted for this caller: wait this long.
    Held(Duration),
}

impl<S: Store> Learned<S> {
    /// Learned limits kept in `store`.
    pub fn new(store: S, config: LearnedConfig, mode: KeyMode) -> Self {
        Learned {
            limiter: Limiter::with_store(
                Policy::new(std::iter::empty::<Rule>())
                    .unwrap_or_else(|_| tollgate::default_policy()),
                store,
            ),
            config,
            per_tenant: mode == KeyMode::Passthrough,
            limits: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
        }
    }

    /// The learned rule's name for `upstream`.
    pub fn rule_name(upstream: &str) -> String {
        format!("learned.{upstream}")
    }

    /// Reserves `cost` under the learned limits of `upstream` for `subject`.
    ///
    /// # Errors
    /// A store failure.
    pub async fn gate(
        &self,
        upstream: &str,
        subject: &Subject<'_>,
        cost: Cost,
    ) -> Result<Gate<S>, tollgate::Error> {
        if !self.config.enabled {
            return Ok(Gate::Open);
        }
        let tenant = subject
            .get(&tollgate::Attr::Tenant)
            .unwrap_or("")
            .to_owned();
        if let Some(until) = self
            .holds
            .lock()
            .get(&(upstream.to_owned(), tenant))
            .copied()
        {
            let now = Instant::now();
            if until > now {
                return Ok(Gate::Held(until - now));
            }
        }
        if !self.limits.lock().contains_key(upstream) {
            return Ok(Gate::Open);
        }
        Ok(match self.limiter.reserve(subject, cost).await? {
            Reservation::Granted(p) => Gate::Granted(p),
            Reservation::Denied(d) if d.outcome() == tollgate::Outcome::TooLarge => Gate::Open,
            Reservation::Denied(d) => Gate::Denied(d),
        })
    }

    /// Learns from an upstream's answer to `tenant`.
    pub fn observe(&self, upstream: &str, tenant: &str, seen: Observed) {
        if !self.config.enabled {
            return;
        }
        let exhausted = [seen.requests, seen.tokens]
            .into_iter()
            .flatten()
            .filter(|r| r.remaining == 0 && r.reset_secs > 0.0)
            .map(|r| Duration::from_secs_f64(r.reset_secs.min(3600.0)))
            .max();
        {
            let mut holds = self.holds.lock();
            let key = (upstream.to_owned(), tenant.to_owned());
            match exhausted {
                Some(wait) => {
                    if holds.len() >= MAX_HOLDS {
                        let now = Instant::now();
                        holds.retain(|_, until| *until > now);
                    }
                    if holds.len() < MAX_HOLDS {
                        holds.insert(key, Instant::now() + wait);
                    }
                }
                None => {
                    holds.remove(&key);
                }
            }
        }
        let reported = (
            seen.requests.and_then(|r| r.limit),
            seen.tokens.and_then(|r| r.limit),
        );
        if reported == (None, None) {
            return;
        }
        let mut limits = self.limits.lock();
        if limits.get(upstream) == Some(&reported) {
            return;
        }
        limits.insert(upstream.to_owned(), reported);
        let rules: Vec<Rule> = limits
            .iter()
            .filter_map(|(name, (req, tok))| self.rule(name, *req, *tok))
            .collect();
        match Policy::new(rules) {
            Ok(p) => {
                tracing::info!(upstream, requests = ?reported.0, tokens = ?reported.1, "learned the upstream's limits");
                self.limiter.set_policy(p);
            }
            Err(e) => tracing::warn!(error = %e, upstream, "learned limits not applied"),
        }
    }

    fn rule(&self, upstream: &str, requests: Option<u64>, tokens: Option<u64>) -> Option<Rule> {
        let scaled = |n: u64| ((n as f64) * self.config.headroom).floor().max(1.0) as u64;
        let mut b = Rule::builder(Self::rule_name(upstream)).when("provider", upstream);
        if self.per_tenant {
            b = b.per("tenant");
        }
        let mut any = false;
        if let Some(r) = requests.filter(|n| *n > 0) {
            b = b.limit(LimitSpec::new(
                LimitKind::Requests,
                scaled(r),
                Window::MINUTE,
            ));
            any = true;
        }
        if let Some(t) = tokens.filter(|n| *n > 0) {
            b = b.limit(LimitSpec::new(LimitKind::Tokens, scaled(t), Window::MINUTE));
            any = true;
        }
        if !any {
            return None;
        }
        b.build().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Reported;

    #[tokio::test]
    async fn a_reported_limit_becomes_a_rule_and_an_exhausted_one_holds() {
        let l = Learned::new(
            tollgate::MemoryStore::new(),
            LearnedConfig {
                enabled: true,
                headroom: 0.5,
            },
            KeyMode::Managed,
        );
        let who = Subject::new().tenant("acme").provider("up");
        assert!(matches!(
            l.gate("up", &who, Cost::tokens(10)).await.unwrap(),
            Gate::Open
        ));
        let seen = Observed {
            requests: Some(Reported {
                limit: Some(4),
                remaining: 3,
                reset_secs: 1.0,
            }),
            tokens: None,
        };
        l.observe("up", "acme", seen);
        // headroom 0.5 of 4 requests per minute: 2 admitted, the third refused.
        for _ in 0..2 {
            assert!(matches!(
                l.gate("up", &who, Cost::tokens(1)).await.unwrap(),
                Gate::Granted(_)
            ));
        }
        assert!(matches!(
            l.gate("up", &who, Cost::tokens(1)).await.unwrap(),
            Gate::Denied(_)
        ));
        let exhausted = Observed {
            requests: Some(Reported {
                limit: Some(4),
                remaining: 0,
                reset_secs: 30.0,
            }),
            tokens: None,
        };
        l.observe("up", "acme", exhausted);
        match l.gate("up", &who, Cost::tokens(1)).await.unwrap() {
            Gate::Held(d) => assert!(d > Duration::from_secs(29) && d <= Duration::from_secs(30)),
            other => panic!("{other:?}"),
        }
    }
}
