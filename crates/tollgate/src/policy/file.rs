//! The policy file format (TOML). Every error names the file, the line, the rule and the field.
//!
//! ```toml
//! [[rules]]
//! name = "per-tenant"
//! match = { tenant = "*", provider = "openai" }
//! limits = [
//!   { kind = "requests", amount = 500, per = "minute", burst = 50 },
//!   { kind = "tokens", amount = 40000, per = "minute" },
//!   { kind = "concurrency", amount = 10, lease = "5m" },
//! ]
//!
//! [[rules.overrides]]
//! match = { tenant = "premium" }
//! limits = [{ kind = "requests", amount = 2000, per = "minute" }]
//!
//! [rules.tiers.pro]
//! limits = [{ kind = "requests", amount = 1000, per = "minute" }]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use tollgate_core::{parse_duration, LimitSpec};
use toml::Spanned;

use super::rule::{Rule, RuleBuilder, SetAction};
use super::set::{Policy, Unmatched};
use crate::error::{Error, Location, PolicyError};

type Span = Range<usize>;

/// The raw, unvalidated form of a policy file, as read by serde.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    /// `allow` (default) or `deny`: what happens to calls no rule applies to.
    #[serde(default)]
    unmatched: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    #[serde(rename = "match", default)]
    selectors: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    #[serde(default)]
    absent: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    limits: Option<Spanned<Vec<Spanned<RawLimit>>>>,
    #[serde(default)]
    overrides: Vec<Spanned<RawOverride>>,
    #[serde(default)]
    tiers: BTreeMap<String, Spanned<RawTier>>,
    #[serde(default)]
    failure_mode: Option<Spanned<String>>,
    /// `auto` (default), `exact` or `subset`.
    #[serde(default)]
    match_mode: Option<Spanned<String>>,
    /// `true`: the calls the rule selects are never limited by it.
    #[serde(default)]
    unlimited: Option<Spanned<bool>>,
    /// `true`: the calls the rule selects are refused.
    #[serde(default)]
    deny: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    #[serde(rename = "match")]
    selectors: Spanned<BTreeMap<String, Spanned<String>>>,
    #[serde(default)]
    limits: Option<Spanned<Vec<Spanned<RawLimit>>>>,
    #[serde(default)]
    unlimited: Option<Spanned<bool>>,
    #[serde(default)]
    deny: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    limits: Spanned<Vec<Spanned<RawLimit>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    kind: Spanned<String>,
    amount: Spanned<u64>,
    per: Option<Spanned<String>>,
    algorithm: Option<Spanned<String>>,
    burst: Option<Spanned<u64>>,
    utc_offset: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
}

/// Field paths of one rule and where they are in the source.
#[derive(Default)]
struct Spans(HashMap<String, Span>);

impl Spans {
    fn add(&mut self, field: impl Into<String>, span: Span) {
        self.0.insert(field.into(), span);
    }

    /// The span of `field`, or of its closest enclosing field.
    fn find(&self, field: &str) -> Option<Span> {
        let mut f = field;
        loop {
            if let Some(s) = self.0.get(f) {
                return Some(s.clone());
            }
            let cut = f.rfind(['.', '['])?;
            f = &f[..cut];
        }
    }
}

impl Policy {
    /// Reads a policy from TOML source; `file` names it in errors.
    ///
    /// # Errors
    /// A [`PolicyError`] with the file, line, column, rule and field.
    pub fn from_toml(source: &str, file: &str) -> Result<Policy, PolicyError> {
        let raw: PolicyFile = toml::from_str(source).map_err(|e| PolicyError {
            rule: None,
            field: "toml".into(),
            message: e.message().trim().to_owned(),
            location: e.span().map(|s| locate(source, file, s.start)),
        })?;
        raw.into_policy(source, file)
    }

    /// Reads a policy from a TOML file.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read, [`Error::Policy`] if it is invalid.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, Error> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: name.clone(),
            source,
        })?;
        Ok(Policy::from_toml(&source, &name)?)
    }
}

impl PolicyFile {
    /// Validates the file's rules into a policy. `source` and `file` place errors.
    ///
    /// # Errors
    /// A [`PolicyError`] with the file, line, column, rule and field.
    pub fn into_policy(self, source: &str, file: &str) -> Result<Policy, PolicyError> {
        let unmatched = match &self.unmatched {
            None => Unmatched::Allow,
            Some(u) => u.get_ref().parse().map_err(|message| PolicyError {
                rule: None,
                field: "unmatched".into(),
                message,
                location: Some(locate(source, file, u.span().start)),
            })?,
        };
        let mut rules = Vec::with_capacity(self.rules.len());
        let mut name_spans = Vec::with_capacity(self.rules.len());
        for raw in self.rules {
            let rule_span = raw.span();
            let raw = raw.into_inner();
            name_spans.push(raw.name.span());
            let mut spans = Spans::default();
            spans.add("", rule_span);
            let located = |e: PolicyError, spans: &Spans| PolicyError {
                location: spans.find(&e.field).map(|s| locate(source, file, s.start)),
                ..e
            };
            let rule = to_builder(raw, &mut spans)
                .and_then(|b| b.build())
                .map_err(|e| located(e, &spans))?;
            rules.push(rule);
        }
        let policy = Policy::new(rules).map_err(|e| {
            let at = e
                .rule
                .as_deref()
                .and_then(|dup| {
                    // The second rule of that name is the one at fault.
                    let mut seen = 0;
                    name_spans.iter().zip(0..).find_map(|(s, _)| {
                        let text = source.get(s.clone())?;
                        if text.trim_matches('"') == dup {
                            seen += 1;
                            (seen == 2).then_some(s.start)
                        } else {
                            None
                        }
                    })
                })
                .map(|start| locate(source, file, start));
            PolicyError { location: at, ..e }
        })?;
        Ok(policy.with_unmatched(unmatched))
    }
}

fn to_builder(raw: RawRule, spans: &mut Spans) -> Result<RuleBuilder, PolicyError> {
    let rule_name = raw.name.get_ref().clone();
    spans.add("name", raw.name.span());
    let mut b = Rule::builder(raw.name.into_inner());
    if let Some(mode) = &raw.failure_mode {
        spans.add("failure_mode", mode.span());
        b = b.failure_mode(
            mode.get_ref()
                .parse()
                .map_err(|m: String| PolicyError::new(&rule_name, "failure_mode", m))?,
        );
    }
    if let Some(mode) = &raw.match_mode {
        spans.add("match_mode", mode.span());
        b = b.match_mode(
            mode.get_ref()
                .parse()
                .map_err(|m: String| PolicyError::new(&rule_name, "match_mode", m))?,
        );
    }
    let action = set_action(&rule_name, "", &raw.unlimited, &raw.deny, spans)?;
    b = b.action(action);
    if let Some(sel) = raw.selectors {
        spans.add("match", sel.span());
        for (attr, value) in sel.into_inner() {
            spans.add(format!("match.{attr}"), value.span());
            b = b.when(attr, value.into_inner());
        }
    }
    if let Some(absent) = raw.absent {
        spans.add("absent", absent.span());
        for (i, attr) in absent.into_inner().into_iter().enumerate() {
            spans.add(format!("absent[{i}]"), attr.span());
            b = b.absent(attr.into_inner());
        }
    }
    if let Some(limits) = raw.limits {
        for spec in limit_specs(&rule_name, "limits", limits, spans)? {
            b = b.limit(spec);
        }
    }
    for (i, o) in raw.overrides.into_iter().enumerate() {
        let field = format!("overrides[{i}]");
        spans.add(field.clone(), o.span());
        let o = o.into_inner();
        spans.add(format!("{field}.match"), o.selectors.span());
        let mut when = Vec::new();
        for (attr, value) in o.selectors.into_inner() {
            spans.add(format!("{field}.match.{attr}"), value.span());
            when.push((attr, value.into_inner()));
        }
        let action = set_action(
            &rule_name,
            &format!("{field}."),
            &o.unlimited,
            &o.deny,
            spans,
        )?;
        let specs = match o.limits {
            Some(limits) => limit_specs(&rule_name, &format!("{field}.limits"), limits, spans)?,
            None if action == SetAction::Limit => {
                return Err(PolicyError::new(
                    &rule_name,
                    format!("{field}.limits"),
                    "is required (or unlimited = true, or deny = true)",
                ))
            }
            None => Vec::new(),
        };
        b = if action == SetAction::Limit {
            b.override_when(when, specs)
        } else if specs.is_empty() {
            b.override_action(when, action)
        } else {
            return Err(PolicyError::new(
                &rule_name,
                format!("{field}.limits"),
                "an override that is unlimited or denies takes no limits",
            ));
        };
    }
    for (tier, t) in raw.tiers {
        let field = format!("tiers.{tier}");
        spans.add(field.clone(), t.span());
        let specs = limit_specs(
            &rule_name,
            &format!("{field}.limits"),
            t.into_inner().limits,
            spans,
        )?;
        b = b.tier(tier, specs);
    }
    Ok(b)
}

/// Reads `unlimited` and `deny` of a rule (`prefix` empty) or an override.
fn set_action(
    rule: &str,
    prefix: &str,
    unlimited: &Option<Spanned<bool>>,
    deny: &Option<Spanned<bool>>,
    spans: &mut Spans,
) -> Result<SetAction, PolicyError> {
    if let Some(u) = unlimited {
        spans.add(format!("{prefix}unlimited"), u.span());
    }
    if let Some(d) = deny {
        spans.add(format!("{prefix}deny"), d.span());
    }
    let on = |f: &Option<Spanned<bool>>| f.as_ref().is_some_and(|v| *v.get_ref());
    match (on(unlimited), on(deny)) {
        (true, true) => Err(PolicyError::new(
            rule,
            format!("{prefix}deny"),
            "give unlimited or deny, not both",
        )),
        (true, false) => Ok(SetAction::Unlimited),
        (false, true) => Ok(SetAction::Deny),
        (false, false) => Ok(SetAction::Limit),
    }
}

fn limit_specs(
    rule: &str,
    field: &str,
    limits: Spanned<Vec<Spanned<RawLimit>>>,
    spans: &mut Spans,
) -> Result<Vec<LimitSpec>, PolicyError> {
    spans.add(field, limits.span());
    let mut out = Vec::new();
    for (i, l) in limits.into_inner().into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        spans.add(f.clone(), l.span());
        let l = l.into_inner();
        let bad = |name: &str, msg: String| PolicyError::new(rule, format!("{f}.{name}"), msg);
        spans.add(format!("{f}.kind"), l.kind.span());
        spans.add(format!("{f}.amount"), l.amount.span());
        let kind = l
            .kind
            .get_ref()
            .parse()
            .map_err(|e: tollgate_core::LimitError| bad("kind", e.to_string()))?;
        let window = match &l.per {
            Some(per) => {
                spans.add(format!("{f}.per"), per.span());
                per.get_ref()
                    .parse()
                    .map_err(|e: tollgate_core::LimitError| bad("per", e.to_string()))?
            }
            None if kind == tollgate_core::LimitKind::Concurrency => tollgate_core::Window::MINUTE,
            None => {
                return Err(bad(
                    "per",
                    "is required (second, minute, hour, day, month or a duration)".into(),
                ))
            }
        };
        let mut spec = LimitSpec::new(kind, *l.amount.get_ref(), window);
        if let Some(a) = &l.algorithm {
            spans.add(format!("{f}.algorithm"), a.span());
            spec.algorithm = Some(
                a.get_ref()
                    .parse()
                    .map_err(|e: tollgate_core::LimitError| bad("algorithm", e.to_string()))?,
            );
        }
        if let Some(burst) = &l.burst {
            spans.add(format!("{f}.burst"), burst.span());
            spec.burst = Some(*burst.get_ref());
        }
        if let Some(o) = &l.utc_offset {
            spans.add(format!("{f}.utc_offset"), o.span());
            spec.utc_offset = o
                .get_ref()
                .parse()
                .map_err(|e: tollgate_core::LimitError| bad("utc_offset", e.to_string()))?;
        }
        if let Some(lease) = &l.lease {
            spans.add(format!("{f}.lease"), lease.span());
            spec.lease = Some(parse_duration(lease.get_ref()).ok_or_else(|| {
                bad(
                    "lease",
                    format!("{:?} is not a duration like 30s or 5m", lease.get_ref()),
                )
            })?);
        }
        out.push(spec);
    }
    Ok(out)
}

/// The 1-based line and column of byte `offset` in `source`.
fn locate(source: &str, file: &str, offset: usize) -> Location {
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count().saturating_add(1);
    let line_start = before.rfind('\n').map_or(0, |i| i.saturating_add(1));
    Location {
        file: file.to_owned(),
        line,
        column: before[line_start..].chars().count().saturating_add(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[rules]]
name = "per-tenant"
match = { tenant = "*", provider = "openai" }
limits = [
  { kind = "requests", amount = 500, per = "minute", burst = 50 },
  { kind = "tokens", amount = 40000, per = "minute" },
  { kind = "concurrency", amount = 10, lease = "5m" },
]

[[rules.overrides]]
match = { tenant = "premium" }
limits = [{ kind = "requests", amount = 2000, per = "minute" }]

[rules.tiers.pro]
limits = [{ kind = "requests", amount = 1000, per = "minute" }]
"#;

    #[test]
    fn a_good_file_loads() {
        let p = Policy::from_toml(GOOD, "good.toml").unwrap();
        let r = p.rule("per-tenant").unwrap();
        assert_eq!(r.default.limits.len(), 3);
        assert_eq!(r.overrides.len(), 2);
    }

    fn err(src: &str) -> PolicyError {
        Policy::from_toml(src, "bad.toml").unwrap_err()
    }

    #[test]
    fn errors_name_file_line_rule_and_field() {
        let e = err(&GOOD.replace("burst = 50", "burst = 0"));
        assert_eq!(e.field, "limits[0].burst");
        assert_eq!(e.rule.as_deref(), Some("per-tenant"));
        let loc = e.location.clone().unwrap();
        assert_eq!((loc.file.as_str(), loc.line), ("bad.toml", 6));
        assert!(e.to_string().starts_with("bad.toml:6:"), "{e}");

        let e = err(&GOOD.replace("amount = 1000", "amount = 0"));
        assert_eq!(e.field, "tiers.pro.limits[0].amount");
        assert_eq!(e.location.unwrap().line, 16);

        let e = err(&GOOD.replace(
            "per = \"minute\" },\n  { kind = \"concurrency\"",
            "per = \"0s\" },\n  { kind = \"concurrency\"",
        ));
        assert_eq!(e.field, "limits[1].per");
        assert_eq!(e.location.unwrap().line, 7);

        let e = err(&GOOD.replace("tenant = \"premium\"", "tenant = \"[\""));
        assert_eq!(e.field, "overrides[0].match.tenant");
        assert_eq!(e.location.unwrap().line, 12);

        let e = err(&GOOD.replace("kind = \"tokens\"", "kind = \"bytes\""));
        assert_eq!(e.field, "limits[1].kind");

        let e = err(&GOOD.replace("burst = 50", "brust = 50"));
        assert_eq!(e.field, "toml");
        assert!(e.message.contains("brust"), "{}", e.message);
        assert_eq!(e.location.unwrap().line, 6);

        let e = err(&format!("{GOOD}\n[[rules]]\nname = \"per-tenant\"\nlimits = [{{ kind = \"requests\", amount = 1, per = \"second\" }}]\n"));
        assert_eq!(e.field, "name");
        assert_eq!(e.location.unwrap().line, 19);

        let e = err("[[rules]]\nname = \"x\"\nlimits = [{ kind = \"requests\", amount = -1, per = \"second\" }]\n");
        assert_eq!(e.location.unwrap().line, 3);

        let e = err("[[rules]]\nname = \"x\"\nlimits = [{ kind = \"requests\", amount = 5, per = \"minute\" }, { kind = \"requests\", amount = 5, per = \"minute\" }]\n");
        assert_eq!(e.field, "limits[1]");
        assert!(e.message.contains("duplicates limits[0]"));
    }
}

#[cfg(test)]
mod match_mode_tests {
    use super::*;
    use crate::policy::MatchMode;
    use crate::Subject;

    const RULES: &str = r#"
[[rules]]
name = "tenant"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 5, per = "minute" }]

[[rules]]
name = "tenant-any-depth"
match = { tenant = "*" }
match_mode = "subset"
limits = [{ kind = "requests", amount = 5, per = "minute" }]

[[rules]]
name = "tenant-model"
match = { tenant = "*", model = "*" }
match_mode = "exact"
unlimited = true

[[rules.overrides]]
match = { model = "blocked" }
deny = true
"#;

    fn names(p: &Policy, s: &Subject<'_>) -> Vec<&'static str> {
        p.matching(s).map(|r| r.name()).collect()
    }

    #[test]
    fn exact_rules_meet_only_descriptors_of_their_own_depth() {
        let p = Policy::from_toml(RULES, "m.toml").unwrap();
        let shallow = Subject::new().tenant("t");
        let deep = Subject::new().tenant("t").model("m");
        // Outside gRPC (subset by default) every rule whose match is met applies.
        assert_eq!(names(&p, &shallow), ["tenant", "tenant-any-depth"]);
        assert_eq!(
            names(&p, &deep),
            ["tenant", "tenant-any-depth", "tenant-model"]
        );
        // A descriptor: auto rules meet only their own depth; subset rules any depth.
        let shallow = shallow.exact();
        let deep = deep.exact();
        assert_eq!(names(&p, &shallow), ["tenant", "tenant-any-depth"]);
        assert_eq!(names(&p, &deep), ["tenant-any-depth", "tenant-model"]);
        // `exact` holds for subjects that are not descriptors too.
        let extra = Subject::new().tenant("t").model("m").label("region", "eu");
        assert!(!names(&p, &extra).contains(&"tenant-model"));

        let r = p.rule("tenant-model").unwrap();
        assert_eq!(r.match_mode(), MatchMode::Exact);
        assert_eq!(r.limits_for(&deep).action(), SetAction::Unlimited);
        let blocked = Subject::new().tenant("t").model("blocked").exact();
        assert_eq!(r.limits_for(&blocked).action(), SetAction::Deny);
    }

    #[test]
    fn bad_match_modes_and_actions_name_their_field() {
        let e = Policy::from_toml(&RULES.replace("\"exact\"", "\"loose\""), "m.toml").unwrap_err();
        assert_eq!(e.field, "match_mode");
        assert_eq!(e.location.unwrap().line, 16);
        let e = Policy::from_toml(
            &RULES.replace("unlimited = true", "unlimited = true\ndeny = true"),
            "m.toml",
        )
        .unwrap_err();
        assert_eq!(e.field, "deny");
        let e = Policy::from_toml(
            &RULES.replace(
                "deny = true",
                "deny = true\nlimits = [{ kind = \"requests\", amount = 1, per = \"second\" }]",
            ),
            "m.toml",
        )
        .unwrap_err();
        assert_eq!(e.field, "overrides[0].limits", "{e}");
        let e = Policy::from_toml(&RULES.replace("deny = true", ""), "m.toml").unwrap_err();
        assert_eq!(e.field, "overrides[0].limits", "{e}");
    }
}
