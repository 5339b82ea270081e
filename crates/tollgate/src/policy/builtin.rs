//! The policy tollgate runs with when given none.

use tollgate_core::{LimitKind, LimitSpec, Window};

use super::{Policy, Rule};

/// The built-in default: 60 requests and 100,000 tokens per minute for each tenant and
/// provider (GCRA, bursts up to the full minute's amount).
pub fn default_policy() -> Policy {
    let rule = Rule::builder("default")
        .per("tenant")
        .per("provider")
        .limit(LimitSpec::new(LimitKind::Requests, 60, Window::MINUTE))
        .limit(LimitSpec::new(LimitKind::Tokens, 100_000, Window::MINUTE));
    // The rule is a constant known to be valid; the unit test below proves it.
    match Policy::builder().rule(rule).build() {
        Ok(p) => p,
        Err(e) => unreachable!("the built-in policy is valid: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_policy_builds() {
        let p = super::default_policy();
        assert_eq!(p.rules().len(), 1);
        assert_eq!(p.rules()[0].default.limits.len(), 2);
    }
}
