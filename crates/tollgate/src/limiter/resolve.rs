//! Resolving a subject against the current policy: one operation per applicable limit, with
//! its bucket key (the first step of every decision by subject).

use smallvec::SmallVec;

use super::handle::Limiter;
use crate::cost::Cost;
use crate::key::{partition_hash, BucketName};
use crate::plan::{op_cost, Plan};
use crate::store::{Op, Store};
use crate::subject::Subject;

impl<S: Store> Limiter<S> {
    /// Resolves `subject` into one operation per applicable limit. Concurrency limits take a
    /// slot when `take_slots`, and are only checked otherwise.
    pub(crate) fn plan(
        &self,
        subject: &Subject<'_>,
        cost: &Cost,
        take_slots: bool,
    ) -> Plan<S::Key> {
        let mut plan = Plan::new();
        self.plan_into(subject, cost, take_slots, &mut plan);
        plan
    }

    /// [`plan`](Self::plan) into an empty plan the caller owns, so that the hot path moves
    /// no plan around. Returns the version of the policy it planned under.
    #[inline]
    pub(crate) fn plan_into(
        &self,
        subject: &Subject<'_>,
        cost: &Cost,
        take_slots: bool,
        plan: &mut Plan<S::Key>,
    ) -> u64 {
        self.resolve(subject, |key, rule, rl| {
            let meta = rl.planned.meta;
            plan.ops.push(Op {
                key,
                limit: rl.limit,
                cost: op_cost(meta.kind, cost, take_slots),
                failure: rule.failure_mode,
            });
            plan.meta.push(meta);
        })
    }

    /// Walks the limits that apply to `subject` under the current policy, in plan order:
    /// `each` gets every one's bucket key, rule and limit. Returns the policy's version.
    #[inline(always)]
    pub(crate) fn resolve(
        &self,
        subject: &Subject<'_>,
        mut each: impl FnMut(S::Key, &crate::policy::Rule, &crate::policy::RuleLimit),
    ) -> u64 {
        self.inner.policy.with_version(|version, policy| {
            for rule in policy.rules() {
                let mut values: SmallVec<[&str; 4]> = SmallVec::new();
                if !rule.partition_of(subject, &mut values) {
                    continue;
                }
                let ph = partition_hash(rule.id, &values);
                if let Some(index) = self.inner.subjects.get() {
                    index.note(rule.id, ph, &values);
                }
                for rl in &rule.limits_for(subject).limits {
                    let name = BucketName {
                        rule: rule.name,
                        rule_id: rule.id,
                        limit: rl.label,
                        partition: &values,
                        partition_hash: ph,
                        limit_salt: rl.salt,
                    };
                    each(self.inner.store.bucket_key(&name), rule, rl);
                }
            }
            version
        })
    }
}
