//! The subject of a call: who is calling what (tenant, agent, user, provider, model, tier and
//! custom labels).

use std::borrow::Cow;
use std::fmt;

use smallvec::SmallVec;

/// An attribute of a subject that rules can select on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attr {
    /// The customer or organisation.
    Tenant,
    /// The agent making the call.
    Agent,
    /// The end user.
    User,
    /// The model provider (openai, anthropic, vllm, …).
    Provider,
    /// The model.
    Model,
    /// The service tier, which rules can use to pick a limit set.
    Tier,
    /// Any other label.
    Custom(Box<str>),
}

const KNOWN: [Attr; 6] = [
    Attr::Tenant,
    Attr::Agent,
    Attr::User,
    Attr::Provider,
    Attr::Model,
    Attr::Tier,
];

impl Attr {
    /// The attribute called `name`: a known one, or a custom label.
    pub fn named(name: &str) -> Attr {
        KNOWN
            .iter()
            .find(|a| a.name() == name)
            .cloned()
            .unwrap_or_else(|| Attr::Custom(name.into()))
    }

    /// The attribute's name.
    pub fn name(&self) -> &str {
        match self {
            Attr::Tenant => "tenant",
            Attr::Agent => "agent",
            Attr::User => "user",
            Attr::Provider => "provider",
            Attr::Model => "model",
            Attr::Tier => "tier",
            Attr::Custom(name) => name,
        }
    }

    #[inline]
    fn slot(&self) -> Option<usize> {
        match self {
            Attr::Tenant => Some(0),
            Attr::Agent => Some(1),
            Attr::User => Some(2),
            Attr::Provider => Some(3),
            Attr::Model => Some(4),
            Attr::Tier => Some(5),
            Attr::Custom(_) => None,
        }
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&str> for Attr {
    fn from(name: &str) -> Self {
        Attr::named(name)
    }
}

/// The attributes of one call. Values are borrowed when they can be, so building a subject on
/// the hot path allocates nothing.
///
/// ```
/// use tollgate::Subject;
/// let s = Subject::new().tenant("acme").provider("openai").label("region", "eu");
/// assert_eq!(s.get(&"region".into()), Some("eu"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject<'a> {
    known: [Option<Cow<'a, str>>; 6],
    custom: SmallVec<[(Cow<'a, str>, Cow<'a, str>); 2]>,
    /// Whether the attributes are the whole descriptor (see [`Subject::exact`]).
    exact: bool,
    /// A namespace of the subject's buckets (see [`Subject::scoped`]).
    scope: Option<Cow<'a, str>>,
}

impl<'a> Subject<'a> {
    /// A subject with no attributes.
    #[inline]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the tenant.
    #[inline]
    pub fn tenant(self, v: impl Into<Cow<'a, str>>) -> Self {
        self.with_slot(0, v.into())
    }
    /// Sets the agent.
    #[inline]
    pub fn agent(self, v: impl Into<Cow<'a, str>>) -> Self {
        self.with_slot(1, v.into())
    }
    /// Sets the user.
    #[inline]
    pub fn user(self, v: impl Into<Cow<'a, str>>) -> Self {
        self.with_slot(2, v.into())
    }
    /// Sets the provider.
    #[inline]
    pub fn provider(self, v: impl Into<Cow<'a, str>>) -> Self {
        self.with_slot(3, v.into())
    }
    /// Sets the model.
    #[inline]
    pub fn model(self, v: impl Into<Cow<'a, str>>) -> Self {
        self.with_slot(4, v.into())
    }
    /// Sets the tier.
    #[inline]
    pub fn tier(self, v: impl Into<Cow<'a, str>>) -> Self {
        self.with_slot(5, v.into())
    }

    /// Sets any attribute by name: a known one (`"tenant"`) or a custom label (`"region"`).
    pub fn label(mut self, name: impl Into<Cow<'a, str>>, v: impl Into<Cow<'a, str>>) -> Self {
        self.set(name, v);
        self
    }

    /// Sets any attribute by name, in place.
    pub fn set(&mut self, name: impl Into<Cow<'a, str>>, v: impl Into<Cow<'a, str>>) {
        let name = name.into();
        let v = v.into();
        if let Some(slot) = Attr::named(&name).slot() {
            if let Some(s) = self.known.get_mut(slot) {
                *s = Some(v);
            }
            return;
        }
        match self.custom.iter_mut().find(|(n, _)| *n == name) {
            Some((_, old)) => *old = v,
            None => self.custom.push((name, v)),
        }
    }

    #[inline]
    fn with_slot(mut self, slot: usize, v: Cow<'a, str>) -> Self {
        if let Some(s) = self.known.get_mut(slot) {
            *s = Some(v);
        }
        self
    }

    /// The value of `attr`, if the subject has it.
    #[inline]
    pub fn get(&self, attr: &Attr) -> Option<&str> {
        match attr.slot() {
            Some(slot) => self.known.get(slot).and_then(|v| v.as_deref()),
            None => self
                .custom
                .iter()
                .find(|(n, _)| **n == *attr.name())
                .map(|(_, v)| &**v),
        }
    }

    /// Every attribute the subject has, known ones first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        KNOWN
            .iter()
            .zip(self.known.iter())
            .filter_map(|(a, v)| v.as_deref().map(|v| (a.name(), v)))
            .chain(self.custom.iter().map(|(n, v)| (&**n, &**v)))
    }

    /// Marks the attributes as the whole descriptor, as Envoy's rate limit service reads one:
    /// a rule whose match mode is `auto` (the default) then applies only if its `match` names
    /// every attribute of the subject, so that the descriptors `(tenant)` and
    /// `(tenant, model)` of one request each meet only the rules of their own depth.
    pub fn exact(mut self) -> Self {
        self.exact = true;
        self
    }

    /// Whether the attributes are the whole descriptor (see [`exact`](Self::exact)).
    #[inline]
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// Puts the subject's buckets in the namespace `scope`: every rule partitions the subject
    /// by it as well, so that subjects of two scopes never share a bucket, whatever the
    /// rules select. The Envoy service scopes a descriptor by its domain when the domain is
    /// not an attribute. The scope is not an attribute: no rule selects it.
    pub fn scoped(mut self, scope: impl Into<Cow<'a, str>>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The namespace of the subject's buckets, if any (see [`scoped`](Self::scoped)).
    #[inline]
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// How many attributes the subject has.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the subject has no attributes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy that owns its values, to keep beyond the borrowed data.
    pub fn into_owned(self) -> Subject<'static> {
        Subject {
            known: self.known.map(|v| v.map(|v| Cow::Owned(v.into_owned()))),
            custom: self
                .custom
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n.into_owned()), Cow::Owned(v.into_owned())))
                .collect(),
            exact: self.exact,
            scope: self.scope.map(|s| Cow::Owned(s.into_owned())),
        }
    }
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (n, v) in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{n}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_custom_attributes() {
        let mut s = Subject::new()
            .tenant("a")
            .label("model", "gpt-4o")
            .label("region", "eu");
        s.set("region", "us");
        assert_eq!(s.get(&Attr::Model), Some("gpt-4o"));
        assert_eq!(s.get(&Attr::named("region")), Some("us"));
        assert_eq!(s.get(&Attr::User), None);
        assert_eq!(s.len(), 3);
        assert_eq!(s.to_string(), "tenant=a,model=gpt-4o,region=us");
        let owned: Subject<'static> = s.clone().into_owned();
        assert_eq!(owned, s);
    }
}
