//! Forgetting buckets: a subject's, one rule's for a subject, or a whole rule's.

use super::handle::Limiter;
use crate::cost::Cost;
use crate::error::Error;
use crate::store::Store;
use crate::subject::Subject;

impl<S: Store> Limiter<S> {
    /// Forgets the buckets of every limit that applies to `subject`: they are full again.
    /// Returns how many buckets that is (one per limit of every rule that applies, whether it
    /// had been spent from or not): 0 when no rule applies to `subject`, so nothing was reset.
    ///
    /// # Errors
    /// Only if the store fails.
    pub async fn reset(&self, subject: &Subject<'_>) -> Result<u64, Error> {
        let keys: Vec<S::Key> = self
            .plan(subject, &Cost::requests(0), false)
            .ops
            .into_iter()
            .map(|op| op.key)
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner.store.reset(&keys).await?;
        self.inner.released.notify_waiters();
        Ok(u64::try_from(keys.len()).unwrap_or(u64::MAX))
    }

    /// Forgets the buckets of the rule called `rule` for `subject`'s partition only (other
    /// rules, and other partitions of this rule, keep their state). Returns how many buckets
    /// that is: 0 when the rule does not apply to `subject`.
    ///
    /// # Errors
    /// [`Error::UnknownRule`] if the policy has no such rule; or a store failure.
    pub async fn reset_in(&self, rule: &str, subject: &Subject<'_>) -> Result<u64, Error> {
        if self.inner.policy.with(|p| p.rule(rule).is_none()) {
            return Err(Error::UnknownRule(rule.to_owned()));
        }
        let plan = self.plan(subject, &Cost::requests(0), false);
        let keys: Vec<S::Key> = plan
            .iter()
            .filter(|(_, m)| m.rule == rule)
            .map(|(op, _)| op.key.clone())
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner.store.reset(&keys).await?;
        self.inner.released.notify_waiters();
        Ok(u64::try_from(keys.len()).unwrap_or(u64::MAX))
    }

    /// Forgets every bucket of the rule called `rule`, for every partition. Returns how many
    /// buckets were forgotten, where the store can tell.
    ///
    /// # Errors
    /// [`Error::UnknownRule`] if the policy has no such rule; or a store failure.
    pub async fn reset_rule(&self, rule: &str) -> Result<u64, Error> {
        let (name, id) = self
            .inner
            .policy
            .with(|p| p.rule(rule).map(|r| (r.name, r.id)))
            .ok_or_else(|| Error::UnknownRule(rule.to_owned()))?;
        let n = self.inner.store.reset_rule(name, id).await?;
        self.inner.released.notify_waiters();
        Ok(n)
    }
}
