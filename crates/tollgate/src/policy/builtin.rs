//! The policy tollgate runs with when given none.

use tollgate_core::{LimitKind, LimitSpec, Window};

use super::rule::{Rule, RuleBuilder};
use super::set::Policy;

/// The requests and tokens per minute of each bucket of the built-in policy.
const RPM: u64 = 60;
const TPM: u64 = 100_000;

fn rule(name: &str) -> RuleBuilder {
    Rule::builder(name)
        .limit(LimitSpec::new(LimitKind::Requests, RPM, Window::MINUTE))
        .limit(LimitSpec::new(LimitKind::Tokens, TPM, Window::MINUTE))
}

/// The built-in default: 60 requests and 100,000 tokens per minute (GCRA, bursts up to the
/// full minute's amount) for each caller and provider, where the caller is the first of
/// `tenant`, `agent` and `user` that the call has:
///
/// | rule | applies to calls with | one bucket per |
/// | --- | --- | --- |
/// | `default` | a tenant | tenant and provider |
/// | `default-agent` | an agent, no tenant | agent and provider |
/// | `default-user` | a user, no tenant and no agent | user and provider |
/// | `default-anonymous` | none of them | provider (calls without one share one bucket) |
///
/// A call without a provider counts as one provider of its own. So every call has exactly
/// one pair of buckets: an agent-keyed gateway call (`agent`, `provider`), a call without a
/// user (`provider` alone) and an empty subject are all limited, none silently unlimited.
pub fn default_policy() -> Policy {
    let rules = [
        rule("default").per("tenant").when("provider", "*?"),
        rule("default-agent")
            .per("agent")
            .when("provider", "*?")
            .absent("tenant"),
        rule("default-user")
            .per("user")
            .when("provider", "*?")
            .absent("tenant")
            .absent("agent"),
        rule("default-anonymous")
            .when("provider", "*?")
            .absent("tenant")
            .absent("agent")
            .absent("user"),
    ];
    // The rules are constants known to be valid; the unit test below proves it.
    match rules
        .into_iter()
        .fold(Policy::builder(), |p, r| p.rule(r))
        .build()
    {
        Ok(p) => p,
        Err(e) => unreachable!("the built-in policy is valid: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::Subject;

    /// The rules that apply to `subject`, by name.
    fn applying(subject: &Subject<'_>) -> Vec<&'static str> {
        super::default_policy()
            .matching(subject)
            .map(|r| r.name())
            .collect()
    }

    #[test]
    fn the_default_policy_builds() {
        let p = super::default_policy();
        assert_eq!(p.rules().len(), 4);
        assert!(p.rules().iter().all(|r| r.default.limits.len() == 2));
    }

    #[test]
    fn every_call_gets_exactly_one_rule() {
        let cases: [(Subject<'_>, &str); 8] = [
            (Subject::new().tenant("t").provider("p"), "default"),
            (Subject::new().tenant("t").agent("a").user("u"), "default"),
            (
                Subject::new().agent("did:agent:1").provider("anthropic"),
                "default-agent",
            ),
            (Subject::new().agent("a").user("u"), "default-agent"),
            (Subject::new().user("u").provider("glm"), "default-user"),
            (Subject::new().provider("glm"), "default-anonymous"),
            (Subject::new(), "default-anonymous"),
            (Subject::new().model("m"), "default-anonymous"),
        ];
        for (subject, rule) in cases {
            assert_eq!(applying(&subject), [rule], "{subject}");
        }
    }
}
