//! Rules: a selector over subject attributes and the limits that apply to what it selects.

use std::collections::HashSet;
use std::sync::Arc;

use smallvec::SmallVec;
use tollgate_core::{Limit, LimitKind, LimitSpec};

use super::intern::intern;
use super::selector::{Matcher, Selectors};
use crate::error::PolicyError;
use crate::key::salt_of;
use crate::plan::{Meta, Planned};
use crate::store::FailureMode;
use crate::subject::{Attr, Subject};

/// One limit of a rule, with the names stores use for its bucket.
#[derive(Clone, Debug)]
pub struct RuleLimit {
    pub(crate) limit: Limit,
    /// Names the limit within its rule, stable across policy reloads while the limit is
    /// unchanged (so its bucket keeps its state).
    pub(crate) label: &'static str,
    pub(crate) salt: u128,
    /// What a decision needs of this limit, shared with the subjects prepared under it.
    pub(crate) planned: Arc<Planned>,
}

impl RuleLimit {
    /// The limit.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }
    /// The stable name of the limit within its rule.
    pub fn label(&self) -> &'static str {
        self.label
    }
}

/// What a limit set does with the calls it selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SetAction {
    /// Its limits apply (the usual set).
    #[default]
    Limit,
    /// No limit applies, on purpose: the call is covered by the rule and never limited by
    /// it (Envoy's `unlimited: true`).
    Unlimited,
    /// Every call is refused (Envoy's `requests_per_unit: 0`). The limiter applies no
    /// limit for such a set; the service refuses the call before deciding.
    Deny,
}

/// The limits that apply together: a rule's defaults, or one override's.
#[derive(Clone, Debug)]
pub struct LimitSet {
    pub(crate) name: &'static str,
    pub(crate) limits: Vec<RuleLimit>,
    pub(crate) action: SetAction,
}

impl LimitSet {
    /// The set's name: `default`, or the override's selectors such as `tenant=premium`.
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// The limits.
    pub fn limits(&self) -> &[RuleLimit] {
        &self.limits
    }
    /// What the set does: limit, leave unlimited, or deny.
    pub fn action(&self) -> SetAction {
        self.action
    }
}

/// How a rule's `match` meets a subject's attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MatchMode {
    /// `exact` for a subject marked [`Subject::exact`] (an Envoy descriptor), `subset`
    /// otherwise (the default).
    #[default]
    Auto,
    /// The subject must have no attribute the rule's `match` does not name.
    Exact,
    /// The subject may have attributes the rule's `match` does not name.
    Subset,
}

impl MatchMode {
    /// `auto`, `exact` or `subset`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MatchMode::Auto => "auto",
            MatchMode::Exact => "exact",
            MatchMode::Subset => "subset",
        }
    }

    /// Whether the subject's attributes must all be named by the rule.
    #[inline(always)]
    fn exact_for(self, subject: &Subject<'_>) -> bool {
        match self {
            MatchMode::Auto => subject.is_exact(),
            MatchMode::Exact => true,
            MatchMode::Subset => false,
        }
    }
}

impl std::str::FromStr for MatchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(MatchMode::Auto),
            "exact" => Ok(MatchMode::Exact),
            "subset" => Ok(MatchMode::Subset),
            other => Err(format!("{other:?} is not auto, exact or subset")),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Override {
    pub(crate) when: Selectors,
    pub(crate) set: LimitSet,
}

/// A validated rule. Build one with [`Rule::builder`].
#[derive(Clone, Debug)]
pub struct Rule {
    pub(crate) name: &'static str,
    pub(crate) id: u32,
    pub(crate) selectors: Selectors,
    /// Attributes a subject must not have for the rule to apply.
    pub(crate) absent: Vec<Attr>,
    pub(crate) partition: Vec<Attr>,
    pub(crate) default: LimitSet,
    /// Most specific first; ties keep declaration order.
    pub(crate) overrides: Vec<Override>,
    /// What the rule's limits do while the shared store fails.
    pub(crate) failure_mode: crate::store::FailureMode,
    /// Whether a subject may have attributes the match does not name.
    pub(crate) match_mode: MatchMode,
    /// What the rule was built from, so it can be changed and rebuilt at run time.
    source: RuleBuilder,
}

impl Rule {
    /// Starts a rule called `name`.
    pub fn builder(name: impl Into<String>) -> RuleBuilder {
        RuleBuilder {
            name: name.into(),
            selectors: Vec::new(),
            absent: Vec::new(),
            limits: Vec::new(),
            overrides: Vec::new(),
            failure_mode: crate::store::FailureMode::default(),
            match_mode: MatchMode::Auto,
            action: SetAction::Limit,
        }
    }

    /// The rule's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What the rule's limits do while the shared store fails.
    pub fn failure_mode(&self) -> crate::store::FailureMode {
        self.failure_mode
    }

    /// What the rule selects: a subject must have every one of these attributes, with a
    /// matching value, for the rule to apply.
    pub fn selectors(&self) -> &Selectors {
        &self.selectors
    }

    /// Attributes a subject must not have for the rule to apply (so that rules can take
    /// turns: the built-in policy keys on the tenant, else the agent, else the user).
    pub fn absent(&self) -> &[Attr] {
        &self.absent
    }

    /// The attributes the rule partitions by (selected with `*` or `*?`).
    pub fn partition(&self) -> &[Attr] {
        &self.partition
    }

    /// How the rule's match meets a subject's attributes.
    pub fn match_mode(&self) -> MatchMode {
        self.match_mode
    }

    /// Whether the rule applies to `subject`.
    #[inline]
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        self.selectors.matches(subject) && self.lacks_absent(subject) && self.names_all(subject)
    }

    /// Whether the rule's match mode is satisfied: under `exact`, the subject has no
    /// attribute the match does not name.
    #[inline(always)]
    fn names_all(&self, subject: &Subject<'_>) -> bool {
        if !self.match_mode.exact_for(subject) {
            return true;
        }
        subject
            .iter()
            .all(|(name, _)| self.selectors.0.iter().any(|(a, _)| a.name() == name))
    }

    /// Whether `subject` has none of the attributes the rule needs absent.
    #[inline(always)]
    fn lacks_absent(&self, subject: &Subject<'_>) -> bool {
        self.absent.is_empty() || self.absent.iter().all(|a| subject.get(a).is_none())
    }

    /// Whether the rule applies to `subject` and, if so, its partition values pushed onto
    /// `values` (in the order of [`partition`](Self::partition)): one pass over the selectors,
    /// as the partition attributes are the selectors matched with `*`. On `false`, `values`
    /// may hold some of them.
    #[inline]
    pub(crate) fn partition_of<'s>(
        &self,
        subject: &'s Subject<'_>,
        values: &mut SmallVec<[&'s str; 4]>,
    ) -> bool {
        for (attr, matcher) in &self.selectors.0 {
            let Some(v) = subject.get(attr) else {
                if matches!(matcher, Matcher::EachOrAbsent) {
                    values.push("");
                    continue;
                }
                return false;
            };
            match matcher {
                Matcher::Each | Matcher::EachOrAbsent => values.push(v),
                m if m.matches(v) => {}
                _ => return false,
            }
        }
        if let Some(scope) = subject.scope() {
            // After the rule's own values, so that they keep the rule's order.
            values.push(scope);
        }
        self.lacks_absent(subject) && self.names_all(subject)
    }

    /// The limit set for `subject`: the most specific matching override, or the defaults.
    #[inline]
    pub fn limits_for(&self, subject: &Subject<'_>) -> &LimitSet {
        self.overrides
            .iter()
            .find(|o| o.when.matches(subject))
            .map_or(&self.default, |o| &o.set)
    }

    /// The builder this rule was built from: add an override or a limit and rebuild it, then
    /// swap it in with [`Policy::with_rule`](crate::Policy::with_rule) and
    /// [`Limiter::set_policy`](crate::Limiter::set_policy).
    pub fn to_builder(&self) -> RuleBuilder {
        self.source.clone()
    }

    /// The overrides (and tiers) with what each selects, most specific first.
    pub fn overrides(&self) -> impl Iterator<Item = (&Selectors, &LimitSet)> {
        self.overrides.iter().map(|o| (&o.when, &o.set))
    }

    /// The overrides no subject can reach, each with why: an override selecting a value the
    /// rule's own match excludes (`provider = "anthropic"` in a rule on `provider = "openai"`),
    /// or an attribute the rule needs absent.
    pub fn unreachable_overrides(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for o in &self.overrides {
            for (attr, m) in &o.when.0 {
                if self.absent.contains(attr) {
                    out.push((
                        o.set.name,
                        format!("it selects {attr}, which the rule needs absent"),
                    ));
                    continue;
                }
                let Some((_, rule_m)) = self.selectors.0.iter().find(|(a, _)| a == attr) else {
                    continue;
                };
                // An exact value is a subject's value: it must pass the rule's matcher.
                if let Matcher::Exact(v) = m {
                    if !rule_m.matches(v) {
                        out.push((
                            o.set.name,
                            format!(
                                "it selects {attr} = {v:?}, which the rule's match ({attr} = {:?}) excludes",
                                rule_m.as_str()
                            ),
                        ));
                    }
                }
            }
        }
        out
    }

    /// Every limit set of the rule: the defaults, then the overrides.
    pub fn limit_sets(&self) -> impl Iterator<Item = &LimitSet> {
        std::iter::once(&self.default).chain(self.overrides.iter().map(|o| &o.set))
    }
}

/// Builds a [`Rule`]; [`RuleBuilder::build`] validates it.
#[derive(Clone, Debug)]
pub struct RuleBuilder {
    name: String,
    selectors: Vec<(String, String)>,
    absent: Vec<String>,
    limits: Vec<LimitSpec>,
    /// `(field name, selectors, limits)`: the field is `overrides[i]` or `tiers.<name>`.
    overrides: Vec<RawOverride>,
    failure_mode: crate::store::FailureMode,
    match_mode: MatchMode,
    /// What the defaults do.
    action: SetAction,
}

/// An override as given to the builder: `(field name, selectors, limits, action)`.
type RawOverride = (String, Vec<(String, String)>, Vec<LimitSpec>, SetAction);

impl RuleBuilder {
    /// Selects subjects whose `attr` matches `value`: `"*"` for each distinct value (one bucket
    /// per value), a glob such as `"gpt-4*"`, or an exact value.
    pub fn when(mut self, attr: impl Into<String>, value: impl Into<String>) -> Self {
        self.selectors.push((attr.into(), value.into()));
        self
    }

    /// Applies only to subjects without `attr`: rules can take turns, one keyed on the
    /// tenant, the next on the agent of calls without a tenant.
    pub fn absent(mut self, attr: impl Into<String>) -> Self {
        self.absent.push(attr.into());
        self
    }

    /// One bucket per distinct value of `attr` (same as `when(attr, "*")`).
    pub fn per(self, attr: impl Into<String>) -> Self {
        self.when(attr, "*")
    }

    /// What the rule's limits do while the shared store fails (default
    /// [`FailureMode::Local`]).
    pub fn failure_mode(mut self, mode: crate::store::FailureMode) -> Self {
        self.failure_mode = mode;
        self
    }

    /// How the rule's match meets a subject's attributes (default [`MatchMode::Auto`]).
    pub fn match_mode(mut self, mode: MatchMode) -> Self {
        self.match_mode = mode;
        self
    }

    /// What the defaults do with the calls they select: [`SetAction::Unlimited`] and
    /// [`SetAction::Deny`] take no limits.
    pub fn action(mut self, action: SetAction) -> Self {
        self.action = action;
        self
    }

    /// Adds a limit to the defaults.
    pub fn limit(mut self, spec: LimitSpec) -> Self {
        self.limits.push(spec);
        self
    }

    /// Replaces the defaults for subjects that match every `(attr, value)` pair: a premium
    /// tenant gets its own limits. The most specific matching override wins.
    pub fn override_when<A: Into<String>, V: Into<String>>(
        mut self,
        when: impl IntoIterator<Item = (A, V)>,
        limits: impl IntoIterator<Item = LimitSpec>,
    ) -> Self {
        let when = when
            .into_iter()
            .map(|(a, v)| (a.into(), v.into()))
            .collect();
        let n = self
            .overrides
            .iter()
            .filter(|(f, _, _, _)| f.starts_with("overrides["))
            .count();
        self.overrides.push((
            format!("overrides[{n}]"),
            when,
            limits.into_iter().collect(),
            SetAction::Limit,
        ));
        self
    }

    /// An override that selects like [`override_when`](Self::override_when) and, instead of
    /// limits, leaves the calls unlimited or denies them (`action`).
    pub fn override_action<A: Into<String>, V: Into<String>>(
        self,
        when: impl IntoIterator<Item = (A, V)>,
        action: SetAction,
    ) -> Self {
        let mut b = self.override_when(when, std::iter::empty());
        if let Some(o) = b.overrides.last_mut() {
            o.3 = action;
        }
        b
    }

    /// Sets the limits for subjects that match every `(attr, value)` pair: replaces the
    /// override with exactly these pairs (in any order) if there is one, adds it otherwise.
    /// The run-time form of [`override_when`](Self::override_when), for limits set on one
    /// subject while the service runs.
    pub fn set_override<A: Into<String>, V: Into<String>>(
        mut self,
        when: impl IntoIterator<Item = (A, V)>,
        limits: impl IntoIterator<Item = LimitSpec>,
    ) -> Self {
        let when: Vec<(String, String)> = when
            .into_iter()
            .map(|(a, v)| (a.into(), v.into()))
            .collect();
        let limits: Vec<LimitSpec> = limits.into_iter().collect();
        match self
            .overrides
            .iter_mut()
            .find(|(_, w, _, _)| same_pairs(w, &when))
        {
            Some(o) => {
                o.2 = limits;
                o.3 = SetAction::Limit;
                self
            }
            None => self.override_when(when, limits),
        }
    }

    /// Removes the override with exactly these `(attr, value)` pairs; returns the builder and
    /// whether there was one.
    pub fn remove_override(mut self, when: &[(String, String)]) -> (Self, bool) {
        let before = self.overrides.len();
        self.overrides.retain(|(_, w, _, _)| !same_pairs(w, when));
        let removed = self.overrides.len() != before;
        (self, removed)
    }

    /// The limits for subjects whose `tier` attribute is `tier` (an override on `tier`).
    pub fn tier(
        mut self,
        tier: impl Into<String>,
        limits: impl IntoIterator<Item = LimitSpec>,
    ) -> Self {
        let tier = tier.into();
        self.overrides.push((
            format!("tiers.{tier}"),
            vec![("tier".to_owned(), tier)],
            limits.into_iter().collect(),
            SetAction::Limit,
        ));
        self
    }

    /// Validates the rule.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the rule and the field: an empty name, a bad selector, no
    /// limits (a rule needs defaults, overrides or tiers), an invalid limit, a duplicate limit, or an override on a partition attribute
    /// with `*`.
    pub fn build(self) -> Result<Rule, PolicyError> {
        let source = self.clone();
        let rule_name = self.name.trim().to_owned();
        let err = |field: String, message: String| PolicyError::new(&rule_name, field, message);
        if rule_name.is_empty() {
            return Err(err("name".into(), "must not be empty".into()));
        }
        if rule_name.len() > 128 || rule_name.contains(['{', '}', ':']) {
            return Err(err(
                "name".into(),
                "must be at most 128 bytes, without '{', '}' or ':'".into(),
            ));
        }
        let selectors = parse_selectors(&self.selectors, "match", &err)?;
        let partition = selectors
            .0
            .iter()
            .filter(|(_, m)| matches!(m, Matcher::Each | Matcher::EachOrAbsent))
            .map(|(a, _)| a.clone())
            .collect();
        let mut absent: Vec<Attr> = Vec::with_capacity(self.absent.len());
        for (i, name) in self.absent.iter().enumerate() {
            let name = name.trim();
            if name.is_empty() || name.len() > 64 {
                return Err(err(
                    format!("absent[{i}]"),
                    format!("{name:?} is not an attribute name (1 to 64 bytes)"),
                ));
            }
            let attr = Attr::named(name);
            if selectors.0.iter().any(|(a, _)| *a == attr) {
                return Err(err(
                    format!("absent[{i}]"),
                    format!("{attr} is also in match: no subject could match the rule"),
                ));
            }
            if absent.contains(&attr) {
                return Err(err(
                    format!("absent[{i}]"),
                    format!("{attr} is listed twice"),
                ));
            }
            absent.push(attr);
        }
        let (name, id) = intern(&rule_name);
        // A rule may have no default limits when it has overrides (tiers only): subjects that
        // match no override are then not limited by it.
        let default = if self.limits.is_empty()
            && self.action == SetAction::Limit
            && !self.overrides.is_empty()
        {
            let (set_name, _) = intern("default");
            LimitSet {
                name: set_name,
                limits: Vec::new(),
                action: SetAction::Limit,
            }
        } else {
            build_set(
                name,
                self.failure_mode,
                "default",
                &self.limits,
                self.action,
                "limits",
                &err,
            )?
        };
        let mut overrides = Vec::with_capacity(self.overrides.len());
        let mut seen = HashSet::new();
        for (field, when, limits, action) in &self.overrides {
            let when = parse_selectors(when, &format!("{field}.match"), &err)?;
            if when.0.is_empty() {
                return Err(err(
                    format!("{field}.match"),
                    "must name at least one attribute".into(),
                ));
            }
            if when
                .0
                .iter()
                .any(|(_, m)| matches!(m, Matcher::Each | Matcher::EachOrAbsent))
            {
                return Err(err(
                    format!("{field}.match"),
                    "an override selects values; \"*\" belongs in the rule's match".into(),
                ));
            }
            let set_name = when.describe();
            if !seen.insert(set_name.clone()) {
                return Err(err(
                    format!("{field}.match"),
                    format!("duplicates an earlier override ({set_name})"),
                ));
            }
            let set = build_set(
                name,
                self.failure_mode,
                &set_name,
                limits,
                *action,
                &format!("{field}.limits"),
                &err,
            )?;
            overrides.push(Override { when, set });
        }
        // Most specific first; the sort is stable, so ties keep declaration order.
        overrides.sort_by_key(|o| std::cmp::Reverse(o.when.specificity()));
        Ok(Rule {
            name,
            id,
            selectors,
            absent,
            partition,
            default,
            overrides,
            failure_mode: self.failure_mode,
            match_mode: self.match_mode,
            source,
        })
    }
}

/// Whether two selector lists hold the same pairs, in any order.
fn same_pairs(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len() && a.iter().all(|p| b.contains(p))
}

fn parse_selectors(
    raw: &[(String, String)],
    field: &str,
    err: &impl Fn(String, String) -> PolicyError,
) -> Result<Selectors, PolicyError> {
    let mut out: Vec<(Attr, Matcher)> = Vec::with_capacity(raw.len());
    for (attr, value) in raw {
        let attr_name = attr.trim();
        if attr_name.is_empty() || attr_name.len() > 64 {
            return Err(err(
                field.to_owned(),
                format!("{attr:?} is not an attribute name (1 to 64 bytes)"),
            ));
        }
        let attr = Attr::named(attr_name);
        if out.iter().any(|(a, _)| *a == attr) {
            return Err(err(format!("{field}.{attr}"), "is selected twice".into()));
        }
        let m = Matcher::parse(value).map_err(|m| err(format!("{field}.{attr}"), m))?;
        out.push((attr, m));
    }
    Ok(Selectors(out))
}

fn build_set(
    rule: &'static str,
    failure: FailureMode,
    set_name: &str,
    specs: &[LimitSpec],
    action: SetAction,
    field: &str,
    err: &impl Fn(String, String) -> PolicyError,
) -> Result<LimitSet, PolicyError> {
    match action {
        SetAction::Limit if specs.is_empty() => {
            return Err(err(field.to_owned(), "needs at least one limit".into()));
        }
        SetAction::Unlimited | SetAction::Deny if !specs.is_empty() => {
            let what = if action == SetAction::Deny {
                "deny"
            } else {
                "unlimited"
            };
            return Err(err(
                field.to_owned(),
                format!("a set that is {what} takes no limits"),
            ));
        }
        _ => {}
    }
    let mut limits: Vec<RuleLimit> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let limit = spec
            .build()
            .map_err(|e| err(format!("{field}[{i}].{}", e.field()), e.to_string()))?;
        let label = limit_label(set_name, &limit);
        let (label, _) = intern(&label);
        // The label names the limit's bucket: two limits with one label (equal, or differing
        // only in what the label leaves out, such as the lease of a requests limit) would
        // count one bucket twice in every decision.
        if let Some(j) = limits.iter().position(|l| l.label == label) {
            return Err(err(
                format!("{field}[{i}]"),
                format!("duplicates {field}[{j}] (the same bucket)"),
            ));
        }
        let meta = Meta {
            rule,
            label,
            kind: limit.kind(),
            denial: crate::stats::denial_labels(rule, limit.kind(), limit.is_quota()),
        };
        limits.push(RuleLimit {
            limit,
            label,
            salt: salt_of(rule, label),
            planned: Arc::new(Planned {
                limit,
                failure,
                meta,
            }),
        });
    }
    let (name, _) = intern(set_name);
    Ok(LimitSet {
        name,
        limits,
        action,
    })
}

/// A stable, readable name for a limit within a rule: it changes exactly when the limit does.
fn limit_label(set: &str, l: &Limit) -> String {
    let mut s = format!(
        "{set}/{}:{}/{}:{}",
        l.kind(),
        l.amount(),
        l.window(),
        l.algorithm()
    );
    if l.burst() != l.amount() {
        s.push_str(&format!(":b{}", l.burst()));
    }
    if l.utc_offset().seconds() != 0 {
        s.push_str(&format!(":{}", l.utc_offset()));
    }
    if l.kind() == LimitKind::Concurrency {
        s = format!(
            "{set}/concurrency:{}:lease{}us",
            l.amount(),
            l.lease_micros()
        );
    }
    s
}
