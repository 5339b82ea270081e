//! Permits: granted reservations that settle against actual usage and release their
//! concurrency slot when dropped.

use smallvec::SmallVec;
use tollgate_core::{LeaseId, LimitKind, Timestamp};

use crate::cost::Cost;
use crate::decision::Decision;
use crate::error::Error;
use crate::limiter::handle::Limiter;
use crate::plan::Plan;
use crate::store::memory::MemoryStore;
use crate::store::{Route, Settlement, Store};

/// The answer to [`Limiter::reserve`]: a permit, or the denial.
#[derive(Debug)]
pub enum Reservation<S: Store = MemoryStore> {
    /// The call may go ahead; settle the permit when it finishes.
    Granted(Permit<S>),
    /// The call may not go ahead; nothing was spent.
    Denied(Decision),
}

impl<S: Store> Reservation<S> {
    /// The permit, if granted.
    pub fn granted(self) -> Option<Permit<S>> {
        match self {
            Reservation::Granted(p) => Some(p),
            Reservation::Denied(_) => None,
        }
    }

    /// The decision either way.
    pub fn decision(&self) -> &Decision {
        match self {
            Reservation::Granted(p) => p.decision(),
            Reservation::Denied(d) => d,
        }
    }

    /// The permit, or the denial as an error value.
    ///
    /// # Errors
    /// The denying decision.
    pub fn into_result(self) -> Result<Permit<S>, Decision> {
        match self {
            Reservation::Granted(p) => Ok(p),
            Reservation::Denied(d) => Err(d),
        }
    }
}

struct Held<K> {
    key: K,
    limit: tollgate_core::Limit,
    kind: LimitKind,
    spent: u64,
}

/// A granted reservation. It holds the concurrency slots of the call and the estimated cost
/// spent at admission.
///
/// - [`commit`](Self::commit) settles against the actual cost: the difference is refunded, or
///   charged (a charge never fails; the bucket goes into debt and later calls wait longer).
/// - [`cancel`](Self::cancel) refunds everything.
/// - Dropping the permit releases its slots and keeps the estimate spent.
///
/// Settlement happens once: later calls to `commit` or `cancel` do nothing.
pub struct Permit<S: Store = MemoryStore> {
    limiter: Limiter<S>,
    decision: Decision,
    held: SmallVec<[Held<S::Key>; 3]>,
    lease: LeaseId,
    spent_at: Timestamp,
    settled: bool,
    route: Route,
    /// Renews the leases while the call runs; aborted when the permit settles or drops.
    renewer: Option<Renewer>,
}

/// Aborts the renewal task when dropped.
struct Renewer(tokio::task::JoinHandle<()>);

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<S: Store> std::fmt::Debug for Permit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("decision", &self.decision)
            .field("lease", &self.lease)
            .field("spent_at", &self.spent_at)
            .field("settled", &self.settled)
            .finish()
    }
}

impl<S: Store> Permit<S> {
    pub(crate) fn new(
        limiter: Limiter<S>,
        decision: Decision,
        plan: Plan<S::Key>,
        lease: LeaseId,
        spent_at: Timestamp,
        route: Route,
    ) -> Self {
        let held = plan
            .ops
            .into_iter()
            .zip(plan.meta)
            .map(|(op, m)| Held {
                key: op.key,
                limit: op.limit,
                kind: m.kind,
                spent: op.cost,
            })
            .collect();
        Permit {
            limiter,
            decision,
            held,
            lease,
            spent_at,
            settled: false,
            route,
            renewer: None,
        }
    }

    /// The decision that granted the permit.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The lease id of the permit's concurrency slots.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// When the reservation was spent, by the store's clock.
    pub fn spent_at(&self) -> Timestamp {
        self.spent_at
    }

    /// Whether the permit has been settled.
    pub fn is_settled(&self) -> bool {
        self.settled
    }

    fn releases(&self) -> Vec<Settlement<S::Key>> {
        self.held
            .iter()
            .filter(|h| h.kind == LimitKind::Concurrency)
            .map(|h| Settlement::Release {
                key: h.key.clone(),
                limit: h.limit,
                lease: self.lease,
            })
            .collect()
    }

    /// What dropping the permit does (release its concurrency slots, keep what it spent),
    /// awaited rather than left to a detached task: for the blocking facade, whose runtime
    /// runs nothing once its call returns. Idempotent, like every settlement.
    pub(crate) async fn release(&mut self) -> Result<(), Error> {
        let items = self.settle_by_release();
        if items.is_empty() {
            return Ok(());
        }
        self.limiter.settle(&items, self.route).await.map(|_| ())
    }

    /// Marks the permit settled by a release (what a drop does) and returns the releases to
    /// apply: none if it was settled already.
    fn settle_by_release(&mut self) -> Vec<Settlement<S::Key>> {
        self.renewer = None;
        if std::mem::replace(&mut self.settled, true) {
            return Vec::new();
        }
        self.releases()
    }

    /// Settles against the actual cost and releases the concurrency slots. Idempotent.
    ///
    /// # Errors
    /// If the store fails; the permit then still counts as settled (its slots expire with
    /// their lease), so a retry cannot charge twice.
    pub async fn commit(&mut self, actual: Cost) -> Result<(), Error> {
        if std::mem::replace(&mut self.settled, true) {
            return Ok(());
        }
        self.renewer = None;
        let mut items = self.releases();
        for h in self
            .held
            .iter()
            .filter(|h| h.kind != LimitKind::Concurrency)
        {
            let actual = actual.of(h.kind);
            if actual < h.spent {
                items.push(Settlement::Refund {
                    key: h.key.clone(),
                    limit: h.limit,
                    spent_at: self.spent_at,
                    cost: h.spent.saturating_sub(actual),
                });
            } else if actual > h.spent {
                items.push(Settlement::Charge {
                    key: h.key.clone(),
                    limit: h.limit,
                    spent_at: self.spent_at,
                    cost: actual.saturating_sub(h.spent),
                });
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        self.limiter.settle(&items, self.route).await.map(drop)
    }

    /// Refunds everything the reservation spent and releases its slots. Idempotent.
    ///
    /// # Errors
    /// If the store fails (the permit still counts as settled).
    pub async fn cancel(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.settled, true) {
            return Ok(());
        }
        self.renewer = None;
        let mut items = self.releases();
        items.extend(
            self.held
                .iter()
                .filter(|h| h.kind != LimitKind::Concurrency && h.spent > 0)
                .map(|h| Settlement::Refund {
                    key: h.key.clone(),
                    limit: h.limit,
                    spent_at: self.spent_at,
                    cost: h.spent,
                }),
        );
        if items.is_empty() {
            return Ok(());
        }
        self.limiter.settle(&items, self.route).await.map(drop)
    }

    /// Keeps the concurrency leases alive while the call runs: renews them every `every` on a
    /// background task (a third of the lease is a good interval) until the permit is settled
    /// or dropped. For calls that may outlive a lease, such as long streams. Needs a tokio
    /// runtime; does nothing for a permit without concurrency limits.
    pub fn keep_alive(&mut self, every: std::time::Duration) {
        let items = self.renewals();
        if items.is_empty() || self.settled {
            return;
        }
        let limiter = self.limiter.clone();
        let route = self.route;
        let every = every.max(std::time::Duration::from_millis(1));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if limiter.inner.store.settle(&items, route).await.is_err() {
                    metrics::counter!("tollgate_store_errors_total").increment(1);
                }
            }
        });
        self.renewer = Some(Renewer(task));
    }

    fn renewals(&self) -> Vec<Settlement<S::Key>> {
        self.held
            .iter()
            .filter(|h| h.kind == LimitKind::Concurrency)
            .map(|h| Settlement::Renew {
                key: h.key.clone(),
                limit: h.limit,
                lease: self.lease,
            })
            .collect()
    }

    /// Extends the concurrency leases to a full lease from now, for calls that run longer
    /// than a lease (long streams). Returns whether every slot was still held.
    ///
    /// # Errors
    /// If the store fails.
    pub async fn renew(&self) -> Result<bool, Error> {
        let items = self.renewals();
        if items.is_empty() || self.settled {
            return Ok(!self.settled);
        }
        let found = self.limiter.inner.store.settle(&items, self.route).await?;
        Ok(found == items.len())
    }
}

impl<S: Store> Drop for Permit<S> {
    fn drop(&mut self) {
        let items = self.settle_by_release();
        if !items.is_empty() {
            self.limiter.settle_detached(items, self.route);
        }
    }
}
