//! The limiter's handle and the state its clones share: the store, the current policy, the
//! wait queues, the counts and the subject index. Everything else in `limiter/` adds methods
//! to [`Limiter`]; the modules that hold a limiter (permits, waiting, prepared subjects) name
//! it from here.

use std::sync::Arc;

use tollgate_core::Clock;

use crate::error::Error;
use crate::policy::{default_policy, CurrentPolicy, Policy};
use crate::stats::{Sample, Stats, StatsSnapshot};
use crate::store::memory::MemoryStore;
use crate::store::{Route, Settlement, Store};
use crate::wait_queues::WaitQueues;

/// Decides admission for calls. Cheap to clone: clones share the policy, the store and the
/// waiters.
///
/// ```
/// use tollgate::{Cost, Limiter, Subject};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tollgate::Error> {
/// // The built-in policy: 60 requests and 100,000 tokens per minute per caller and provider.
/// let limiter = Limiter::new();
/// let who = Subject::new().tenant("acme").provider("openai");
/// let decision = limiter.check(&who, Cost::tokens(1_500)).await?;
/// assert!(decision.is_allowed());
/// # Ok(()) }
/// ```
pub struct Limiter<S: Store = MemoryStore> {
    pub(crate) inner: Arc<Inner<S>>,
}

impl<S: Store> Clone for Limiter<S> {
    fn clone(&self) -> Self {
        Limiter {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Store + std::fmt::Debug> std::fmt::Debug for Limiter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("store", &self.inner.store)
            .field("rules", &self.inner.policy.with(|p| p.rules().len()))
            .finish()
    }
}

pub(crate) struct Inner<S: Store> {
    pub(crate) store: S,
    pub(crate) policy: CurrentPolicy,
    pub(crate) waiters: WaitQueues<S::Key>,
    /// Woken whenever capacity is given back (a slot released, tokens refunded), so that
    /// waiters re-check before their timer.
    pub(crate) released: tokio::sync::Notify,
    pub(crate) stats: Stats,
    /// The partitions decided for, when [`Limiter::track_subjects`] turned the index on.
    pub(crate) subjects: std::sync::OnceLock<crate::subject_index::SubjectIndex>,
}

impl Limiter<MemoryStore> {
    /// A limiter with the built-in default policy, an in-memory store and the system clock.
    pub fn new() -> Self {
        Limiter::with_store(default_policy(), MemoryStore::new())
    }

    /// A limiter with `policy` and an in-memory store reading `clock`.
    pub fn with_clock(policy: Policy, clock: impl Clock + 'static) -> Self {
        Limiter::with_store(policy, MemoryStore::with_clock(clock))
    }

    /// A limiter with `policy` and an in-memory store with the system clock.
    pub fn with_policy(policy: Policy) -> Self {
        Limiter::with_store(policy, MemoryStore::new())
    }
}

impl Default for Limiter<MemoryStore> {
    fn default() -> Self {
        Limiter::new()
    }
}

impl<S: Store> Limiter<S> {
    /// A limiter with `policy` over `store`.
    pub fn with_store(policy: Policy, store: S) -> Self {
        Limiter {
            inner: Arc::new(Inner {
                store,
                policy: CurrentPolicy::new(policy),
                waiters: WaitQueues::new(),
                released: tokio::sync::Notify::new(),
                stats: Stats::new(),
                subjects: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.inner.policy.load_full()
    }

    /// Replaces the policy atomically. Buckets of limits that did not change keep their
    /// state; buckets of changed limits start full.
    pub fn set_policy(&self, policy: Policy) {
        self.inner.policy.store(policy);
    }

    /// Begins counting a synchronous decision.
    #[inline(always)]
    pub(crate) fn stats_begin(&self) -> Sample<'_> {
        self.inner.stats.begin()
    }

    /// Counts of decisions so far and, where the store can tell, active buckets per rule.
    /// Needs no metrics exporter.
    pub fn stats(&self) -> StatsSnapshot {
        let policy = self.inner.policy.load_full();
        let buckets = self.inner.store.active_buckets().map(|counts| {
            counts
                .into_iter()
                .map(|(id, n)| {
                    let name = policy
                        .rules()
                        .iter()
                        .find(|r| r.id == id)
                        .map_or("(removed rule)", |r| r.name);
                    (name, n)
                })
                .collect()
        });
        self.inner.stats.snapshot(buckets)
    }

    /// Applies settlements and wakes waiters that may now fit.
    pub(crate) async fn settle(
        &self,
        items: &[Settlement<S::Key>],
        route: Route,
    ) -> Result<usize, Error> {
        let n = self.inner.store.settle(items, route).await?;
        self.inner.released.notify_waiters();
        Ok(n)
    }

    /// Applies settlements without an async context (from `Drop`).
    pub(crate) fn settle_detached(&self, items: Vec<Settlement<S::Key>>, route: Route) {
        if let Some(r) = self.inner.store.settle_now(&items, route) {
            if r.is_err() {
                metrics::counter!("tollgate_store_errors_total").increment(1);
            }
            self.inner.released.notify_waiters();
            return;
        }
        let limiter = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    if limiter.settle(&items, route).await.is_err() {
                        metrics::counter!("tollgate_store_errors_total").increment(1);
                    }
                });
            }
            Err(_) => {
                if futures::executor::block_on(limiter.settle(&items, route)).is_err() {
                    metrics::counter!("tollgate_store_errors_total").increment(1);
                }
            }
        }
    }
}
