//! Seeing everyone: the subjects of a rule that have live buckets, with their usage.
//!
//! Stores name buckets by hashes (the memory store keeps no attribute values at all), so a
//! limiter that is asked to list subjects keeps an index of the partitions it decides for:
//! [`Limiter::track_subjects`] turns it on, bounded to a number of partitions per rule. Each
//! decision then notes its partitions (a hash lookup; nothing is allocated for a partition
//! already noted). [`Limiter::subjects`] pages through a rule's noted partitions in a stable order,
//! reads their buckets from the store, and returns those with something in use; partitions
//! whose buckets are all full again are dropped from the index as it goes.
//!
//! With a shared store (Redis), an index holds the partitions this process decided for; their
//! usage is the store's, so the fleet's.
//!
//! ```
//! use tollgate::{Cost, Limiter, Subject};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollgate::Error> {
//! let limiter = Limiter::new();
//! limiter.track_subjects(10_000);
//! for agent in ["a1", "a2", "a3"] {
//!     let who = Subject::new().agent(agent).provider("anthropic");
//!     limiter.check(&who, Cost::tokens(500)).await?;
//! }
//! let page = limiter.subjects("default-agent", None, 2).await?;
//! assert_eq!(page.subjects.len(), 2);
//! assert_eq!(page.subjects[0].values[0], ("agent".to_owned(), "a1".to_owned()));
//! let rest = limiter.subjects("default-agent", page.next.as_deref(), 2).await?;
//! assert_eq!(rest.subjects.len(), 1);
//! assert!(rest.next.is_none());
//! # Ok(()) }
//! ```

use std::time::Duration;

use smallvec::SmallVec;

use crate::error::Error;
use crate::key::BucketName;
use crate::limiter::handle::Limiter;
use crate::limiter::usage::LimitUsage;
use crate::store::{FailureMode, Op, Store};
use crate::subject_index::SubjectIndex;

/// The most subjects one page returns.
pub const MAX_PAGE: usize = 1_000;

/// One subject of a rule, with the usage of its buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectUsage {
    /// The rule's partition attributes and this subject's values (an attribute selected
    /// with `"*?"` that the subject lacked has the value `""`).
    pub values: Vec<(String, String)>,
    /// Every limit of the rule with something in use for this subject (an override's
    /// limits too, if the subject has spent under one).
    pub usage: Vec<LimitUsage>,
}

/// One page of [`Limiter::subjects`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectPage {
    /// The subjects, in a stable order (by their values, shorter values first).
    pub subjects: Vec<SubjectUsage>,
    /// The cursor of the next page, if there may be more.
    pub next: Option<String>,
    /// How many partitions of the rule the index holds now (live or not yet found full).
    pub tracked: usize,
}

impl<S: Store> Limiter<S> {
    /// Starts keeping an index of the partitions this limiter decides for, at most
    /// `max_per_rule` per rule (further partitions are not listed; counted in
    /// `tollgate_subject_index_full_total`), so that [`subjects`](Self::subjects) can list
    /// them. Off by default: it costs a hash lookup per rule per decision. Calling it again
    /// keeps the first index.
    pub fn track_subjects(&self, max_per_rule: usize) {
        let _ = self
            .inner
            .subjects
            .set(SubjectIndex::new(max_per_rule.max(1)));
    }

    /// The subjects of rule `rule` with live buckets (something in use), with their usage:
    /// at most `limit` (1 to [`MAX_PAGE`]) per page, after `cursor` (the `next` of the
    /// previous page; `None` for the first). Needs [`track_subjects`](Self::track_subjects);
    /// without it, the page is empty.
    ///
    /// # Errors
    /// [`Error::UnknownRule`], or a store failure.
    pub async fn subjects(
        &self,
        rule: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SubjectPage, Error> {
        let limit = limit.clamp(1, MAX_PAGE);
        let policy = self.policy();
        let rule = policy
            .rule(rule)
            .ok_or_else(|| Error::UnknownRule(rule.to_owned()))?;
        let Some(index) = self.inner.subjects.get() else {
            return Ok(SubjectPage::default());
        };
        let all = index.of_rule(rule.id);
        let start = match cursor {
            None => 0,
            Some(c) => all.partition_point(|(k, _, _)| k.as_str() <= c),
        };
        let attrs: Vec<String> = rule.partition().iter().map(|a| a.to_string()).collect();
        let mut page = SubjectPage::default();
        let mut last = None;
        for (key, ph, values) in &all[start..] {
            if page.subjects.len() == limit {
                page.next = last.take();
                break;
            }
            let refs: SmallVec<[&str; 4]> = values.iter().map(|v| &**v).collect();
            let mut ops = Vec::new();
            let mut meta = Vec::new();
            for set in rule.limit_sets() {
                for rl in set.limits() {
                    let name = BucketName {
                        rule: rule.name,
                        rule_id: rule.id,
                        limit: rl.label,
                        partition: &refs,
                        partition_hash: *ph,
                        limit_salt: rl.salt,
                    };
                    ops.push(Op {
                        key: self.inner.store.bucket_key(&name),
                        limit: rl.limit,
                        cost: 0,
                        failure: FailureMode::default(),
                    });
                    meta.push(rl.planned.meta);
                }
            }
            let (_, usage) = self.inner.store.usage(&ops).await?;
            let live: Vec<LimitUsage> = ops
                .iter()
                .zip(&meta)
                .zip(usage)
                .filter(|(_, u)| u.used > 0 || u.reset_after_us > 0)
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
                .collect();
            last = Some(key.clone());
            if live.is_empty() {
                // Every bucket is full again: nothing to see until it decides again.
                index.forget(rule.id, *ph);
                continue;
            }
            page.subjects.push(SubjectUsage {
                values: attrs
                    .iter()
                    .cloned()
                    .zip(values.iter().map(|v| v.to_string()))
                    .collect(),
                usage: live,
            });
        }
        page.tracked = index.tracked(rule.id);
        Ok(page)
    }
}
