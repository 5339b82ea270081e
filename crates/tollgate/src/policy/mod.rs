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
pub use rule::{LimitSet, Rule, RuleBuilder, RuleLimit};
pub use selector::{Matcher, Selectors};

use crate::error::PolicyError;
use crate::subject::Subject;

/// A validated set of rules.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
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
        Ok(Policy { rules })
    }

    /// Starts a policy.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder { rules: Vec::new() }
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

    /// This policy with `rule` added, or replacing the rule of the same name.
    pub fn with_rule(&self, rule: Rule) -> Policy {
        let mut rules = self.rules.clone();
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(r) => *r = rule,
            None => rules.push(rule),
        }
        Policy { rules }
    }
}

/// Builds a [`Policy`] rule by rule.
#[derive(Debug)]
pub struct PolicyBuilder {
    rules: Vec<RuleBuilder>,
}

impl PolicyBuilder {
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
        Policy::new(rules)
    }
}
