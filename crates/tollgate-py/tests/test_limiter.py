"""The Limiter contract on the memory store: construction, check, peek, usage, reset, stats,
decisions and their headers, errors; every call sync and async."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import tollgate
from conftest import write_policy

POLICY = """
[[rules]]
name = "per-tenant"
match = { tenant = "*", provider = "openai" }
limits = [
  { kind = "requests", amount = 3, per = "minute" },
  { kind = "tokens", amount = 10000, per = "minute" },
]

[[rules.overrides]]
match = { tenant = "premium" }
limits = [{ kind = "requests", amount = 100, per = "minute" }]
"""


@pytest.fixture
def clock() -> tollgate.ManualClock:
    return tollgate.ManualClock(start=1_700_000_000.0)


@pytest.fixture
def limiter(tmp_path: Path, clock: tollgate.ManualClock) -> tollgate.Limiter:
    return tollgate.Limiter(policy=str(write_policy(tmp_path, POLICY)), clock=clock)


ACME = dict(tenant="acme", provider="openai")

#: The built-in policy's rules: one pair of buckets per tenant (else agent, else user) and
#: provider.
BUILT_IN = ["default", "default-agent", "default-user", "default-anonymous"]


def test_the_built_in_policy_limits_60_requests_and_100k_tokens_per_tenant_and_provider(
    clock: tollgate.ManualClock,
) -> None:
    limiter = tollgate.Limiter(clock=clock)
    assert limiter.store == "memory"
    assert limiter.policy.rules == BUILT_IN
    d = limiter.check(tenant="acme", provider="openai", model="gpt-4o", tokens=1500)
    assert d.allowed and bool(d)
    assert [(s.kind, s.amount, s.per, s.remaining) for s in d.limits] == [
        ("requests", 60, "minute", 59),
        ("tokens", 100_000, "minute", 98_500),
    ]
    for _ in range(59):
        assert limiter.check(**ACME).allowed
    denied = limiter.check(**ACME)
    assert not denied.allowed
    assert (denied.outcome, denied.reason, denied.code) == ("denied", "requests", "E4404")
    # 60 per minute: one request every second.
    assert denied.retry_after == pytest.approx(1.0, abs=1e-6)
    clock.advance(denied.retry_after)
    assert limiter.check(**ACME).allowed


def test_a_policy_file_path_or_policy_object_configures_the_limiter(
    tmp_path: Path, clock: tollgate.ManualClock
) -> None:
    path = write_policy(tmp_path, POLICY)
    for policy in (str(path), path, tollgate.Policy.load(path), tollgate.Policy.from_toml(POLICY)):
        limiter = tollgate.Limiter(policy=policy, clock=clock)
        assert limiter.policy.rules == ["per-tenant"]
        assert [limiter.check(**ACME).allowed for _ in range(4)] == [True, True, True, False]
        # The override: premium tenants get 100 per minute.
        assert all(limiter.check(tenant="premium", provider="openai") for _ in range(10))


def test_check_spends_and_peek_does_not(limiter: tollgate.Limiter) -> None:
    for _ in range(3):
        assert limiter.peek(**ACME).allowed
    assert limiter.usage(**ACME)[0].used == 0
    assert [limiter.check(**ACME).allowed for _ in range(3)] == [True, True, True]
    peeked = limiter.peek(**ACME)
    assert not peeked.allowed and peeked.reason == "requests"
    assert limiter.stats().allowed == 3 and limiter.stats().denied == 0


def test_a_denial_by_tokens_names_the_limit_and_when_to_retry(
    limiter: tollgate.Limiter, clock: tollgate.ManualClock
) -> None:
    assert limiter.check(**ACME, tokens=9000).allowed
    d = limiter.check(**ACME, tokens=2000)
    assert (d.allowed, d.reason, d.code) == (False, "tokens", "E4405")
    assert d.denied_by is not None and d.denied_by.kind == "tokens"
    assert d.denied_by.rule == "per-tenant"
    # 10,000 tokens per minute: 1,000 more tokens take 6 s.
    assert d.retry_after == pytest.approx(6.0, abs=1e-5)
    clock.advance(5.9)
    assert not limiter.check(**ACME, tokens=2000).allowed
    clock.advance(0.1)
    assert limiter.check(**ACME, tokens=2000).allowed


def test_a_cost_that_can_never_fit_is_too_large_and_says_not_to_retry(
    limiter: tollgate.Limiter,
) -> None:
    d = limiter.check(**ACME, tokens=20_000)
    assert (d.outcome, d.reason, d.code, d.retry_after) == ("too_large", "too_large", "E4413", None)
    h = d.headers()
    assert h["x-should-retry"] == "false"
    assert "retry-after" not in h


def test_headers_of_a_denial_carry_retry_after_in_seconds_and_milliseconds(
    limiter: tollgate.Limiter,
) -> None:
    allowed = limiter.check(**ACME)
    h = allowed.headers()
    assert h["x-ratelimit-limit-requests"] == "3"
    assert h["x-ratelimit-remaining-requests"] == "2"
    assert "ratelimit-policy" in h and "ratelimit" in h
    assert "retry-after" not in h and "x-tollgate-degraded" not in h
    limiter.check(**ACME)
    limiter.check(**ACME)
    denied = limiter.check(**ACME)
    h = denied.headers()
    assert h["retry-after"] == "20"  # 3 per minute: 20 s, whole seconds rounded up
    assert h["retry-after-ms"] == "20000"
    body = denied.to_dict()
    assert body["allowed"] is False and body["error_code"] == "E4404"
    assert body["retry_after_ms"] == 20000 and body["degraded"] is False


def test_usage_reports_every_limit_and_reset_forgets_them(limiter: tollgate.Limiter) -> None:
    limiter.check(**ACME, tokens=4000)
    usage = limiter.usage(**ACME)
    assert [(u.rule, u.kind, u.used, u.capacity, u.available) for u in usage] == [
        ("per-tenant", "requests", 1, 3, 2),
        ("per-tenant", "tokens", 4000, 10_000, 6000),
    ]
    assert usage[1].reset_after == pytest.approx(24.0, abs=1e-5)
    assert usage[0].to_dict()["used"] == 1
    assert limiter.reset(**ACME) == 2  # both limits' buckets
    assert limiter.reset(tenant="acme") == 0  # no rule applies: nothing to reset
    assert limiter.reset(**ACME, rule="per-tenant") == 2
    assert [u.used for u in limiter.usage(**ACME)] == [0, 0]


def test_reset_rule_forgets_every_partition_and_names_unknown_rules(
    limiter: tollgate.Limiter,
) -> None:
    limiter.check(tenant="a", provider="openai")
    limiter.check(tenant="b", provider="openai")
    assert limiter.reset_rule("per-tenant") >= 2
    assert limiter.usage(tenant="a", provider="openai")[0].used == 0
    with pytest.raises(KeyError, match="nope"):
        limiter.reset_rule("nope")


def test_stats_count_decisions_and_active_buckets(limiter: tollgate.Limiter) -> None:
    for _ in range(5):
        limiter.check(**ACME, tokens=10)
    s = limiter.stats()
    assert (s.allowed, s.denied) == (3, 2)
    assert s.deny_rate == pytest.approx(0.4)
    assert s.active_buckets == {"per-tenant": 2}
    assert s.to_dict()["allowed"] == 3


def test_custom_labels_and_split_token_costs(clock: tollgate.ManualClock) -> None:
    policy = tollgate.Policy.from_toml(
        """
        [[rules]]
        name = "per-region"
        match = { region = "*" }
        limits = [{ kind = "input_tokens", amount = 100, per = "minute" },
                  { kind = "output_tokens", amount = 50, per = "minute" }]
        """
    )
    limiter = tollgate.Limiter(policy, clock=clock)
    assert limiter.check(labels={"region": "eu"}, input_tokens=80, output_tokens=40).allowed
    d = limiter.check(labels={"region": "eu"}, input_tokens=10, output_tokens=20)
    assert (d.allowed, d.denied_by.kind if d.denied_by else None) == (False, "output_tokens")
    assert limiter.check(labels={"region": "us"}, input_tokens=10, output_tokens=20).allowed
    with pytest.raises(TypeError, match="labels"):
        limiter.check(labels={"region": 5})  # type: ignore[dict-item]


def test_set_policy_swaps_the_rules(limiter: tollgate.Limiter) -> None:
    limiter.set_policy(tollgate.Policy.default())
    assert limiter.policy.rules == BUILT_IN
    assert limiter.check(**ACME).limits[0].amount == 60


def test_bad_arguments_are_clear_errors(limiter: tollgate.Limiter) -> None:
    with pytest.raises(OverflowError, match="tokens"):
        limiter.check(**ACME, tokens=-1)
    with pytest.raises(TypeError, match="tokens"):
        limiter.check(**ACME, tokens=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        limiter.check(tenat="acme")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="timeout"):
        limiter.acquire(**ACME, timeout=-1.0)
    with pytest.raises(TypeError, match="policy"):
        tollgate.Limiter(policy=42)  # type: ignore[arg-type]


def test_a_policy_error_names_the_file_line_and_field(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path,
        '[[rules]]\nname = "x"\nmatch = { tenant = "*" }\n'
        'limits = [{ kind = "requests", amount = 0, per = "minute" }]\n',
    )
    with pytest.raises(tollgate.PolicyError) as e:
        tollgate.Limiter(policy=str(path))
    assert (e.value.file, e.value.line, e.value.field, e.value.rule) == (
        str(path),
        4,
        "limits[0].amount",
        "x",
    )
    assert isinstance(e.value, ValueError)
    with pytest.raises(tollgate.PolicyError) as missing:
        tollgate.Limiter(policy=str(tmp_path / "absent.toml"))
    assert missing.value.file == str(tmp_path / "absent.toml")
    with pytest.raises(tollgate.PolicyError) as syntax:
        tollgate.Policy.from_toml("[[rules]\n", file="inline.toml")
    assert (syntax.value.file, syntax.value.line) == ("inline.toml", 1)


def test_from_env_reads_the_token_bucket_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("TOKEN_BUCKET_SIZE", "100")
    monkeypatch.setenv("TOKEN_REFILL_RATE", "10.0")
    clock = tollgate.ManualClock()
    limiter = tollgate.Limiter.from_env(clock=clock)
    assert isinstance(limiter, tollgate.Limiter) and limiter.store == "memory"
    assert limiter.policy.rules == ["agent-token-bucket"]
    assert limiter.check(agent="a1", tokens=100).allowed
    d = limiter.check(agent="a1", tokens=10)
    assert not d.allowed and d.retry_after == pytest.approx(1.0, abs=1e-5)
    clock.advance(1.0)
    assert limiter.check(agent="a1", tokens=10).allowed
    # Each agent has its own bucket.
    assert limiter.check(agent="a2", tokens=100).allowed


def test_from_env_without_variables_is_the_built_in_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("REDIS_URL", "TOKEN_BUCKET_SIZE", "TOKEN_REFILL_RATE"):
        monkeypatch.delenv(var, raising=False)
    limiter = tollgate.Limiter.from_env()
    assert (limiter.store, limiter.policy.rules) == ("memory", BUILT_IN)
    # An agent's calls are limited by the built-in policy too.
    assert limiter.check(agent="a1", provider="openai").limits[0].rule == "default-agent"


def test_from_env_names_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_BUCKET_SIZE", "lots")
    monkeypatch.setenv("TOKEN_REFILL_RATE", "10")
    with pytest.raises(tollgate.PolicyError) as e:
        tollgate.Limiter.from_env()
    assert e.value.field == "TOKEN_BUCKET_SIZE" and "lots" in str(e.value)
    # The two bucket variables go together.
    monkeypatch.delenv("TOKEN_BUCKET_SIZE")
    with pytest.raises(tollgate.PolicyError) as e:
        tollgate.Limiter.from_env()
    assert e.value.field == "TOKEN_REFILL_RATE"


def test_from_env_with_redis_url_uses_redis_behind_the_fallback(
    monkeypatch: pytest.MonkeyPatch, redis_server, prefix: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.delenv("TOKEN_BUCKET_SIZE", raising=False)
    monkeypatch.delenv("TOKEN_REFILL_RATE", raising=False)
    limiter = tollgate.Limiter.from_env(prefix=prefix)
    assert limiter.store == "redis+fallback"


# The same contract, awaited.


async def test_acheck_apeek_ausage_areset(limiter: tollgate.Limiter) -> None:
    assert (await limiter.apeek(**ACME)).allowed
    results = [(await limiter.acheck(**ACME, tokens=100)).allowed for _ in range(4)]
    assert results == [True, True, True, False]
    usage = await limiter.ausage(**ACME)
    assert [u.used for u in usage] == [3, 300]
    assert await limiter.areset(**ACME) == 2
    assert [u.used for u in await limiter.ausage(**ACME)] == [0, 0]
    d = await limiter.acheck(**ACME, tokens=20_000)
    assert d.outcome == "too_large"


async def test_awaitables_work_with_gather_and_wait_for(limiter: tollgate.Limiter) -> None:
    decisions = await asyncio.gather(*(limiter.acheck(**ACME) for _ in range(5)))
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    d = await asyncio.wait_for(limiter.apeek(**ACME), timeout=5)
    assert not d.allowed


def test_the_package_is_typed_and_documented() -> None:
    root = Path(tollgate.__file__).parent
    assert (root / "py.typed").exists() and (root / "_tollgate.pyi").exists()
    for obj in (
        tollgate.Limiter,
        tollgate.Limiter.check,
        tollgate.Limiter.acquire,
        tollgate.Decision,
        tollgate.Permit,
        tollgate.Acquire,
        tollgate.RateLimiter,
        tollgate.ModelRateLimiter,
        tollgate.RateLimited,
        tollgate.Policy.per_model,
    ):
        assert obj.__doc__ and len(obj.__doc__) > 40, obj
    assert "acquire" in (tollgate.Limiter.__doc__ or "")
    assert os.path.basename(tollgate._tollgate.__file__).startswith("_tollgate.abi3")
