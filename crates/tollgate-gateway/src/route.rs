//! Model → upstream routing: an exact name first, then the first glob that matches, then the
//! default upstream of the provider's kind.

use globset::{Glob, GlobMatcher};

use crate::config::{ProviderKind, Upstream};

/// The routing table over the configured upstreams (indexes into their list).
#[derive(Debug, Default)]
pub struct Routes {
    exact: Vec<(ProviderKind, String, usize)>,
    globs: Vec<(ProviderKind, GlobMatcher, usize)>,
    defaults: Vec<(ProviderKind, usize)>,
}

impl Routes {
    /// The table for `upstreams` (whose patterns the configuration has validated).
    pub fn new(upstreams: &[Upstream]) -> Self {
        let mut r = Routes::default();
        for (i, u) in upstreams.iter().enumerate() {
            for m in &u.models {
                let is_glob = m.contains(['*', '?', '[', '{']);
                match (is_glob, Glob::new(m)) {
                    (true, Ok(g)) => r.globs.push((u.kind, g.compile_matcher(), i)),
                    _ => r.exact.push((u.kind, m.clone(), i)),
                }
            }
            if u.default {
                r.defaults.push((u.kind, i));
            }
        }
        r
    }

    /// The upstream for `model` among those of `kind`.
    pub fn route(&self, kind: ProviderKind, model: &str) -> Option<usize> {
        self.exact
            .iter()
            .find(|(k, m, _)| *k == kind && m == model)
            .map(|e| e.2)
            .or_else(|| {
                self.globs
                    .iter()
                    .find(|(k, g, _)| *k == kind && g.is_match(model))
                    .map(|e| e.2)
            })
            .or_else(|| self.defaults.iter().find(|(k, _)| *k == kind).map(|e| e.1))
    }

    /// The default upstream of `kind`, if any (for calls that name no model).
    pub fn default_of(&self, kind: ProviderKind) -> Option<usize> {
        self.defaults.iter().find(|(k, _)| *k == kind).map(|e| e.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_glob_then_default() {
        let mut a = Upstream::new(ProviderKind::OpenAi, "http://a/v1");
        a.default = true;
        let mut b = Upstream::new(ProviderKind::OpenAi, "http://b/v1");
        b.default = false;
        b.models = vec!["gpt-4o*".into(), "o3".into()];
        let mut c = Upstream::new(ProviderKind::OpenAi, "http://c/v1");
        c.default = false;
        c.models = vec!["gpt-4o-mini".into()];
        let r = Routes::new(&[a, b, c]);
        assert_eq!(r.route(ProviderKind::OpenAi, "gpt-4o-mini"), Some(2));
        assert_eq!(r.route(ProviderKind::OpenAi, "gpt-4o"), Some(1));
        assert_eq!(r.route(ProviderKind::OpenAi, "o3"), Some(1));
        assert_eq!(r.route(ProviderKind::OpenAi, "llama"), Some(0));
        assert_eq!(r.route(ProviderKind::Anthropic, "claude"), None);
    }
}
