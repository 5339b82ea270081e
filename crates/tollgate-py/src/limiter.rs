//! `tollgate.Limiter`: decisions for a subject and a cost, from sync and asyncio code.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyType};
use tollgate::store::fallback::{FallbackConfig, FallbackStore};
use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::{Clock, Cost, MemoryStore, Subject, SystemClock};

use crate::args::{cost, Who};
use crate::backend::Backend;
use crate::bridge::{awaitable, ready};
use crate::clock::ManualClock;
use crate::decision::{Decision, Stats, Usage};
use crate::engine;
use crate::errors;
use crate::permit::{max_wait, seconds, Acquire};
use crate::policy::{policy_arg, Policy};

/// Decides, for each call to a model, whether it may go ahead now, and if not, exactly when.
///
/// ``Limiter()`` runs the built-in policy (60 requests and 100,000 tokens per minute for each
/// tenant and provider) on the in-memory store. ``policy=`` takes a ``Policy`` or the path of
/// a policy file (the service's TOML). ``redis=`` moves the buckets to Redis, so that every
/// process sees one set of limits: a URL (``redis://``, ``rediss://``; with ``cluster=True``,
/// one or more seed URLs of a Redis Cluster). Redis is used behind the fallback store unless
/// ``fallback=False``: Redis counts as failing when it leaves a request unanswered longer than
/// ``deadline`` seconds (or its usual latency, if longer) or its connection fails, a circuit
/// breaker opens after repeated failures, and while Redis fails each rule follows its
/// ``failure_mode`` (``local``, the default, enforces ``1/instances`` of each limit in memory;
/// ``open`` admits; ``closed`` refuses as unavailable); such decisions say ``degraded``. A
/// slow answer on a busy host is waited for (up to 5 s), not taken for a failure. The
/// constructor connects if Redis answers; if it does not, the limiter starts anyway and keeps
/// trying in the background (with ``fallback=False`` it raises ``StoreError``).
///
/// ``prefix`` is the first segment of every Redis key (default ``tollgate``);
/// ``connect_timeout`` and ``timeout`` bound connecting and each Redis command, in seconds.
/// ``clock`` (a ``ManualClock``) makes the memory store's time a test's; ``max_buckets`` caps
/// the buckets it tracks.
///
/// Every method takes the subject as keywords (``tenant``, ``agent``, ``user``,
/// ``provider``, ``model``, ``tier``, and custom ``labels={...}``) and the cost (``tokens``,
/// ``requests`` (default 1), optionally ``input_tokens`` / ``output_tokens``).
///
/// Sync methods release the GIL while the engine works or waits; the ``a``-prefixed methods
/// (``acheck``, ``apeek``, ``ausage``, ``areset``) and ``async with acquire(...)`` return
/// awaitables driven by the engine's own runtime, which never block the event loop.
#[pyclass(frozen, subclass, module = "tollgate", name = "Limiter")]
pub(crate) struct Limiter {
    pub(crate) backend: Backend,
}

/// The store arguments of the constructor.
struct StoreArgs<'a> {
    redis: Option<Vec<String>>,
    cluster: bool,
    fallback: bool,
    deadline: f64,
    instances: u32,
    clock: Option<PyRef<'a, ManualClock>>,
    max_buckets: Option<usize>,
    prefix: Option<String>,
    connect_timeout: f64,
    timeout: f64,
}

fn redis_urls(redis: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<String>>> {
    let Some(r) = redis.filter(|r| !r.is_none()) else {
        return Ok(None);
    };
    if let Ok(url) = r.extract::<String>() {
        return Ok(Some(vec![url]));
    }
    let urls: Vec<String> = r.extract().map_err(|_| {
        PyTypeError::new_err(
            "redis: expected a URL (str) or a list of seed URLs (with cluster=True)",
        )
    })?;
    if urls.is_empty() {
        return Err(PyValueError::new_err(
            "redis: the list of seed URLs is empty",
        ));
    }
    Ok(Some(urls))
}

fn build(py: Python<'_>, policy: tollgate::Policy, args: StoreArgs<'_>) -> PyResult<Backend> {
    let clock: Arc<dyn Clock> = match &args.clock {
        Some(c) => Arc::new(c.inner.clone()),
        None => Arc::new(SystemClock::new()),
    };
    let Some(nodes) = args.redis else {
        let mut b = MemoryStore::builder().shared_clock(clock);
        if let Some(n) = args.max_buckets {
            b = b.max_buckets(n);
        }
        return Ok(Backend::Memory(tollgate::Limiter::with_store(
            policy,
            b.build(),
        )));
    };
    if nodes.len() > 1 && !args.cluster {
        return Err(PyValueError::new_err(
            "redis: several URLs are the seeds of a Redis Cluster: pass cluster=True",
        ));
    }
    let mut config = RedisConfig {
        connect_timeout: seconds("connect_timeout", args.connect_timeout)?,
        response_timeout: seconds("timeout", args.timeout)?,
        ..RedisConfig::default()
    };
    if let Some(p) = args.prefix {
        config.prefix = p;
    }
    if args.fallback {
        let deadline = seconds("deadline", args.deadline)?;
        if deadline.is_zero() {
            return Err(PyValueError::new_err(
                "deadline: must be more than 0 seconds",
            ));
        }
        let fallback = FallbackConfig {
            deadline,
            expected_instances: args.instances.max(1),
            ..FallbackConfig::default()
        };
        // A slow answer from a healthy Redis on a busy host is waited for up to `max_wait`:
        // the store's own response timeout must not end it sooner.
        config.response_timeout = config.response_timeout.max(fallback.max_wait);
        // Connects now if Redis answers (so that the first decisions are Redis's); if it
        // does not, the store keeps trying in the background and the rules' failure modes
        // decide until it answers.
        let primary = match connect(py, &nodes, args.cluster, config.clone())? {
            Ok(store) => store,
            Err(_) => {
                let _guard = engine::runtime().enter();
                RedisStore::connect_lazy(&nodes, args.cluster, config)
            }
        };
        let store = FallbackStore::with_config(primary, fallback, clock);
        return Ok(Backend::Fallback(tollgate::Limiter::with_store(
            policy, store,
        )));
    }
    let store =
        connect(py, &nodes, args.cluster, config)?.map_err(|e| errors::store_error(py, &e))?;
    Ok(Backend::Redis(tollgate::Limiter::with_store(policy, store)))
}

/// Connects to Redis (a server, or a cluster by its seeds), with the GIL released.
fn connect(
    py: Python<'_>,
    nodes: &[String],
    cluster: bool,
    config: RedisConfig,
) -> PyResult<Result<RedisStore, tollgate::StoreError>> {
    engine::block_on(
        py,
        async move {
            if cluster {
                RedisStore::connect_cluster(nodes, config).await
            } else {
                RedisStore::connect_with(&nodes[0], config).await
            }
        },
        None,
    )
}

/// The answer of a decision, as Python's `Decision`.
fn decision(py: Python<'_>, r: Result<tollgate::Decision, tollgate::Error>) -> PyResult<Py<PyAny>> {
    let d = errors::check(py, r)?;
    Ok(Py::new(py, Decision::from(d))?.into_any())
}

impl Limiter {
    /// A decision, answered synchronously. One the memory store makes at once (no I/O, no
    /// wait: a few hundred nanoseconds) keeps the GIL: handing the GIL to another thread and
    /// taking it back costs more than the decision, and with four threads calling, releasing
    /// it cut the throughput to a third of one thread's. A decision that must wait for a
    /// store releases the GIL while it waits.
    fn decide_sync(
        &self,
        py: Python<'_>,
        subject: &Subject<'_>,
        cost: Cost,
        peek: bool,
    ) -> PyResult<Decision> {
        let backend = &self.backend;
        let r = match backend.decide_now(subject, cost, peek) {
            Some(r) => r,
            None => py.detach(|| engine::runtime().block_on(backend.decide(subject, cost, peek))),
        };
        errors::check(py, r).map(Decision::from)
    }

    /// A decision as an awaitable.
    fn decide_async<'py>(
        &self,
        py: Python<'py>,
        subject: Subject<'_>,
        cost: Cost,
        peek: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(r) = self.backend.decide_now(&subject, cost, peek) {
            return ready(py, decision(py, r));
        }
        let backend = self.backend.clone();
        let subject = subject.into_owned();
        awaitable(
            py,
            async move { backend.decide(&subject, cost, peek).await },
            decision,
        )
    }
}

#[pymethods]
impl Limiter {
    #[new]
    #[pyo3(signature = (
        policy = None, *, redis = None, cluster = false, fallback = true, deadline = 0.025,
        instances = 1, clock = None, max_buckets = None, prefix = None, connect_timeout = 1.0,
        timeout = 1.0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        policy: Option<&Bound<'_, PyAny>>,
        redis: Option<&Bound<'_, PyAny>>,
        cluster: bool,
        fallback: bool,
        deadline: f64,
        instances: u32,
        clock: Option<PyRef<'_, ManualClock>>,
        max_buckets: Option<usize>,
        prefix: Option<String>,
        connect_timeout: f64,
        timeout: f64,
    ) -> PyResult<Self> {
        let policy = policy_arg(py, policy)?;
        let args = StoreArgs {
            redis: redis_urls(redis)?,
            cluster,
            fallback,
            deadline,
            instances,
            clock,
            max_buckets,
            prefix,
            connect_timeout,
            timeout,
        };
        Ok(Limiter {
            backend: build(py, policy, args)?,
        })
    }

    /// A limiter configured by the environment, as services that rate-limit through it
    /// configure theirs: ``REDIS_URL`` moves the buckets to Redis (behind the fallback
    /// store); ``TOKEN_BUCKET_SIZE`` (tokens) and ``TOKEN_REFILL_RATE`` (tokens per second),
    /// set together, make the policy one token bucket per ``agent`` (the rule
    /// ``agent-token-bucket``). With none set, the built-in policy on the memory store.
    /// Keyword arguments are passed on to the constructor and win over the environment. A
    /// variable that cannot be used raises ``PolicyError`` naming it (``field``).
    #[classmethod]
    #[pyo3(signature = (**kwargs))]
    fn from_env<'py>(
        cls: &Bound<'py, PyType>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let env = tollgate::env::EnvConfig::read().map_err(|e| errors::env_error(py, &e))?;
        let merged = PyDict::new(py);
        if let Some(policy) = env.policy {
            merged.set_item("policy", Policy { inner: policy })?;
        }
        if let Some(url) = env.redis_url {
            merged.set_item("redis", url)?;
        }
        if let Some(kwargs) = kwargs {
            merged.update(kwargs.as_mapping())?;
        }
        cls.call((), Some(&merged))
    }

    /// Admits the call and spends its cost from every applicable limit, or denies it and
    /// spends nothing. A denial is a ``Decision`` (never an exception); only a store that
    /// cannot answer raises (``StoreError``).
    #[pyo3(signature = (
        *, tenant = None, agent = None, user = None, provider = None, model = None, tier = None,
        labels = None, tokens = None, requests = 1, input_tokens = None, output_tokens = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        py: Python<'_>,
        tenant: Option<&str>,
        agent: Option<&str>,
        user: Option<&str>,
        provider: Option<&str>,
        model: Option<&str>,
        tier: Option<&str>,
        labels: Option<&Bound<'_, PyDict>>,
        tokens: Option<u64>,
        requests: u64,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
    ) -> PyResult<Decision> {
        let who = Who {
            tenant,
            agent,
            user,
            provider,
            model,
            tier,
        };
        let subject = who.subject(labels)?;
        self.decide_sync(
            py,
            &subject,
            cost(tokens, requests, input_tokens, output_tokens),
            false,
        )
    }

    /// The decision ``check`` would make, spending nothing.
    #[pyo3(signature = (
        *, tenant = None, agent = None, user = None, provider = None, model = None, tier = None,
        labels = None, tokens = None, requests = 1, input_tokens = None, output_tokens = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn peek(
        &self,
        py: Python<'_>,
        tenant: Option<&str>,
        agent: Option<&str>,
        user: Option<&str>,
        provider: Option<&str>,
        model: Option<&str>,
        tier: Option<&str>,
        labels: Option<&Bound<'_, PyDict>>,
        tokens: Option<u64>,
        requests: u64,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
    ) -> PyResult<Decision> {
        let who = Who {
            tenant,
            agent,
            user,
            provider,
            model,
            tier,
        };
        let subject = who.subject(labels)?;
        self.decide_sync(
            py,
            &subject,
            cost(tokens, requests, input_tokens, output_tokens),
            true,
        )
    }

    /// ``check``, awaitable.
    #[pyo3(signature = (
        *, tenant = None, agent = None, user = None, provider = None, model = None, tier = None,
        labels = None, tokens = None, requests = 1, input_tokens = None, output_tokens = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn acheck<'py>(
        &self,
        py: Python<'py>,
        tenant: Option<&str>,
        agent: Option<&str>,
        user: Option<&str>,
        provider: Option<&str>,
        model: Option<&str>,
        tier: Option<&str>,
        labels: Option<&Bound<'_, PyDict>>,
        tokens: Option<u64>,
        requests: u64,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let who = Who {
            tenant,
            agent,
            user,
            provider,
            model,
            tier,
        };
        let subject = who.subject(labels)?;
        self.decide_async(
            py,
            subject,
            cost(tokens, requests, input_tokens, output_tokens),
            false,
        )
    }

    /// ``peek``, awaitable.
    #[pyo3(signature = (
        *, tenant = None, agent = None, user = None, provider = None, model = None, tier = None,
        labels = None, tokens = None, requests = 1, input_tokens = None, output_tokens = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn apeek<'py>(
        &self,
        py: Python<'py>,
        tenant: Option<&str>,
        agent: Option<&str>,
        user: Option<&str>,
        provider: Option<&str>,
        model: Option<&str>,
        tier: Option<&str>,
        labels: Option<&Bound<'_, PyDict>>,
        tokens: Option<u64>,
        requests: u64,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let who = Who {
            tenant,
            agent,
            user,
            provider,
            model,
            tier,
        };
        let subject = who.subject(labels)?;
        self.decide_async(
            py,
            subject,
            cost(tokens, requests, input_tokens, output_tokens),
            true,
        )
    }

    /// Waits until the call is admitted (or ``timeout`` seconds have passed; ``None`` waits
    /// as long as it takes), reserving its cost and a concurrency slot. Use the result with
    /// ``with`` or ``async with`` (see ``Acquire``): it raises ``RateLimited`` if the call was
    /// not admitted in time, commits the estimate (or ``permit.actual_tokens``) when the block
    /// exits normally, and refunds everything when it exits by an exception or cancellation.
    #[pyo3(signature = (
        *, tenant = None, agent = None, user = None, provider = None, model = None, tier = None,
        labels = None, tokens = None, requests = 1, input_tokens = None, output_tokens = None,
        timeout = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &self,
        tenant: Option<&str>,
        agent: Option<&str>,
        user: Option<&str>,
        provider: Option<&str>,
        model: Option<&str>,
        tier: Option<&str>,
        labels: Option<&Bound<'_, PyDict>>,
        tokens: Option<u64>,
        requests: u64,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
        timeout: Option<f64>,
    ) -> PyResult<Acquire> {
        let who = Who {
            tenant,
            agent,
            user,
            provider,
            model,
            tier,
        };
        let subject = who.subject(labels)?.into_owned();
        Ok(Acquire::new(
            self.backend.clone(),
            subject,
            cost(tokens, requests, input_tokens, output_tokens),
            max_wait(timeout)?,
        ))
    }

    /// How much of every applicable limit is in use, one ``Usage`` per limit. Spends
    /// nothing.
    #[pyo3(signature = (
        *, tenant = None, agent = None, user = None, provider = None, model = None, tier = None,
        labels = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn usage(
        &self,
        py: Python<'_>,
        tenant: Option<&str>,
        agent: Option<&str>,
        user: Option<&str>,
        provider: Option<&str>,
        model: Option<&str>,
        tier: Option<&str>,
        labels: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<Usage>> {
        let who = Who {
            tenant,
            agent,
            user,
            provider,
            model,
            tier,
        };
        let subject = who.subject(labels)?;
        let r = engine::block_on(py, self.backend.usage(&subject), None)?;
        Ok(errors::check(py, r)?.into_iter().map(Usage).collect())
    }

    /// ``usage``, awaitable.
    #[pyo3(signature = (
        *, tenant = None, agent = None, user = None, provider = None, model = None, tier = None,
        labels = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn ausage<'py>(
        &self,
        py: Python<'py>,
        tenant: Option<&str>,
        agent: Option<&str>,
        user: Option<&str>,
        provider: Option<&str>,
        model: Option<&str>,
        tier: Option<&str>,
        labels: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let who = Who {
            tenant,
            agent,
            user,
            provider,
            model,
            tier,
        };
        let subject = who.subject(labels)?.into_owned();
        let backend = self.backend.clone();
        awaitable(py, async move { backend.usage(&subject).await }, |py, r| {
            let usage = errors::check(py, r)?;
            let items = usage
                .into_iter()
                .map(|u| Py::new(py, Usage(u)))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, items)?.into_any().unbind())
        })
    }

    /// Forgets the buckets of every limit that applies to the subject (they are full
    /// again), or, with ``rule=``, only that rule's. Returns how many buckets that is (0: no
    /// rule applies to the subject, so nothing was reset).
    #[pyo3(signature = (
        *, tenant = None, agent = None, user = None, provider = None, model = None, tier = None,
        labels = None, rule = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn reset(
        &self,
        py: Python<'_>,
        tenant: Option<&str>,
        agent: Option<&str>,
        user: Option<&str>,
        provider: Option<&str>,
        model: Option<&str>,
        tier: Option<&str>,
        labels: Option<&Bound<'_, PyDict>>,
        rule: Option<&str>,
    ) -> PyResult<u64> {
        let who = Who {
            tenant,
            agent,
            user,
            provider,
            model,
            tier,
        };
        let subject = who.subject(labels)?;
        let r = engine::block_on(py, self.backend.reset(&subject, rule), None)?;
        errors::check(py, r)
    }

    /// ``reset``, awaitable.
    #[pyo3(signature = (
        *, tenant = None, agent = None, user = None, provider = None, model = None, tier = None,
        labels = None, rule = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn areset<'py>(
        &self,
        py: Python<'py>,
        tenant: Option<&str>,
        agent: Option<&str>,
        user: Option<&str>,
        provider: Option<&str>,
        model: Option<&str>,
        tier: Option<&str>,
        labels: Option<&Bound<'_, PyDict>>,
        rule: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let who = Who {
            tenant,
            agent,
            user,
            provider,
            model,
            tier,
        };
        let subject = who.subject(labels)?.into_owned();
        let backend = self.backend.clone();
        awaitable(
            py,
            async move { backend.reset(&subject, rule.as_deref()).await },
            |py, r| {
                let n = errors::check(py, r)?;
                Ok(n.into_pyobject(py)?.into_any().unbind())
            },
        )
    }

    /// Forgets every bucket of the rule called ``name``, for every partition. Returns how
    /// many buckets were forgotten, where the store can tell. ``KeyError`` if there is no
    /// such rule.
    fn reset_rule(&self, py: Python<'_>, name: &str) -> PyResult<u64> {
        let r = engine::block_on(py, self.backend.reset_rule(name), None)?;
        errors::check(py, r)
    }

    /// Counts of decisions so far (and active buckets per rule, for the memory store).
    fn stats(&self) -> Stats {
        Stats(self.backend.stats())
    }

    /// The policy in force.
    #[getter]
    fn policy(&self) -> Policy {
        Policy {
            inner: (*self.backend.policy()).clone(),
        }
    }

    /// Replaces the policy atomically; limits that did not change keep their buckets.
    fn set_policy(&self, py: Python<'_>, policy: &Bound<'_, PyAny>) -> PyResult<()> {
        let policy = policy_arg(py, Some(policy))?;
        self.backend.set_policy(policy);
        Ok(())
    }

    /// Where the buckets are: ``memory``, ``redis+fallback`` or ``redis``.
    #[getter]
    fn store(&self) -> &'static str {
        self.backend.store_name()
    }

    /// The fallback store's circuit breaker: ``closed``, ``open`` or ``half_open``
    /// (``None`` without the fallback store).
    #[getter]
    fn breaker(&self) -> Option<&'static str> {
        self.backend.breaker()
    }

    fn __repr__(&self) -> String {
        format!(
            "Limiter(store={:?}, rules={:?})",
            self.backend.store_name(),
            self.backend
                .policy()
                .rules()
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
        )
    }
}
