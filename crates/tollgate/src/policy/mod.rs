//! Policies: the rules that decide which limits apply to a call.
//!
//! Every rule whose selectors match the subject applies. Inside a rule, the most specific
//! matching override (or tier) picks the limit set. An attribute selected with `*` partitions
//! the rule: one bucket per distinct value.

mod builtin;
mod current;
mod file;
pub(crate) mod intern;
mod rule;
mod selector;

use std::collections::HashSet;

pub use builtin::default_policy;
pub(crate) use current::CurrentPolicy;
pub use file::PolicyFile;
pub use rule::{LimitSet, MatchMode, Rule, RuleBuilder, RuleLimit, SetAction};
pub use selector::{Matcher, Selectors};

use tollgate_core::LimitSpec;

use crate::error::PolicyError;
use crate::subject::Subject;

/// What happens to a call that no rule's limits apply to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Unmatched {
    /// Admit it, unlimited (the default).
    #[default]
    Allow,
    /// Refuse it ([`Outcome::Unmatched`](crate::Outcome::Unmatched)): every call must be
    /// covered by some rule.
    Deny,
}

impl Unmatched {
    /// `allow` or `deny`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unmatched::Allow => "allow",
            Unmatched::Deny => "deny",
        }
    }
}

impl std::str::FromStr for Unmatched {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Unmatched::Allow),
            "deny" => Ok(Unmatched::Deny),
            other => Err(format!("{other:?} is not allow or deny")),
        }
    }
}

/// Counts a call that no rule's limits apply to (`tollgate_unmatched_total{action}`), and
/// logs it: the first, then at every power of two, so that a misrouted flood shows in the log
/// without filling it.
pub(crate) fn note_unmatched(unmatched: Unmatched) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEEN: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    let action = unmatched.as_str();
    metrics::counter!("tollgate_unmatched_total", "action" => action).increment(1);
    let n = SEEN[usize::from(unmatched == Unmatched::Deny)].fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(
            unmatched = action,
            calls = n,
            "a call matched no rule of the policy (unmatched = {action}); {n} such calls so far"
        );
    }
}

/// A validated set of rules.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    unmatched: Unmatched,
}

impl Policy {
    /// A policy of `rules`.
    ///
    /// # Errors
    /// A [`PolicyError`] if two rules share a name.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Result<Self, PolicyError> {
        let rules: Vec<Rule> = rules.into_iter().collect();
        let mut names = HashSet::new();
        for r in &rules {
            if !names.insert(r.name) {
                return Err(PolicyError::new(
                    r.name,
                    "name",
                    "duplicates another rule's name",
                ));
            }
        }
        Ok(Policy {
            rules,
            unmatched: Unmatched::Allow,
        })
    }

    /// Starts a policy.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            rules: Vec::new(),
            unmatched: Unmatched::Allow,
        }
    }

    /// What happens to a call that no rule's limits apply to (default
    /// [`Unmatched::Allow`]). Either way such calls are counted in
    /// `tollgate_unmatched_total{action}` and logged (sparingly).
    pub fn unmatched(&self) -> Unmatched {
        self.unmatched
    }

    /// This policy with `unmatched` as what happens to calls no rule applies to.
    pub fn with_unmatched(mut self, unmatched: Unmatched) -> Policy {
        self.unmatched = unmatched;
        self
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule called `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The rules that apply to `subject`.
    pub fn matching<'p, 's, 'v>(
        &'p self,
        subject: &'s Subject<'v>,
    ) -> impl Iterator<Item = &'p Rule> + use<'p, 's, 'v> {
        self.rules.iter().filter(move |r| r.matches(subject))
    }

    /// The rules a subject's own limits would go to: `rule` if named (it must exist), else
    /// every rule that partitions by all of `when`'s attributes (a rule per user gets the
    /// limits of one user).
    ///
    /// # Errors
    /// A [`PolicyError`] if the named rule does not exist or no rule partitions that way.
    pub fn subject_rules(
        &self,
        rule: Option<&str>,
        when: &[(String, String)],
    ) -> Result<Vec<&'static str>, PolicyError> {
        let err = |field: &str, message: String| PolicyError {
            rule: rule.map(str::to_owned),
            field: field.to_owned(),
            message,
            location: None,
        };
        if when.is_empty() {
            return Err(err("subject", "names no attribute".into()));
        }
        let names: Vec<&'static str> = match rule {
            Some(r) => match self.rule(r) {
                Some(r) => vec![r.name],
                None => return Err(err("rule", format!("no rule named {r:?}"))),
            },
            None => self
                .rules
                .iter()
                .filter(|r| {
                    when.iter()
                        .all(|(a, _)| r.selectors.partitions_by(&crate::Attr::named(a)))
                })
                .map(|r| r.name)
                .collect(),
        };
        if names.is_empty() {
            let attrs: Vec<&str> = when.iter().map(|(a, _)| a.as_str()).collect();
            return Err(err(
                "subject",
                format!(
                    "no rule partitions by {} (one bucket per value), so no rule can give one \
                     subject its own limits; name a rule",
                    attrs.join(" and ")
                ),
            ));
        }
        Ok(names)
    }

    /// This policy with `limits` for the subjects matching `when` (exact values, such as
    /// `user = "premium_user"`) in `rules`, replacing their earlier limits there: the run-time
    /// form of an override (seed-style `set_user_rate_limit`). An empty `limits` removes them.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the rule and field if the override is invalid.
    pub fn with_subject_limits(
        &self,
        rules: &[&str],
        when: &[(String, String)],
        limits: &[LimitSpec],
    ) -> Result<Policy, PolicyError> {
        let mut policy = self.clone();
        for name in rules {
            let Some(rule) = policy.rule(name) else {
                return Err(PolicyError::new(name, "rule", "does not exist"));
            };
            let b = rule.to_builder();
            let b = if limits.is_empty() {
                b.remove_override(when).0
            } else {
                b.set_override(when.iter().cloned(), limits.iter().cloned())
            };
            policy = policy.with_rule(b.build()?);
        }
        Ok(policy)
    }

    /// This policy with `rule` added, or replacing the rule of the same name.
    pub fn with_rule(&self, rule: Rule) -> Policy {
        let mut rules = self.rules.clone();
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(r) => *r = rule,
            None => rules.push(rule),
        }
        Policy {
            rules,
            unmatched: self.unmatched,
        }
    }
}

/// Builds a [`Policy`] rule by rule.
#[derive(Debug)]
pub struct PolicyBuilder {
    rules: Vec<RuleBuilder>,
    unmatched: Unmatched,
}

impl PolicyBuilder {
    /// What happens to calls no rule applies to (default [`Unmatched::Allow`]).
    pub fn unmatched(mut self, unmatched: Unmatched) -> Self {
        self.unmatched = unmatched;
        self
    }

    /// Adds a rule.
    pub fn rule(mut self, rule: RuleBuilder) -> Self {
        self.rules.push(rule);
        self
    }

    /// Validates every rule and the policy.
    ///
    /// # Errors
    /// The first [`PolicyError`] found.
    pub fn build(self) -> Result<Policy, PolicyError> {
        let rules = self
            .rules
            .into_iter()
            .map(RuleBuilder::build)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy::new(rules)?.with_unmatched(self.unmatched))
    }
}
