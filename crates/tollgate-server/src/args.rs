//! The arguments of the commands that call a running service (`check`, `peek`, `usage`,
//! `reset`, `subjects`, `limits`), shared by the command line, its clients and `bench`.

use clap::{Args, Subcommand};

/// Where the service is and who is asking.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// The service's HTTP base URL.
    #[arg(
        long,
        env = "TOLLGATE_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// Bearer token.
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the service's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// The subject of a call.
#[derive(Debug, Clone, Default, Args)]
pub struct SubjectArgs {
    /// Tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// User.
    #[arg(long)]
    pub user: Option<String>,
    /// Provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Model.
    #[arg(long)]
    pub model: Option<String>,
    /// Tier.
    #[arg(long)]
    pub tier: Option<String>,
    /// Any other attribute (repeatable).
    #[arg(long = "attr", value_name = "NAME=VALUE", value_parser = parse_kv)]
    pub attrs: Vec<(String, String)>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

impl SubjectArgs {
    /// The attributes as a map.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, String> {
        let known = [
            ("tenant", &self.tenant),
            ("agent", &self.agent),
            ("user", &self.user),
            ("provider", &self.provider),
            ("model", &self.model),
            ("tier", &self.tier),
        ];
        known
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), v.clone())))
            .chain(self.attrs.iter().cloned())
            .collect()
    }
}

/// `tollgate check` and `tollgate peek`.
#[derive(Debug, Clone, Args)]
pub struct DecisionArgs {
    /// Service and token.
    #[command(flatten)]
    pub client: ClientOpts,
    /// Subject.
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Requests the call counts as [default: 1].
    #[arg(long)]
    pub requests: Option<u64>,
    /// Tokens (an estimate).
    #[arg(long)]
    pub tokens: Option<u64>,
    /// Input tokens.
    #[arg(long)]
    pub input_tokens: Option<u64>,
    /// Output tokens.
    #[arg(long)]
    pub output_tokens: Option<u64>,
    /// Idempotency key: a retry with the same id answers the first decision.
    #[arg(long)]
    pub request_id: Option<String>,
    /// A limit of this call's own, tighter than the policy's (looser needs the admin token):
    /// `requests=30` (per minute), `tokens=50000/minute`, `requests=500/hour`,
    /// `concurrency=2`. Repeatable.
    #[arg(long = "limit", value_name = "KIND=AMOUNT[/PER]", value_parser = parse_call_limit)]
    pub limits: Vec<crate::api::CallLimitBody>,
}

fn parse_call_limit(s: &str) -> Result<crate::api::CallLimitBody, String> {
    let bad =
        || format!("{s:?} is not KIND=AMOUNT[/PER], such as requests=30 or tokens=50000/minute");
    let (kind, rest) = s.split_once('=').ok_or_else(bad)?;
    let (amount, per) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p.trim().to_owned())),
        None => (rest, None),
    };
    Ok(crate::api::CallLimitBody {
        kind: kind.trim().to_owned(),
        amount: amount.trim().parse().map_err(|_| bad())?,
        per,
    })
}

/// `tollgate usage`.
#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// Service and token.
    #[command(flatten)]
    pub client: ClientOpts,
    /// Subject.
    #[command(flatten)]
    pub subject: SubjectArgs,
}

/// `tollgate reset`.
#[derive(Debug, Clone, Args)]
pub struct ResetArgs {
    /// Service and (admin) token.
    #[command(flatten)]
    pub client: ClientOpts,
    /// Subject (omit it, with --rule, to reset every bucket of the rule).
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Only this rule's buckets.
    #[arg(long)]
    pub rule: Option<String>,
}

/// `tollgate subjects`.
#[derive(Debug, Clone, Args)]
pub struct SubjectsArgs {
    /// Service and (admin) token.
    #[command(flatten)]
    pub client: ClientOpts,
    /// The rule.
    #[arg(long)]
    pub rule: String,
    /// Subjects per page (1 to 1,000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Start after this cursor (the `next` a previous page printed).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow the pages to the end (at most 100 pages).
    #[arg(long)]
    pub all: bool,
}

/// `tollgate limits ...`: one subject's limits, set while the service runs. Kept in Redis
/// for the fleet when the service uses Redis, in the service's memory otherwise.
#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Set a subject's limits (replacing its earlier ones) in a rule, or in every rule that
    /// partitions by its attributes.
    Set(SetLimitsArgs),
    /// Remove a subject's limits set at run time.
    Clear(ClearLimitsArgs),
    /// List the limits set at run time.
    List {
        /// Service and (admin) token.
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// `tollgate limits set`.
#[derive(Debug, Clone, Args)]
pub struct SetLimitsArgs {
    /// Service and (admin) token.
    #[command(flatten)]
    pub client: ClientOpts,
    /// The subject (exact values, such as --user premium_user).
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Only this rule [default: every rule that partitions by the subject's attributes].
    #[arg(long)]
    pub rule: Option<String>,
    /// A limit: `requests=100/minute`, `requests=60/minute,burst=20`,
    /// `requests=5000/hour,algorithm=sliding_window`, `concurrency=4`. Repeatable; they
    /// replace the rule's limits for this subject.
    #[arg(long = "limit", value_name = "KIND=AMOUNT[/PER][,burst=N][,algorithm=A]", required = true, value_parser = parse_limit_body)]
    pub limits: Vec<crate::subject_limits::LimitBody>,
}

/// `tollgate limits clear`.
#[derive(Debug, Clone, Args)]
pub struct ClearLimitsArgs {
    /// Service and (admin) token.
    #[command(flatten)]
    pub client: ClientOpts,
    /// The subject, as it was set.
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// The rule, as it was set.
    #[arg(long)]
    pub rule: Option<String>,
}

fn parse_limit_body(s: &str) -> Result<crate::subject_limits::LimitBody, String> {
    let bad = || {
        format!(
            "{s:?} is not KIND=AMOUNT[/PER][,burst=N][,algorithm=A], such as requests=100/minute"
        )
    };
    let mut parts = s.split(',');
    let first = parts.next().ok_or_else(bad)?;
    let call = parse_call_limit(first).map_err(|_| bad())?;
    let mut body = crate::subject_limits::LimitBody {
        kind: call.kind,
        amount: call.amount,
        per: call.per,
        algorithm: None,
        burst: None,
        lease: None,
    };
    for part in parts {
        match part.split_once('=') {
            Some(("burst", n)) => body.burst = Some(n.trim().parse().map_err(|_| bad())?),
            Some(("algorithm", a)) => body.algorithm = Some(a.trim().to_owned()),
            Some(("lease", l)) => body.lease = Some(l.trim().to_owned()),
            _ => return Err(bad()),
        }
    }
    Ok(body)
}
