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
mod set;

pub use builtin::default_policy;
pub(crate) use current::CurrentPolicy;
pub use file::PolicyFile;
pub use rule::{LimitSet, MatchMode, Rule, RuleBuilder, RuleLimit, SetAction};
pub use selector::{Matcher, Selectors};
pub(crate) use set::note_unmatched;
pub use set::{Policy, PolicyBuilder, Unmatched};
