//! A descriptor's own limit: Envoy's `RateLimitDescriptor.limit` (`requests_per_unit` per
//! `unit`), which replaces whatever the configuration says for that descriptor, as
//! envoyproxy/ratelimit does.
//!
//! Such descriptors are decided by a limiter of their own over the service's store, whose
//! policy has one rule per kind and Envoy unit. Each rule partitions by the descriptor
//! (domain and entries), holds a fixed window of one per unit (envoyproxy/ratelimit's
//! counters are fixed windows), and the descriptor's amount replaces that one as a call limit
//! (see [`tollgate::CallLimits`]): so each distinct descriptor and amount has its own bucket.

use tollgate::policy::{Rule, RuleBuilder};
use tollgate::{Algorithm, CallLimits, LimitKind, LimitSpec, Policy, Subject, Window};

/// The attribute naming the kind and unit of a descriptor's own limit.
const LIMIT_ATTRIBUTE: &str = "envoy_limit";
/// The attribute holding the descriptor (domain and entries): the partition.
const DESCRIPTOR_ATTRIBUTE: &str = "envoy_descriptor";

const WEEK: Window = Window::Length(std::time::Duration::from_secs(7 * 86_400));
const YEAR: Window = Window::Length(std::time::Duration::from_secs(365 * 86_400));

/// The Envoy units by name with their windows: a week is 7 days and a year 365, as
/// envoyproxy/ratelimit counts them; a month is the calendar month (envoyproxy/ratelimit: 30
/// days).
const UNITS: [(&str, Window); 7] = [
    ("second", Window::SECOND),
    ("minute", Window::MINUTE),
    ("hour", Window::HOUR),
    ("day", Window::DAY),
    ("week", WEEK),
    ("month", Window::Month),
    ("year", YEAR),
];

/// The name and window of the Envoy unit numbered `unit` (`RateLimitUnit`: 1 second, 2
/// minute, 3 hour, 4 day, 5 month, 6 year, 7 week).
pub(crate) fn window_of(unit: i32) -> Option<(&'static str, Window)> {
    let name = match unit {
        1 => "second",
        2 => "minute",
        3 => "hour",
        4 => "day",
        5 => "month",
        6 => "year",
        7 => "week",
        _ => return None,
    };
    UNITS.iter().find(|(n, _)| *n == name).copied()
}

/// The policy of the descriptors' own limits: a rule per kind and unit.
pub(crate) fn policy() -> Policy {
    let rules: Vec<RuleBuilder> = [LimitKind::Requests, LimitKind::Tokens]
        .into_iter()
        .flat_map(|kind| {
            UNITS.iter().map(move |(unit, window)| {
                let mut spec = LimitSpec::new(kind, 1, *window);
                spec.algorithm = Some(Algorithm::FixedWindow);
                Rule::builder(format!("envoy-descriptor-limit/{kind}/{unit}"))
                    .when(LIMIT_ATTRIBUTE, format!("{kind}/{unit}"))
                    .per(DESCRIPTOR_ATTRIBUTE)
                    .limit(spec)
            })
        })
        .collect();
    let mut b = Policy::builder();
    for r in rules {
        b = b.rule(r);
    }
    b.build()
        .unwrap_or_else(|e| unreachable!("the descriptor-limit rules are valid: {e}"))
}

/// The subject and call limits of a descriptor whose own limit is `amount` of `kind` per the
/// unit `unit` (a name from [`window_of`]); `descriptor` names it (domain and entries).
pub(crate) fn subject<'a>(
    kind: LimitKind,
    unit: &str,
    window: Window,
    amount: u64,
    descriptor: String,
) -> (Subject<'a>, CallLimits) {
    let subject = Subject::new()
        .label(LIMIT_ATTRIBUTE, format!("{kind}/{unit}"))
        .label(DESCRIPTOR_ATTRIBUTE, descriptor);
    let call = if amount == 1 {
        CallLimits::new()
    } else {
        CallLimits::new()
            .limit(kind, amount, window)
            .allow_loosening(true)
    };
    (subject, call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_envoy_unit_has_a_window_and_a_rule() {
        let p = policy();
        for unit in 1..=7 {
            let (name, _) = window_of(unit).unwrap();
            let (s, _) = subject(LimitKind::Requests, name, Window::SECOND, 5, "d".into());
            assert_eq!(p.matching(&s).count(), 1, "{name}");
        }
        assert_eq!(window_of(7).unwrap().0, "week");
        assert_eq!(window_of(4).unwrap().0, "day");
        assert!(window_of(0).is_none() && window_of(8).is_none());
    }
}
