//! What every limit that applies to a subject has used and has left, spending nothing.

use std::time::Duration;

use tollgate_core::LimitKind;

use super::handle::Limiter;
use crate::cost::Cost;
use crate::error::Error;
use crate::store::Store;
use crate::subject::Subject;

/// How much of one limit is in use, from [`Limiter::usage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitUsage {
    /// The rule.
    pub rule: &'static str,
    /// The limit's label within the rule.
    pub label: &'static str,
    /// What the limit counts.
    pub kind: LimitKind,
    /// The amount per window.
    pub amount: u64,
    /// The window.
    pub window: tollgate_core::Window,
    /// Units spent and not yet refilled (above `capacity` while in debt).
    pub used: u64,
    /// The most the bucket holds.
    pub capacity: u64,
    /// Units that could be spent now.
    pub available: u64,
    /// Time until the bucket is fully available again.
    pub reset_after: Duration,
}

impl<S: Store> Limiter<S> {
    /// For every applicable limit: used, capacity, available and time to reset. Spends
    /// nothing.
    ///
    /// # Errors
    /// Only if the store fails.
    pub async fn usage(&self, subject: &Subject<'_>) -> Result<Vec<LimitUsage>, Error> {
        let plan = self.plan(subject, &Cost::requests(0), false);
        let (_, usage) = self.inner.store.usage(&plan.ops).await?;
        Ok(plan
            .iter()
            .zip(usage)
            .map(|((op, m), u)| LimitUsage {
                rule: m.rule,
                label: m.label,
                kind: m.kind,
                amount: op.limit.amount(),
                window: op.limit.window(),
                used: u.used,
                capacity: u.capacity,
                available: u.available,
                reset_after: Duration::from_micros(u.reset_after_us),
            })
            .collect())
    }
}
