//! `tollgate config import-envoy`: envoyproxy/ratelimit's YAML configuration as tollgate TOML.
//!
//! Every descriptor with a `rate_limit` (a leaf) becomes one rule that selects the domain and
//! the leaf's keys, so that, with the Envoy service's exact matching, it meets descriptors of
//! its own depth only. A key without a value (or with `*`) is selected with `"*"`: one bucket
//! per value, as envoyproxy/ratelimit keeps one counter per value. A wildcard value such as
//! `files/*` keeps one bucket per value too: the rule selects `"*"`, leaves others unlimited
//! and limits the glob in an override.
//!
//! envoyproxy/ratelimit walks a descriptor level by level and prefers, at each level, an
//! entry with that exact value, then a wildcard value, then the key alone; it never comes
//! back to a branch it passed over. Each rule is given unlimited overrides for the values that
//! would have led elsewhere, so a descriptor meets the limit envoyproxy/ratelimit would pick.
//!
//! What cannot be carried is refused with its line: `quota_mode`, `share_threshold: true`,
//! `metadata`, a key named `domain`, a key tollgate cannot name, unknown fields.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fmt::Write as _;

use crate::config::valid_attribute_name;
use crate::envoy_yaml::{self, Kind, Node};

/// The attribute that receives the request's domain in imported configurations.
const DOMAIN: &str = "domain";

/// What cannot be carried over, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The file.
    pub file: String,
    /// The 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for ImportError {}

/// One entry of a leaf's path.
#[derive(Clone, Debug)]
struct Step {
    key: String,
    /// `None` for the key alone (or `*`).
    value: Option<String>,
}

impl Step {
    fn is_wildcard(&self) -> bool {
        self.value.as_deref().is_some_and(|v| v.contains('*'))
    }
}

/// What a leaf does.
#[derive(Clone, Debug)]
enum Action {
    Limit { per_unit: u32, unit: &'static str },
    Unlimited,
    Deny,
}

/// A descriptor with a `rate_limit`: one rule.
#[derive(Clone, Debug)]
struct Leaf {
    domain: String,
    path: Vec<Step>,
    action: Action,
    name: Option<String>,
    replaces: Vec<(String, usize)>,
    shadow: bool,
    detailed: bool,
    line: usize,
    /// `(level, value)`: a descriptor with this value at this level goes elsewhere.
    elsewhere: Vec<(usize, String)>,
}

/// A `rate_limit` block: what it does, its name, and the names it replaces with their lines.
type RateLimitBlock = (Action, Option<String>, Vec<(String, usize)>);

struct Reader<'f> {
    file: &'f str,
}

impl Reader<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> ImportError {
        ImportError {
            file: self.file.to_owned(),
            line,
            message: message.into(),
        }
    }

    fn map<'n>(&self, n: &'n Node, what: &str) -> Result<&'n [(Node, Node)], ImportError> {
        match &n.kind {
            Kind::Map(pairs) => Ok(pairs),
            _ => Err(self.err(
                n.line,
                format!("{what} must be a mapping, not {}", n.what()),
            )),
        }
    }

    fn seq<'n>(&self, n: &'n Node, what: &str) -> Result<&'n [Node], ImportError> {
        match &n.kind {
            Kind::Seq(items) => Ok(items),
            _ => Err(self.err(n.line, format!("{what} must be a list, not {}", n.what()))),
        }
    }

    fn string(&self, n: &Node, what: &str) -> Result<String, ImportError> {
        n.as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.err(n.line, format!("{what} must be a string, not {}", n.what())))
    }

    fn boolean(&self, n: &Node, what: &str) -> Result<bool, ImportError> {
        match &n.kind {
            Kind::Scalar(s, false) if s == "true" => Ok(true),
            Kind::Scalar(s, false) if s == "false" => Ok(false),
            _ => Err(self.err(n.line, format!("{what} must be true or false"))),
        }
    }

    /// The fields of a mapping by name, refusing names not in `known`.
    fn fields<'n>(
        &self,
        n: &'n Node,
        what: &str,
        known: &[&str],
    ) -> Result<BTreeMap<&'n str, &'n Node>, ImportError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.map(n, what)? {
            let name = k
                .as_str()
                .ok_or_else(|| self.err(k.line, format!("{what}: keys must be strings")))?;
            if !known.contains(&name) {
                return Err(self.err(
                    k.line,
                    format!(
                        "{what}: unknown field {name:?} (known: {})",
                        known.join(", ")
                    ),
                ));
            }
            if out.insert(name, v).is_some() {
                return Err(self.err(k.line, format!("{what}: {name:?} is given twice")));
            }
        }
        Ok(out)
    }

    /// The leaves of the descriptor list `list` under `path`.
    fn descriptors(
        &self,
        domain: &str,
        list: &Node,
        path: &[Step],
        out: &mut Vec<Leaf>,
    ) -> Result<(), ImportError> {
        const FIELDS: [&str; 10] = [
            "key",
            "value",
            "rate_limit",
            "descriptors",
            "shadow_mode",
            "quota_mode",
            "detailed_metric",
            "value_to_metric",
            "share_threshold",
            "metadata",
        ];
        let items = self.seq(list, "descriptors")?;
        let mut steps: Vec<Step> = Vec::with_capacity(items.len());
        let first = out.len();
        let mut seen = BTreeSet::new();
        for item in items {
            let f = self.fields(item, "descriptor", &FIELDS)?;
            let key_node = f
                .get("key")
                .ok_or_else(|| self.err(item.line, "descriptor: key is required"))?;
            let key = self.string(key_node, "key")?;
            if key.is_empty() {
                return Err(self.err(key_node.line, "descriptor has an empty key"));
            }
            if key == DOMAIN {
                return Err(self.err(
                    key_node.line,
                    "a key named \"domain\" cannot be carried: the imported configuration gives \
                     the domain that attribute",
                ));
            }
            valid_attribute_name(&key).map_err(|m| self.err(key_node.line, m))?;
            let value = match f.get("value") {
                Some(v) => Some(self.string(v, "value")?).filter(|v| !v.is_empty() && v != "*"),
                None => None,
            };
            if !seen.insert((key.clone(), value.clone())) {
                return Err(self.err(item.line, format!("duplicate descriptor {key:?} {value:?}")));
            }
            for refused in ["quota_mode", "share_threshold"] {
                if let Some(n) = f.get(refused) {
                    if self.boolean(n, refused)? {
                        return Err(self.err(
                            n.line,
                            format!(
                                "{refused}: true cannot be carried (tollgate has no equivalent)"
                            ),
                        ));
                    }
                }
            }
            if let Some(n) = f.get("metadata") {
                return Err(self.err(
                    n.line,
                    "metadata cannot be carried (tollgate answers no dynamic metadata)",
                ));
            }
            let flag = |name: &str| -> Result<bool, ImportError> {
                f.get(name).map_or(Ok(false), |n| self.boolean(n, name))
            };
            let step = Step { key, value };
            let mut here = path.to_vec();
            here.push(step.clone());
            steps.push(step);
            if let Some(rl) = f.get("rate_limit") {
                let (action, name, replaces) = self.rate_limit(rl)?;
                out.push(Leaf {
                    domain: domain.to_owned(),
                    path: here.clone(),
                    action,
                    name,
                    replaces,
                    shadow: flag("shadow_mode")?,
                    detailed: flag("detailed_metric")? || flag("value_to_metric")?,
                    line: item.line,
                    elsewhere: Vec::new(),
                });
            }
            if let Some(nested) = f.get("descriptors") {
                self.descriptors(domain, nested, &here, out)?;
            }
        }
        // The values at this level that take a descriptor away from each leaf below it.
        let level = path.len();
        for leaf in &mut out[first..] {
            let mine = &leaf.path[level];
            for other in &steps {
                let Some(v) = &other.value else { continue };
                if other.key != mine.key || other.value == mine.value {
                    continue;
                }
                let wins = match &mine.value {
                    None => true,
                    Some(g) if mine.is_wildcard() => !other.is_wildcard() && wildcard_match(g, v),
                    Some(_) => false,
                };
                if wins {
                    leaf.elsewhere.push((level, v.clone()));
                }
            }
        }
        Ok(())
    }

    /// `rate_limit`: what it does, its name, and what it replaces.
    fn rate_limit(&self, n: &Node) -> Result<RateLimitBlock, ImportError> {
        let f = self.fields(
            n,
            "rate_limit",
            &["unit", "requests_per_unit", "unlimited", "name", "replaces"],
        )?;
        let unlimited = match f.get("unlimited") {
            Some(u) => self.boolean(u, "unlimited")?,
            None => false,
        };
        let name = f.get("name").map(|v| self.string(v, "name")).transpose()?;
        let mut replaces = Vec::new();
        if let Some(list) = f.get("replaces") {
            for item in self.seq(list, "replaces")? {
                let r = self.fields(item, "replaces", &["name"])?;
                let name = r
                    .get("name")
                    .map(|v| self.string(v, "replaces name"))
                    .transpose()?
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        self.err(item.line, "should not have an empty replaces entry")
                    })?;
                replaces.push((name, item.line));
            }
        }
        let unit = f.get("unit");
        if unlimited {
            if let Some(u) = unit {
                return Err(self.err(u.line, "should not specify rate limit unit when unlimited"));
            }
            return Ok((Action::Unlimited, name, replaces));
        }
        let unit_node = unit.ok_or_else(|| self.err(n.line, "rate_limit: unit is required"))?;
        let unit_text = self.string(unit_node, "unit")?.to_ascii_lowercase();
        let unit = ["second", "minute", "hour", "day", "week", "month", "year"]
            .into_iter()
            .find(|u| *u == unit_text)
            .ok_or_else(|| {
                self.err(
                    unit_node.line,
                    format!("invalid rate limit unit {unit_text:?}"),
                )
            })?;
        let per = f
            .get("requests_per_unit")
            .ok_or_else(|| self.err(n.line, "rate_limit: requests_per_unit is required"))?;
        let per_unit: u32 = per.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
            self.err(
                per.line,
                "requests_per_unit must be a whole number from 0 to 4294967295",
            )
        })?;
        let action = if per_unit == 0 {
            Action::Deny
        } else {
            Action::Limit { per_unit, unit }
        };
        Ok((action, name, replaces))
    }
}

/// envoyproxy/ratelimit's wildcard match: each `*` matches any run of characters.
fn wildcard_match(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return pattern == value;
    };
    if parts.len() == 1 {
        return pattern == value;
    }
    if !value.starts_with(first) || value.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    if !value.ends_with(last) {
        return false;
    }
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// An Envoy value as a tollgate selector: literal except for `*` (glob characters escaped).
fn selector(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A TOML string (or key), quoted.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn inline(pairs: &[(String, String)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
        .collect();
    format!("{{ {} }}", inner.join(", "))
}

/// envoyproxy/ratelimit's name of a leaf: `domain.key_value.key`, made a valid rule name.
fn generated_name(leaf: &Leaf) -> String {
    let mut name = leaf.domain.clone();
    for s in &leaf.path {
        name.push('.');
        name.push_str(&s.key);
        if let Some(v) = &s.value {
            name.push('_');
            name.push_str(v);
        }
    }
    let mut name: String = name
        .chars()
        .map(|c| if matches!(c, '{' | '}' | ':') { '_' } else { c })
        .collect();
    while name.len() > 120 {
        name.pop();
    }
    name
}

/// Reads envoyproxy/ratelimit configuration files (`(name, text)`, one domain each) and writes
/// the tollgate configuration that limits the same descriptors.
///
/// # Errors
/// An [`ImportError`] naming the file and line of the first thing that cannot be carried.
pub fn import(files: &[(String, String)]) -> Result<String, ImportError> {
    let mut leaves = Vec::new();
    let mut domains: BTreeMap<String, String> = BTreeMap::new();
    for (file, text) in files {
        let r = Reader { file };
        let docs = envoy_yaml::parse(text).map_err(|e| r.err(e.line, e.message))?;
        for doc in &docs {
            let f = r.fields(doc, "the file", &["domain", "descriptors"])?;
            let d = f
                .get("domain")
                .ok_or_else(|| r.err(doc.line, "domain is required"))?;
            let domain = r.string(d, "domain")?;
            if domain.is_empty() {
                return Err(r.err(d.line, "config file cannot have empty domain"));
            }
            if let Some(first) = domains.insert(domain.clone(), file.clone()) {
                return Err(r.err(
                    d.line,
                    format!("duplicate domain {domain:?} (also in {first})"),
                ));
            }
            if let Some(list) = f.get("descriptors") {
                let mut these = Vec::new();
                r.descriptors(&domain, list, &[], &mut these)?;
                leaves.extend(these.into_iter().map(|l| (file.clone(), l)));
            }
        }
    }
    let mut names = BTreeMap::new();
    for (file, leaf) in &leaves {
        let name = leaf.name.clone().unwrap_or_else(|| generated_name(leaf));
        let r = Reader { file };
        if name.is_empty() || name.len() > 128 || name.contains(['{', '}', ':']) {
            return Err(r.err(
                leaf.line,
                format!("{name:?} cannot name a rule (1 to 128 bytes, without '{{', '}}' or ':')"),
            ));
        }
        if names.insert(name.clone(), leaf.line).is_some() {
            return Err(r.err(leaf.line, format!("a second limit is named {name:?}")));
        }
    }
    for (file, leaf) in &leaves {
        for (replaced, line) in &leaf.replaces {
            if !names.contains_key(replaced) {
                return Err(Reader { file }.err(
                    *line,
                    format!("replaces {replaced:?}, which no limit is named"),
                ));
            }
        }
    }
    Ok(render(files, &leaves))
}

fn render(files: &[(String, String)], leaves: &[(String, Leaf)]) -> String {
    let mut out = String::new();
    let sources: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    let _ = writeln!(
        out,
        "# Converted from envoyproxy/ratelimit configuration ({}) by `tollgate config import-envoy`.\n\
         # Each limit is a rule on the domain and the descriptor's keys: the Envoy service matches\n\
         # a descriptor to rules of its own depth. Fixed windows, as envoyproxy/ratelimit counts.\n",
        sources.join(", ")
    );
    out.push_str("[grpc]\ndomain_attribute = \"domain\"\nhits_addend = \"requests\"\n");
    for (file, leaf) in leaves {
        let name = leaf.name.clone().unwrap_or_else(|| generated_name(leaf));
        let globbed = leaf.path.iter().any(Step::is_wildcard);
        let mut matched = vec![(DOMAIN.to_owned(), leaf.domain.clone())];
        let mut own = Vec::new();
        for s in &leaf.path {
            match &s.value {
                Some(v) if s.is_wildcard() => {
                    matched.push((s.key.clone(), "*".to_owned()));
                    own.push((s.key.clone(), selector(v)));
                }
                Some(v) if globbed => {
                    matched.push((s.key.clone(), "*".to_owned()));
                    own.push((s.key.clone(), selector(v)));
                }
                Some(v) => matched.push((s.key.clone(), selector(v))),
                None => matched.push((s.key.clone(), "*".to_owned())),
            }
        }
        let _ = write!(
            out,
            "\n# {file}:{}\n[[rules]]\nname = {}\nmatch = {}\n",
            leaf.line,
            quoted(&name),
            inline(&matched)
        );
        let action = action_toml(&leaf.action);
        if globbed {
            out.push_str("unlimited = true\n");
        } else {
            out.push_str(&action);
        }
        if leaf.shadow {
            out.push_str("shadow = true\n");
        }
        if leaf.detailed {
            out.push_str("detailed_metric = true\n");
        }
        if !leaf.replaces.is_empty() {
            let list: Vec<String> = leaf.replaces.iter().map(|(r, _)| quoted(r)).collect();
            let _ = writeln!(out, "replaces = [{}]", list.join(", "));
        }
        if globbed {
            let _ = write!(
                out,
                "\n[[rules.overrides]]\nmatch = {}\n{action}",
                inline(&own)
            );
        }
        // The values that lead a descriptor to another limit.
        for (level, value) in &leaf.elsewhere {
            let key = &leaf.path[*level].key;
            let mut when: Vec<(String, String)> = if globbed {
                own.iter().filter(|(k, _)| k != key).cloned().collect()
            } else {
                Vec::new()
            };
            when.push((key.clone(), selector(value)));
            let _ = write!(
                out,
                "\n[[rules.overrides]]  # {key} = {value:?} has a limit of its own\nmatch = {}\nunlimited = true\n",
                inline(&when)
            );
        }
    }
    out
}

fn action_toml(a: &Action) -> String {
    match a {
        Action::Limit { per_unit, unit } => format!(
            "limits = [{{ kind = \"requests\", amount = {per_unit}, per = \"{unit}\", algorithm = \"fixed_window\" }}]\n"
        ),
        Action::Unlimited => "unlimited = true\n".to_owned(),
        Action::Deny => "deny = true\n".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_envoy_does() {
        assert!(wildcard_match("files/*", "files/a.pdf"));
        assert!(!wildcard_match("files/*", "file/a"));
        assert!(wildcard_match("/api/*/action", "/api/123/action"));
        assert!(!wildcard_match("/api/*/action", "/api/123/other"));
        assert!(wildcard_match(
            "/api/*/resource/*/action",
            "/api/v1/resource/9/action"
        ));
        assert!(wildcard_match("a*a", "aa") && !wildcard_match("a*a", "a"));
        assert_eq!(selector("a?[b]*"), "a\\?\\[b\\]*");
    }
}
