//! The library's limiter over whichever store the Python user chose, behind one type: the
//! memory store, Redis behind the fallback store (the default for Redis), or Redis alone.
//!
//! Every method here is plain Rust: owned futures that the binding runs on the engine's
//! runtime, blocking with the GIL released or as asyncio awaitables.

use std::time::Duration;

use tollgate::store::fallback::FallbackStore;
use tollgate::store::redis::RedisStore;
use tollgate::{
    Cost, Decision, Error, LimitUsage, Limiter, MemoryStore, Permit, Reservation, StatsSnapshot,
    Subject,
};

/// A limiter over one of the stores the binding offers. Cheap to clone (the limiter is).
#[derive(Clone)]
pub(crate) enum Backend {
    /// The in-memory store: every decision is made at once.
    Memory(Limiter<MemoryStore>),
    /// Redis behind the fallback store (deadline, breaker, the rules' failure modes).
    Fallback(Limiter<FallbackStore<RedisStore>>),
    /// Redis alone: a store that cannot answer is an error.
    Redis(Limiter<RedisStore>),
}

/// Runs `$body` with `$l` bound to the limiter, whatever its store.
macro_rules! with_limiter {
    ($backend:expr, $l:pat => $body:expr) => {
        match $backend {
            Backend::Memory($l) => $body,
            Backend::Fallback($l) => $body,
            Backend::Redis($l) => $body,
        }
    };
}

/// What `acquire` got: a permit (settled by the binding) or the denial. (Moved once per
/// `acquire`, so the size of the permit does not matter.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Acquired {
    Granted(Fresh),
    Denied(Decision),
}

impl<S: tollgate::store::Store> From<Reservation<S>> for Acquired
where
    AnyPermit: From<Permit<S>>,
{
    fn from(r: Reservation<S>) -> Self {
        match r {
            Reservation::Granted(p) => Acquired::Granted(Fresh(Some(AnyPermit::from(p)))),
            Reservation::Denied(d) => Acquired::Denied(d),
        }
    }
}

/// A permit not yet handed to Python. If it never is (the task that awaited it was
/// cancelled, or the awaitable was never awaited), dropping it cancels the reservation: the
/// tokens are refunded and the slot released, as if the call had not been made.
pub(crate) struct Fresh(Option<AnyPermit>);

impl Fresh {
    /// The permit, now Python's to settle.
    pub(crate) fn take(mut self) -> Option<AnyPermit> {
        self.0.take()
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            crate::engine::detach(async move {
                // A refund that fails leaves the lease to expire: nothing more can be done
                // for a caller that is gone.
                let _ = p.cancel().await;
            });
        }
    }
}

impl Backend {
    /// The decision for `subject` and `cost` if the store makes it at once (the memory store
    /// does), spending it unless `peek`.
    pub(crate) fn decide_now(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        peek: bool,
    ) -> Option<Result<Decision, Error>> {
        match self {
            Backend::Memory(l) if peek => l.peek_now(subject, cost),
            Backend::Memory(l) => l.check_now(subject, cost),
            _ => None,
        }
    }

    /// The decision, waiting for the store.
    pub(crate) async fn decide(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        peek: bool,
    ) -> Result<Decision, Error> {
        with_limiter!(self, l => if peek {
            l.peek(subject, cost).await
        } else {
            l.check(subject, cost).await
        })
    }

    /// Waits up to `max_wait` to be admitted; a permit, or the denial.
    pub(crate) async fn acquire(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        max_wait: Duration,
    ) -> Result<Acquired, Error> {
        with_limiter!(self, l => l.acquire(subject, cost, max_wait).await.map(Acquired::from))
    }

    /// The usage of every applicable limit.
    pub(crate) async fn usage(&self, subject: &Subject<'_>) -> Result<Vec<LimitUsage>, Error> {
        with_limiter!(self, l => l.usage(subject).await)
    }

    /// Forgets the buckets of every limit that applies to `subject`, or only those of `rule`;
    /// how many buckets that is.
    pub(crate) async fn reset(
        &self,
        subject: &Subject<'_>,
        rule: Option<&str>,
    ) -> Result<u64, Error> {
        match rule {
            Some(rule) => with_limiter!(self, l => l.reset_in(rule, subject).await),
            None => with_limiter!(self, l => l.reset(subject).await),
        }
    }

    /// Forgets every bucket of `rule`.
    pub(crate) async fn reset_rule(&self, rule: &str) -> Result<u64, Error> {
        with_limiter!(self, l => l.reset_rule(rule).await)
    }

    /// Decision counts.
    pub(crate) fn stats(&self) -> StatsSnapshot {
        with_limiter!(self, l => l.stats())
    }

    /// The current policy.
    pub(crate) fn policy(&self) -> std::sync::Arc<tollgate::Policy> {
        with_limiter!(self, l => l.policy())
    }

    /// Replaces the policy (unchanged limits keep their buckets).
    pub(crate) fn set_policy(&self, policy: tollgate::Policy) {
        with_limiter!(self, l => l.set_policy(policy))
    }

    /// The store's name, for `repr`.
    pub(crate) fn store_name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Fallback(_) => "redis+fallback",
            Backend::Redis(_) => "redis",
        }
    }

    /// The state of the fallback store's breaker (`closed`, `open`, `half_open`), for a
    /// limiter on Redis behind it.
    pub(crate) fn breaker(&self) -> Option<&'static str> {
        use tollgate::store::fallback::BreakerState;
        match self {
            Backend::Fallback(l) => Some(match l.store().breaker_state() {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half_open",
            }),
            _ => None,
        }
    }
}

/// A granted permit over one of the stores.
pub(crate) enum AnyPermit {
    Memory(Permit<MemoryStore>),
    Fallback(Permit<FallbackStore<RedisStore>>),
    Redis(Permit<RedisStore>),
}

impl From<Permit<MemoryStore>> for AnyPermit {
    fn from(p: Permit<MemoryStore>) -> Self {
        AnyPermit::Memory(p)
    }
}

impl From<Permit<FallbackStore<RedisStore>>> for AnyPermit {
    fn from(p: Permit<FallbackStore<RedisStore>>) -> Self {
        AnyPermit::Fallback(p)
    }
}

impl From<Permit<RedisStore>> for AnyPermit {
    fn from(p: Permit<RedisStore>) -> Self {
        AnyPermit::Redis(p)
    }
}

/// Runs `$body` with `$p` bound to the permit, whatever its store.
macro_rules! with_permit {
    ($permit:expr, $p:pat => $body:expr) => {
        match $permit {
            AnyPermit::Memory($p) => $body,
            AnyPermit::Fallback($p) => $body,
            AnyPermit::Redis($p) => $body,
        }
    };
}

impl AnyPermit {
    /// The decision that granted the permit.
    pub(crate) fn decision(&self) -> &Decision {
        with_permit!(self, p => p.decision())
    }

    /// Settles against `actual` and releases the slots.
    pub(crate) async fn commit(self, actual: Cost) -> Result<(), Error> {
        with_permit!(self, mut p => p.commit(actual).await)
    }

    /// Refunds everything and releases the slots.
    pub(crate) async fn cancel(self) -> Result<(), Error> {
        with_permit!(self, mut p => p.cancel().await)
    }

    /// Extends the concurrency leases; whether every slot was still held.
    pub(crate) async fn renew(&self) -> Result<bool, Error> {
        with_permit!(self, p => p.renew().await)
    }

    /// Renews the leases every `every` in the background until the permit is settled.
    pub(crate) fn keep_alive(&mut self, every: Duration) {
        let _guard = crate::engine::runtime().enter();
        with_permit!(self, p => p.keep_alive(every))
    }
}
