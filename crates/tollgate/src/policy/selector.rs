//! Selectors: how a rule or an override picks subjects by one attribute.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};

use crate::subject::{Attr, Subject};

/// How one attribute is matched.
#[derive(Clone)]
pub enum Matcher {
    /// `"*"`: any value, and one bucket per distinct value (the rule partitions by it).
    Each,
    /// `"*?"`: like `"*"`, and a subject without the attribute matches too, all such subjects
    /// sharing one bucket (as if the value were empty).
    EachOrAbsent,
    /// An exact value.
    Exact(Box<str>),
    /// A glob such as `gpt-4*`: matching values share one bucket.
    Glob(Box<str>, GlobMatcher),
}

impl Matcher {
    /// Reads a selector value: `*` partitions, `*?` partitions and also matches a subject
    /// without the attribute, a pattern with `*`, `?` or `[` is a glob, anything else is exact.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value == "*" {
            return Ok(Matcher::Each);
        }
        if value == "*?" {
            return Ok(Matcher::EachOrAbsent);
        }
        if value.contains(['*', '?', '[']) {
            let glob = GlobBuilder::new(value)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("{value:?} is not a valid glob: {}", e.kind()))?;
            return Ok(Matcher::Glob(value.into(), glob.compile_matcher()));
        }
        Ok(Matcher::Exact(value.into()))
    }

    /// Whether `value` matches.
    #[inline]
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Each | Matcher::EachOrAbsent => true,
            Matcher::Exact(v) => **v == *value,
            Matcher::Glob(_, g) => g.is_match(value),
        }
    }

    /// The text of the selector.
    pub fn as_str(&self) -> &str {
        match self {
            Matcher::Each => "*",
            Matcher::EachOrAbsent => "*?",
            Matcher::Exact(v) | Matcher::Glob(v, _) => v,
        }
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// A list of attribute matchers that must all match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selectors(pub(crate) Vec<(Attr, Matcher)>);

impl Selectors {
    /// Whether every matcher matches the subject (a missing attribute matches only `*?`).
    #[inline]
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        self.0.iter().all(|(attr, m)| match subject.get(attr) {
            Some(v) => m.matches(v),
            None => matches!(m, Matcher::EachOrAbsent),
        })
    }

    /// Whether the matchers partition by `attr` (select it with `*` or `*?`).
    pub fn partitions_by(&self, attr: &Attr) -> bool {
        self.0
            .iter()
            .any(|(a, m)| a == attr && matches!(m, Matcher::Each | Matcher::EachOrAbsent))
    }

    /// How specific the selectors are: exact matches first, then globs.
    pub fn specificity(&self) -> (usize, usize) {
        let exact = self
            .0
            .iter()
            .filter(|(_, m)| matches!(m, Matcher::Exact(_)))
            .count();
        let globs = self
            .0
            .iter()
            .filter(|(_, m)| matches!(m, Matcher::Glob(..)))
            .count();
        (exact, globs)
    }

    /// The selected attributes with their matchers, in the rule's order.
    pub fn iter(&self) -> impl Iterator<Item = (&Attr, &Matcher)> {
        self.0.iter().map(|(a, m)| (a, m))
    }

    /// A stable text form, `attr=value` joined by `,`, used to name limit sets.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(a, m)| format!("{a}={}", m.as_str()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_exact_and_each() {
        let g = Matcher::parse("gpt-4*").unwrap();
        assert!(g.matches("gpt-4o") && g.matches("gpt-4") && !g.matches("gpt-3.5"));
        let g = Matcher::parse("models/*").unwrap();
        assert!(g.matches("models/a/b"));
        assert!(Matcher::parse("openai").unwrap().matches("openai"));
        assert!(!Matcher::parse("openai").unwrap().matches("openai2"));
        assert!(Matcher::parse("*").unwrap().matches("x"));
        assert!(matches!(Matcher::parse("*?"), Ok(Matcher::EachOrAbsent)));
        assert!(Matcher::parse("[").is_err());
    }
}
