//! The service's state: the limiters, the reloadable configuration, the permit registry, and
//! the decisions with shadow mode and tenant-bound auth applied. Both the HTTP and the gRPC
//! front ends call into this.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tollgate::store::Store;
use tollgate::{
    CallLimits, Clock, Cost, Decision, LimitStatus, Limiter, Outcome, Permit, Policy, Subject,
};

use crate::config::{Client, Config, Token};
use crate::error::ApiError;
use crate::store::Shared;

pub use crate::judged::Judged;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No auth is configured: anyone may do anything.
    Open,
    /// The admin token.
    Admin,
    /// An API client.
    Client {
        /// Its name.
        name: String,
        /// The tenant it is bound to.
        tenant: Option<String>,
    },
}

impl Principal {
    /// May reset buckets.
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Open | Principal::Admin)
    }

    /// A name for logs and permit ownership.
    pub fn name(&self) -> &str {
        match self {
            Principal::Open => "(open)",
            Principal::Admin => "(admin)",
            Principal::Client { name, .. } => name,
        }
    }

    /// Binds `subject` to the principal's tenant: fills it in when missing, refuses another.
    ///
    /// # Errors
    /// 403 if the subject names another tenant.
    pub fn bind(&self, subject: &mut Subject<'_>) -> Result<(), ApiError> {
        if let Principal::Client {
            tenant: Some(t), ..
        } = self
        {
            match subject.get(&tollgate::Attr::Tenant) {
                Some(given) if given != t => {
                    metrics::counter!("tollgate_auth_failures_total", "why" => "tenant")
                        .increment(1);
                    return Err(ApiError::forbidden(format!(
                        "this token may only spend tenant {t:?}'s quota"
                    )));
                }
                Some(_) => {}
                None => subject.set("tenant", t.clone()),
            }
        }
        Ok(())
    }
}

/// Why a reset of `subject` (in `rule`, if given) matched no bucket: the rules and the
/// attributes each needs, so that `reset --user alice` against a rule on `user, model` says
/// that `model` is missing.
pub fn nothing_matched(policy: &Policy, subject: &Subject<'_>, rule: Option<&str>) -> String {
    let needs = |r: &tollgate::Rule| {
        let attrs: Vec<String> = r
            .selectors()
            .iter()
            .map(|(a, m)| match m.as_str() {
                "*" => a.to_string(),
                v => format!("{a}={v}"),
            })
            .collect();
        format!("{:?} needs {}", r.name(), attrs.join(", "))
    };
    let rules: Vec<String> = policy
        .rules()
        .iter()
        .filter(|r| rule.is_none_or(|n| n == r.name()))
        .map(needs)
        .collect();
    format!(
        "nothing matched: no rule applies to {{{subject}}}, so no bucket was reset ({})",
        if rules.is_empty() {
            "the policy has no rules".to_owned()
        } else {
            rules.join("; ")
        }
    )
}

/// The parts of the configuration that a reload swaps.
#[derive(Debug)]
pub struct Runtime {
    /// The configuration; its policy is the file's with the subject limits set at run time
    /// laid over it.
    pub config: Config,
    /// Generation: 1 for the first, +1 per successful reload.
    pub generation: u64,
    /// The file's policy, before the subject limits set at run time.
    pub base: Policy,
    /// Whether a rule or override of the policy denies every call it selects (`deny = true`).
    denies: bool,
}

/// Whether any limit set of `policy` is `deny`.
fn denies(policy: &Policy) -> bool {
    policy.rules().iter().any(|r| {
        r.limit_sets()
            .any(|s| s.action() == tollgate::policy::SetAction::Deny)
    })
}

impl Runtime {
    /// Whether rules in shadow mode took part in denying: the call must then be decided again
    /// by the enforced rules alone.
    fn shadow_involved(&self, d: &Decision) -> bool {
        if d.is_allowed() || matches!(d.outcome(), Outcome::StoreFull | Outcome::Unavailable) {
            return false;
        }
        self.config.server.shadow
            || d.statuses()
                .iter()
                .any(|s| !s.admitted && self.config.shadow_rules.contains(s.rule))
    }

    /// The policy without the rules in shadow mode.
    fn enforced_policy(&self) -> Policy {
        if self.config.server.shadow {
            return Policy::new(std::iter::empty::<tollgate::Rule>())
                .unwrap_or_else(|_| self.config.policy.clone());
        }
        let rules = self
            .config
            .policy
            .rules()
            .iter()
            .filter(|r| !self.config.shadow_rules.contains(r.name()))
            .cloned();
        Policy::new(rules).unwrap_or_else(|_| self.config.policy.clone())
    }

    /// The rule that refuses every call of `subject` (`deny = true`, Envoy's
    /// `requests_per_unit: 0`), if one applies. The limiter applies no limit for such a set,
    /// so the service refuses the call before deciding.
    pub fn denying_rule(&self, subject: &Subject<'_>) -> Option<&'static str> {
        if !self.denies {
            return None;
        }
        self.config
            .policy
            .matching(subject)
            .find(|r| r.limits_for(subject).action() == tollgate::policy::SetAction::Deny)
            .map(|r| r.name())
    }

    /// [`denying_rule`](Self::denying_rule) as the refusal the HTTP APIs answer (403).
    fn refuse_denied(&self, subject: &Subject<'_>) -> Result<(), ApiError> {
        match self.denying_rule(subject) {
            None => Ok(()),
            Some(rule) => Err(ApiError::forbidden(format!(
                "rule {rule:?} refuses every call it selects (deny = true)"
            ))),
        }
    }

    /// Looks a bearer token up (in constant time per token).
    pub fn principal(&self, token: Option<&str>) -> Result<Principal, ApiError> {
        let auth = &self.config.auth;
        if !auth.enabled() {
            return Ok(Principal::Open);
        }
        let Some(token) = token else {
            metrics::counter!("tollgate_auth_failures_total", "why" => "missing").increment(1);
            return Err(ApiError::unauthorized("a bearer token is required"));
        };
        let mut found = None;
        if let Some(admin) = &auth.admin_token {
            if ct_eq(admin, token) {
                found = Some(Principal::Admin);
            }
        }
        for Client {
            name,
            token: t,
            tenant,
        } in &auth.clients
        {
            if ct_eq(t, token) && found.is_none() {
                found = Some(Principal::Client {
                    name: name.clone(),
                    tenant: tenant.clone(),
                });
            }
        }
        found.ok_or_else(|| {
            metrics::counter!("tollgate_auth_failures_total", "why" => "invalid").increment(1);
            ApiError::unauthorized("the token is not valid")
        })
    }
}

fn ct_eq(a: &Token, b: &str) -> bool {
    let (a, b) = (a.0.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which API a decision was made for (a metrics label).
#[derive(Clone, Copy, Debug)]
pub enum Api {
    /// `/v1/check`.
    Check,
    /// `/v1/peek`.
    Peek,
    /// `/v1/reserve`.
    Reserve,
    /// The forward-auth endpoint.
    ForwardAuth,
    /// Envoy's rate limit service.
    Grpc,
    /// `/v1/acquire`.
    Acquire,
}

impl Api {
    /// The `api` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Api::Check => "check",
            Api::Peek => "peek",
            Api::Reserve => "reserve",
            Api::ForwardAuth => "forward_auth",
            Api::Grpc => "grpc",
            Api::Acquire => "acquire",
        }
    }
}

impl Api {
    /// Every API, in index order.
    pub(crate) const ALL: [Api; 6] = [
        Api::Check,
        Api::Peek,
        Api::Reserve,
        Api::ForwardAuth,
        Api::Grpc,
        Api::Acquire,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The labels of one `tollgate_server_decisions_total` series.
type DecisionLabels = (usize, &'static str, &'static str, &'static str);

/// The metric handles a decision records into, taken from the recorder once instead of
/// looked up (the labels hashed and compared) on every call.
struct Meters {
    latency: [metrics::Histogram; 6],
    decisions: parking_lot::RwLock<HashMap<DecisionLabels, metrics::Counter>>,
}

/// At most this many decision series are kept (rules and limits change with reloads);
/// beyond it the handles are dropped and taken again as they are used.
const MAX_DECISION_SERIES: usize = 4096;

impl Meters {
    /// The process's handles, registered with the recorder installed when first used (the
    /// service installs its recorder before its first decision).
    fn get() -> &'static Meters {
        static METERS: std::sync::OnceLock<Meters> = std::sync::OnceLock::new();
        METERS.get_or_init(|| Meters {
            latency: Api::ALL.map(
                |api| metrics::histogram!("tollgate_server_request_seconds", "api" => api.label()),
            ),
            decisions: parking_lot::RwLock::new(HashMap::new()),
        })
    }

    fn count_decision(&self, labels: DecisionLabels) {
        if let Some(c) = self.decisions.read().get(&labels) {
            c.increment(1);
            return;
        }
        let (api, outcome, rule, limit) = labels;
        let c = metrics::counter!(
            "tollgate_server_decisions_total",
            "api" => Api::ALL[api].label(),
            "outcome" => outcome,
            "rule" => rule,
            "limit" => limit
        );
        c.increment(1);
        let mut map = self.decisions.write();
        if map.len() >= MAX_DECISION_SERIES {
            map.clear();
        }
        map.insert(labels, c);
    }
}

/// The `limit` label of a limit in metrics: its kind and window (`tokens/minute`,
/// `requests/90s`, `concurrency`), which stay the same when its amount, burst or algorithm
/// change, so that a dashboard's series survive a tuned limit. (The limit's `label` in
/// decisions names its bucket, and changes with it.)
pub fn metric_limit_name(s: &LimitStatus) -> &'static str {
    limit_name(s.kind, s.window)
}

/// [`metric_limit_name`] of a limit of `kind` per `window`.
fn limit_name(kind: tollgate::LimitKind, window: tollgate::Window) -> &'static str {
    type Names = HashMap<(tollgate::LimitKind, tollgate::Window), &'static str>;
    static NAMES: std::sync::OnceLock<parking_lot::Mutex<Names>> = std::sync::OnceLock::new();
    let window = if kind == tollgate::LimitKind::Concurrency {
        tollgate::Window::SECOND
    } else {
        window
    };
    let mut names = NAMES.get_or_init(Default::default).lock();
    names.entry((kind, window)).or_insert_with(|| {
        let name = if kind == tollgate::LimitKind::Concurrency {
            "concurrency".to_owned()
        } else {
            let w = match window.to_string() {
                w if matches!(w.as_str(), "second" | "minute" | "hour" | "day" | "month") => w,
                _ => {
                    let d = window.nominal();
                    format!("{}s", d.as_secs() + u64::from(d.subsec_nanos() > 0))
                }
            };
            format!("{kind}/{w}")
        };
        // One per kind and window in use: a handful for the life of the process.
        Box::leak(name.into_boxed_str())
    })
}

/// Registers `tollgate_shadow_denials_total` at zero for every limit of the rules in shadow
/// mode in `config`, so that the series exist before the first shadow denial.
fn shadow_series_at_zero(config: &Config) {
    for rule in config.policy.rules() {
        if !config.server.shadow && !config.shadow_rules.contains(rule.name()) {
            continue;
        }
        for set in rule.limit_sets() {
            for l in set.limits() {
                let limit = l.limit();
                metrics::counter!(
                    "tollgate_shadow_denials_total",
                    "rule" => rule.name(),
                    "limit" => limit_name(limit.kind(), limit.window())
                )
                .increment(0);
            }
        }
    }
}

pub(crate) fn record(api: Api, j: &Judged, started: Instant) {
    // Admitted by the enforced rules although a rule in shadow mode would have denied: the
    // outcome is `allowed` (what happened); tollgate_shadow_denials_total counts the rest.
    let outcome = j.decision.outcome().as_str();
    let by = j.decision.denied_by();
    let (rule, limit) = by.map_or(("", ""), |s| (s.rule, metric_limit_name(s)));
    let meters = Meters::get();
    meters.count_decision((api.index(), outcome, rule, limit));
    if let Some(shadow) = &j.shadow {
        for s in shadow.statuses().iter().filter(|s| !s.admitted) {
            metrics::counter!("tollgate_shadow_denials_total", "rule" => s.rule, "limit" => metric_limit_name(s))
                .increment(1);
        }
    }
    meters.latency[api.index()].record(started.elapsed().as_secs_f64());
}

/// A granted permit in the registry.
struct Held<S: Store> {
    permit: Arc<tokio::sync::Mutex<Permit<Shared<S>>>>,
    reserved: Cost,
    owner: Principal,
    expires: tollgate::Timestamp,
}

enum Slot<S: Store> {
    Held(Held<S>),
    /// Settled (or expired): remembered for a while so that a repeated settlement is a no-op.
    Settled {
        how: &'static str,
        owner: Principal,
        forget_at: tollgate::Timestamp,
    },
}

/// How a permit is settled.
#[derive(Clone, Copy, Debug)]
pub enum Settle {
    /// With the actual cost (fields not given default to the reservation's).
    Commit(crate::api::CostBody),
    /// Refund everything.
    Cancel,
}

/// The answer to a settlement.
#[derive(Clone, Debug)]
pub struct Settled {
    /// `committed`, `cancelled` or `expired`.
    pub how: &'static str,
    /// Whether this call was a repeat (nothing done).
    pub already: bool,
}

/// A reservation's answer: a permit id with its expiry, or the denial.
#[derive(Debug)]
pub struct Reserved {
    /// The decision.
    pub judged: Judged,
    /// The permit id, if granted.
    pub id: Option<String>,
    /// When the permit expires if not settled or renewed.
    pub expires_in: Duration,
}

/// The answer to `/v1/acquire`.
#[derive(Debug)]
pub struct Acquired {
    /// The decision: admitted, or the last denial when the wait ran out.
    pub judged: Judged,
    /// The permit id, when admitted and asked to hold it.
    pub id: Option<String>,
    /// When the held permit expires if not settled or renewed.
    pub expires_in: Duration,
    /// How long the request waited.
    pub waited: Duration,
}

/// One waiting `/v1/acquire` request, counted while it lives (also when its future is
/// dropped because the client went away).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicU64, max: usize) -> Result<Self, ApiError> {
        let before = count.fetch_add(1, Ordering::AcqRel);
        if usize::try_from(before).unwrap_or(usize::MAX) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::unavailable(format!(
                "too many requests are waiting ({max}); retry later or use /v1/check"
            )));
        }
        metrics::gauge!("tollgate_acquire_waiting").increment(1.0);
        Ok(Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("tollgate_acquire_waiting").decrement(1.0);
    }
}

/// The service's state, generic over the store.
pub struct App<S: Store> {
    limiter: Limiter<Shared<S>>,
    enforced: Limiter<Shared<S>>,
    /// Decides Envoy descriptors that carry their own limit (see [`crate::descriptor_limit`]).
    descriptor_limits: Limiter<Shared<S>>,
    runtime: ArcSwap<Runtime>,
    permits: parking_lot::Mutex<HashMap<String, Slot<S>>>,
    clock: Arc<dyn Clock>,
    store_kind: &'static str,
    reload_errors: AtomicU64,
    /// `/v1/acquire` requests waiting now.
    waiting: AtomicU64,
    /// Subject limits set at run time.
    settings: Arc<crate::subject_limits::Settings>,
}

impl<S: Store> std::fmt::Debug for App<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("store", &self.store_kind)
            .field("generation", &self.runtime.load().generation)
            .finish_non_exhaustive()
    }
}

impl<S: Store> App<S> {
    /// The state for `config` over `store`. `clock` times permit expiry (the memory store
    /// should read the same clock).
    pub fn new(config: Config, store: S, clock: Arc<dyn Clock>, store_kind: &'static str) -> Self {
        shadow_series_at_zero(&config);
        let shared = Shared(Arc::new(store));
        let settings = Arc::new(crate::subject_limits::Settings::new(
            crate::subject_limits::Keeper::for_store(&config.store),
        ));
        let runtime = Runtime {
            base: config.policy.clone(),
            denies: denies(&config.policy),
            config,
            generation: 1,
        };
        let limiter = Limiter::with_store(runtime.config.policy.clone(), shared.clone());
        if runtime.config.server.max_tracked_subjects > 0 {
            limiter.track_subjects(runtime.config.server.max_tracked_subjects);
        }
        let enforced = Limiter::with_store(runtime.enforced_policy(), shared.clone());
        let descriptor_limits = Limiter::with_store(crate::descriptor_limit::policy(), shared);
        App {
            limiter,
            enforced,
            descriptor_limits,
            runtime: ArcSwap::from_pointee(runtime),
            permits: parking_lot::Mutex::new(HashMap::new()),
            clock,
            store_kind,
            reload_errors: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            settings,
        }
    }

    /// The limiter of the whole policy.
    pub fn limiter(&self) -> &Limiter<Shared<S>> {
        &self.limiter
    }

    /// The limiter of Envoy descriptors that carry their own limit.
    pub(crate) fn descriptor_limits(&self) -> &Limiter<Shared<S>> {
        &self.descriptor_limits
    }

    /// The current configuration.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The current configuration, for a short look (no reference count is taken; do not
    /// hold it across an await).
    pub fn runtime_ref(&self) -> arc_swap::Guard<Arc<Runtime>> {
        self.runtime.load()
    }

    /// `memory`, `redis` or `redis-cluster`.
    pub fn store_kind(&self) -> &'static str {
        self.store_kind
    }

    /// Swaps in a new configuration: the policy atomically (buckets of unchanged limits keep
    /// their state), shadow rules, auth and the rest. Listener addresses and the store are
    /// fixed at startup; changes to them are logged and ignored.
    pub fn apply(&self, mut config: Config) -> u64 {
        shadow_series_at_zero(&config);
        let old = self.runtime.load();
        if config.server.http != old.config.server.http
            || config.server.grpc != old.config.server.grpc
            || config.server.max_body_bytes != old.config.server.max_body_bytes
        {
            tracing::warn!("listener addresses and body limits change only on restart");
        }
        if config.gateway != old.config.gateway {
            tracing::warn!("the gateway's upstreams and keys change only on restart");
        }
        if config.store != old.config.store {
            tracing::warn!(
                "the store changes only on restart; keeping {:?}",
                old.config.store
            );
            config.store = old.config.store.clone();
        }
        let generation = old.generation + 1;
        let base = config.policy.clone();
        config.policy = crate::subject_limits::apply(&base, &self.settings.all());
        let runtime = Runtime {
            denies: denies(&config.policy),
            config,
            generation,
            base,
        };
        self.limiter.set_policy(runtime.config.policy.clone());
        self.enforced.set_policy(runtime.enforced_policy());
        self.runtime.store(Arc::new(runtime));
        metrics::counter!("tollgate_config_reloads_total", "result" => "ok").increment(1);
        generation
    }

    /// The subject limits set at run time, and where they are kept.
    pub fn settings(&self) -> &Arc<crate::subject_limits::Settings> {
        &self.settings
    }

    /// Lays the subject limits over the file's policy again (after they changed) and swaps
    /// the result in.
    pub fn relayer(&self) {
        // Serialised with reloads by reading and storing the whole runtime at once: a reload
        // racing with this one stores its own relayered policy last.
        let old = self.runtime.load_full();
        let mut config = old.config.clone();
        config.policy = crate::subject_limits::apply(&old.base, &self.settings.all());
        let runtime = Runtime {
            denies: denies(&config.policy),
            config,
            generation: old.generation,
            base: old.base.clone(),
        };
        self.limiter.set_policy(runtime.config.policy.clone());
        self.enforced.set_policy(runtime.enforced_policy());
        self.runtime.store(Arc::new(runtime));
    }

    /// Sets (or, with no limits, removes) one subject's limits: validated against the file's
    /// policy, kept (in Redis for the fleet, or in this process), applied, and audited.
    /// Returns the rules it went to and whether it replaced an earlier setting.
    ///
    /// # Errors
    /// 400 for invalid limits or a subject no rule partitions by, 404 for an unknown rule,
    /// 503 if Redis did not take it.
    pub async fn set_subject_limits(
        &self,
        mut setting: crate::subject_limits::SubjectLimits,
        by: &Principal,
    ) -> Result<(Vec<&'static str>, bool), ApiError> {
        setting.set_by = by.name().to_owned();
        let base = self.runtime.load().base.clone();
        let rules = setting.rules(&base)?;
        let when: Vec<(String, String)> = setting
            .subject
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in &when {
            crate::config::valid_attribute_name(k)
                .map_err(|m| ApiError::bad_request(format!("subject: {m}")))?;
            if v.is_empty() || v.contains(['*', '?', '[']) {
                return Err(ApiError::bad_request(format!(
                    "subject.{k}: an exact value is needed, not {v:?}"
                )));
            }
        }
        let specs = setting.specs()?;
        base.with_subject_limits(&rules, &when, &specs)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let removing = setting.limits.is_empty();
        let key = setting.key();
        let limits = serde_json::to_string(&setting.limits).unwrap_or_default();
        let replaced = self.settings.put(setting).await?;
        self.relayer();
        tracing::info!(
            target: "tollgate_server::audit",
            by = by.name(),
            setting = %key,
            rules = ?rules,
            limits = %limits,
            kept_in = self.settings.kept_in(),
            "{}",
            if removing { "subject limits removed" } else { "subject limits set" }
        );
        Ok((rules, replaced))
    }

    /// Counts a refused reload.
    pub fn reload_failed(&self) {
        self.reload_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tollgate_config_reloads_total", "result" => "error").increment(1);
    }

    /// Reloads that were refused so far.
    pub fn reload_errors(&self) -> u64 {
        self.reload_errors.load(Ordering::Relaxed)
    }

    /// Check (spend) or peek, with shadow mode applied.
    ///
    /// # Errors
    /// A store failure (503).
    pub async fn decide(
        &self,
        api: Api,
        subject: &Subject<'_>,
        cost: Cost,
        spend: bool,
        request_id: Option<&str>,
    ) -> Result<Judged, ApiError> {
        self.decide_with(api, subject, cost, spend, request_id, &CallLimits::new())
            .await
    }

    /// [`decide`](Self::decide) with the call's own limits (see [`CallLimits`]).
    ///
    /// # Errors
    /// A store failure (503); call limits that loosen without permission (403) or change
    /// nothing, or given with a request id (400).
    pub async fn decide_with(
        &self,
        api: Api,
        subject: &Subject<'_>,
        cost: Cost,
        spend: bool,
        request_id: Option<&str>,
        call: &CallLimits,
    ) -> Result<Judged, ApiError> {
        let started = Instant::now();
        let rt = self.runtime.load();
        rt.refuse_denied(subject)?;
        if request_id.is_some() && !call.is_empty() {
            return Err(ApiError::bad_request(
                "limits: a call with its own limits cannot also have a request_id",
            ));
        }
        let first = match (spend, request_id) {
            (false, _) => self.limiter.peek_with(subject, cost, call).await,
            (true, Some(id)) => self.limiter.check_idempotent(subject, cost, id).await,
            (true, None) => self.limiter.check_with(subject, cost, call).await,
        }
        .map_err(ApiError::store)?;
        let judged = if rt.shadow_involved(&first) {
            let enforced = if spend {
                self.enforced.check_with(subject, cost, call).await
            } else {
                self.enforced.peek_with(subject, cost, call).await
            }
            .map_err(ApiError::store)?;
            if enforced.is_allowed() {
                Judged {
                    decision: enforced,
                    shadow: Some(first),
                }
            } else {
                Judged {
                    decision: enforced,
                    shadow: None,
                }
            }
        } else {
            Judged {
                decision: first,
                shadow: None,
            }
        };
        if spend || matches!(api, Api::Peek) {
            record(api, &judged, started);
        }
        Ok(judged)
    }

    fn now(&self) -> tollgate::Timestamp {
        self.clock.now()
    }

    /// Reserves `estimate` and keeps the permit under a random id until it is settled,
    /// renewed or expires.
    ///
    /// # Errors
    /// A store failure (503), or too many permits held (503).
    pub async fn reserve(
        &self,
        subject: &Subject<'_>,
        estimate: Cost,
        owner: Principal,
        call: &CallLimits,
    ) -> Result<Reserved, ApiError> {
        let started = Instant::now();
        let rt = self.runtime.load();
        let ttl = rt.config.server.permit_ttl;
        let max = rt.config.server.max_permits;
        if self.permits.lock().len() >= max {
            self.sweep();
            if self.permits.lock().len() >= max {
                return Err(ApiError::unavailable(
                    "too many permits are held; settle or cancel some",
                ));
            }
        }
        let (permit, judged) = self.reserve_raw_with(subject, estimate, call).await?;
        record(Api::Reserve, &judged, started);
        let Some(permit) = permit else {
            return Ok(Reserved {
                judged,
                id: None,
                expires_in: Duration::ZERO,
            });
        };
        let id = format!("p_{:032x}", rand::random::<u128>());
        let held = Held {
            permit: Arc::new(tokio::sync::Mutex::new(permit)),
            reserved: estimate,
            owner,
            expires: self.now().saturating_add(ttl),
        };
        self.permits.lock().insert(id.clone(), Slot::Held(held));
        self.update_gauge();
        Ok(Reserved {
            judged,
            id: Some(id),
            expires_in: ttl,
        })
    }

    /// Reserves `estimate`, with shadow mode applied; the permit is the caller's to settle.
    ///
    /// # Errors
    /// A store failure (503).
    pub async fn reserve_raw(
        &self,
        subject: &Subject<'_>,
        estimate: Cost,
    ) -> Result<(Option<Permit<Shared<S>>>, Judged), ApiError> {
        self.reserve_raw_with(subject, estimate, &CallLimits::new())
            .await
    }

    /// [`reserve_raw`](Self::reserve_raw) with the call's own limits.
    ///
    /// # Errors
    /// As [`decide_with`](Self::decide_with).
    pub async fn reserve_raw_with(
        &self,
        subject: &Subject<'_>,
        estimate: Cost,
        call: &CallLimits,
    ) -> Result<(Option<Permit<Shared<S>>>, Judged), ApiError> {
        let rt = self.runtime.load();
        rt.refuse_denied(subject)?;
        let first = self
            .limiter
            .reserve_with(subject, estimate, call)
            .await
            .map_err(ApiError::store)?;
        let (permit, judged) = match first {
            tollgate::Reservation::Granted(p) => {
                let d = p.decision().clone();
                (
                    Some(p),
                    Judged {
                        decision: d,
                        shadow: None,
                    },
                )
            }
            tollgate::Reservation::Denied(d) if rt.shadow_involved(&d) => {
                match self
                    .enforced
                    .reserve_with(subject, estimate, call)
                    .await
                    .map_err(ApiError::store)?
                {
                    tollgate::Reservation::Granted(p) => {
                        let e = p.decision().clone();
                        (
                            Some(p),
                            Judged {
                                decision: e,
                                shadow: Some(d),
                            },
                        )
                    }
                    tollgate::Reservation::Denied(e) => (
                        None,
                        Judged {
                            decision: e,
                            shadow: None,
                        },
                    ),
                }
            }
            tollgate::Reservation::Denied(d) => (
                None,
                Judged {
                    decision: d,
                    shadow: None,
                },
            ),
        };
        Ok((permit, judged))
    }

    /// Waits until the call is admitted or `max_wait` (cut to `server.max_acquire_wait`) has
    /// passed. Admitted, the cost is spent; with `hold`, the permit is kept under an id (as
    /// `/v1/reserve` does: commit, cancel or renew it), otherwise it is released at once (as
    /// `/v1/check` spends, holding no concurrency slot). Dropping the returned future (the
    /// client went away) leaves the queue and spends nothing.
    ///
    /// Rules in shadow mode take no part: the wait is for the enforced rules.
    ///
    /// # Errors
    /// A store failure (503), too many waiters (503), or too many permits held (503).
    pub async fn acquire(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        max_wait: Duration,
        owner: Principal,
        hold: bool,
    ) -> Result<Acquired, ApiError> {
        let started = Instant::now();
        let rt = self.runtime.load_full();
        rt.refuse_denied(subject)?;
        let max_wait = max_wait.min(rt.config.server.max_acquire_wait);
        let max_waiters = rt.config.server.max_waiters;
        if hold && self.permits.lock().len() >= rt.config.server.max_permits {
            self.sweep();
            if self.permits.lock().len() >= rt.config.server.max_permits {
                return Err(ApiError::unavailable(
                    "too many permits are held; settle or cancel some",
                ));
            }
        }
        let waiting = Waiting::enter(&self.waiting, max_waiters)?;
        let limiter = if rt.config.server.shadow || !rt.config.shadow_rules.is_empty() {
            &self.enforced
        } else {
            &self.limiter
        };
        let reservation = limiter
            .acquire(subject, cost, max_wait)
            .await
            .map_err(ApiError::store)?;
        drop(waiting);
        let waited = started.elapsed();
        let (decision, permit) = match reservation {
            tollgate::Reservation::Granted(p) => (p.decision().clone(), Some(p)),
            tollgate::Reservation::Denied(d) => (d, None),
        };
        let judged = Judged {
            decision,
            shadow: None,
        };
        record(Api::Acquire, &judged, started);
        let (id, expires_in) = match (permit, hold) {
            (Some(permit), true) => {
                let ttl = rt.config.server.permit_ttl;
                let id = format!("p_{:032x}", rand::random::<u128>());
                let held = Held {
                    permit: Arc::new(tokio::sync::Mutex::new(permit)),
                    reserved: cost,
                    owner,
                    expires: self.now().saturating_add(ttl),
                };
                self.permits.lock().insert(id.clone(), Slot::Held(held));
                self.update_gauge();
                (Some(id), ttl)
            }
            // Released at once: the cost stays spent, the slot is free again.
            (permit, _) => {
                drop(permit);
                (None, Duration::ZERO)
            }
        };
        Ok(Acquired {
            judged,
            id,
            expires_in,
            waited,
        })
    }

    /// `/v1/acquire` requests waiting now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    fn owns(owner: &Principal, caller: &Principal) -> bool {
        caller.is_admin() || owner == caller
    }

    /// Settles a permit. Repeats answer the first settlement and do nothing.
    ///
    /// # Errors
    /// 404 for an unknown id, 403 for another client's permit, 503 for a store failure.
    pub async fn settle(
        &self,
        id: &str,
        how: Settle,
        caller: &Principal,
    ) -> Result<Settled, ApiError> {
        let ttl = self.runtime.load().config.server.permit_ttl;
        let now = self.now();
        let (permit, reserved) = {
            let mut map = self.permits.lock();
            match map.get(id) {
                None => {
                    return Err(ApiError::not_found(
                        "no such permit (or it expired long ago)",
                    ))
                }
                Some(Slot::Settled { how, owner, .. }) => {
                    if !Self::owns(owner, caller) {
                        return Err(ApiError::forbidden("the permit belongs to another client"));
                    }
                    return Ok(Settled { how, already: true });
                }
                Some(Slot::Held(h)) => {
                    if !Self::owns(&h.owner, caller) {
                        return Err(ApiError::forbidden("the permit belongs to another client"));
                    }
                    if h.expires <= now {
                        // Expired but not yet swept: it is gone.
                        let owner = h.owner.clone();
                        map.insert(
                            id.to_owned(),
                            Slot::Settled {
                                how: "expired",
                                owner,
                                forget_at: now.saturating_add(ttl),
                            },
                        );
                        return Ok(Settled {
                            how: "expired",
                            already: true,
                        });
                    }
                }
            }
            let label = match how {
                Settle::Commit(_) => "committed",
                Settle::Cancel => "cancelled",
            };
            let Some(Slot::Held(h)) = map.insert(
                id.to_owned(),
                Slot::Settled {
                    how: label,
                    owner: caller.clone(),
                    forget_at: now.saturating_add(ttl),
                },
            ) else {
                return Err(ApiError::not_found("no such permit"));
            };
            // Keep the original owner on the tombstone.
            if let Some(Slot::Settled { owner, .. }) = map.get_mut(id) {
                *owner = h.owner.clone();
            }
            (h.permit, h.reserved)
        };
        let mut permit = permit.lock().await;
        let result = match how {
            Settle::Commit(actual) => permit.commit(actual.to_cost_defaulting(reserved)).await,
            Settle::Cancel => permit.cancel().await,
        };
        drop(permit);
        self.update_gauge();
        result.map_err(ApiError::store)?;
        Ok(Settled {
            how: match how {
                Settle::Commit(_) => "committed",
                Settle::Cancel => "cancelled",
            },
            already: false,
        })
    }

    /// Extends a permit: its concurrency leases and its expiry in the registry. Returns
    /// whether every slot was still held, and the new time to expiry.
    ///
    /// # Errors
    /// 404 for an unknown or settled id, 403 for another client's permit.
    pub async fn renew(&self, id: &str, caller: &Principal) -> Result<(bool, Duration), ApiError> {
        let ttl = self.runtime.load().config.server.permit_ttl;
        let now = self.now();
        let permit = {
            let mut map = self.permits.lock();
            match map.get_mut(id) {
                Some(Slot::Held(h)) if h.expires > now => {
                    if !Self::owns(&h.owner, caller) {
                        return Err(ApiError::forbidden("the permit belongs to another client"));
                    }
                    h.expires = now.saturating_add(ttl);
                    Arc::clone(&h.permit)
                }
                Some(Slot::Held(_)) | Some(Slot::Settled { .. }) => {
                    return Err(ApiError::conflict(
                        "the permit is already settled or expired",
                    ))
                }
                None => return Err(ApiError::not_found("no such permit")),
            }
        };
        let held = permit.lock().await.renew().await.map_err(ApiError::store)?;
        Ok((held, ttl))
    }

    /// Drops expired permits (their slots are released, their estimates stay spent) and
    /// forgets old settlements. Returns how many permits expired.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        let ttl = self.runtime.load().config.server.permit_ttl;
        let mut expired = Vec::new();
        {
            let mut map = self.permits.lock();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, s)| match s {
                    Slot::Held(h) => h.expires <= now,
                    Slot::Settled { forget_at, .. } => *forget_at <= now,
                })
                .map(|(k, _)| k.clone())
                .collect();
            for id in ids {
                if let Some(Slot::Held(h)) = map.remove(&id) {
                    map.insert(
                        id,
                        Slot::Settled {
                            how: "expired",
                            owner: h.owner.clone(),
                            forget_at: now.saturating_add(ttl),
                        },
                    );
                    expired.push(h);
                }
            }
        }
        let n = expired.len();
        if n > 0 {
            tracing::info!(permits = n, "expired permits released");
        }
        // Dropping the permits releases their slots, outside the registry's lock.
        drop(expired);
        self.update_gauge();
        n
    }

    /// Permits granted and not yet settled or expired.
    pub fn permits_held(&self) -> usize {
        self.permits
            .lock()
            .values()
            .filter(|s| matches!(s, Slot::Held(_)))
            .count()
    }

    fn update_gauge(&self) {
        metrics::gauge!("tollgate_permits_held").set(self.permits_held() as f64);
    }

    /// Sets the active-bucket gauges from the store (called when metrics are scraped).
    pub fn refresh_gauges(&self) {
        if let Some(buckets) = self.limiter.stats().active_buckets {
            for (rule, n) in buckets {
                metrics::gauge!("tollgate_active_buckets", "rule" => rule).set(n as f64);
            }
        }
        self.update_gauge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_has_its_own_index() {
        for (i, api) in Api::ALL.into_iter().enumerate() {
            assert_eq!(api.index(), i, "{api:?}");
        }
    }
}
