"""The same contract on Redis (a private redis-server), and what happens when Redis stops:
the fallback store answers by each rule's failure mode, as in Rust."""

from __future__ import annotations

import asyncio

import pytest

import tollgate
from conftest import PATIENT, RedisCluster, RedisServer

HOURLY = tollgate.Policy.from_toml(
    """
    [[rules]]
    name = "per-tenant"
    match = { tenant = "*" }
    limits = [
      { kind = "requests", amount = 3, per = "hour" },
      { kind = "tokens", amount = 3600, per = "hour" },
    ]

    [[rules]]
    name = "slots"
    match = { tenant = "*", provider = "openai" }
    limits = [{ kind = "concurrency", amount = 1 }]
    """
)

ACME = dict(tenant="acme")


@pytest.fixture(params=["fallback", "direct"])
def limiter(request: pytest.FixtureRequest, redis_server: RedisServer, prefix: str) -> tollgate.Limiter:
    fallback = request.param == "fallback"
    return tollgate.Limiter(HOURLY, redis=redis_server.url, prefix=prefix, fallback=fallback, **PATIENT)


def test_check_peek_usage_reset_on_redis(limiter: tollgate.Limiter) -> None:
    assert limiter.store in ("redis+fallback", "redis")
    assert limiter.peek(**ACME).allowed
    results = [limiter.check(**ACME, tokens=100).allowed for _ in range(4)]
    assert results == [True, True, True, False]
    d = limiter.check(**ACME)
    assert (d.reason, d.code, d.degraded) == ("requests", "E4404", False)
    # 3 per hour: the next request in 20 minutes (Redis's clock keeps running meanwhile).
    assert d.retry_after == pytest.approx(1200.0, abs=30.0)
    assert [u.used for u in limiter.usage(**ACME)] == [3, 300]
    limiter.reset(**ACME)
    assert [u.used for u in limiter.usage(**ACME)] == [0, 0]
    assert limiter.check(**ACME, tokens=4000).outcome == "too_large"
    assert limiter.stats().allowed == 3


async def test_the_async_contract_on_redis(limiter: tollgate.Limiter) -> None:
    decisions = await asyncio.gather(*(limiter.acheck(**ACME, tokens=10) for _ in range(10)))
    assert sum(d.allowed for d in decisions) == 3
    assert (await limiter.apeek(**ACME)).reason == "requests"
    assert [u.used for u in await limiter.ausage(**ACME)] == [3, 30]
    await limiter.areset(**ACME)
    assert [u.used for u in await limiter.ausage(**ACME)] == [0, 0]


async def test_acquire_and_settle_on_redis(limiter: tollgate.Limiter) -> None:
    who = dict(tenant="acme", provider="openai")
    async with limiter.acquire(**who, tokens=1000) as permit:
        assert [u.used for u in await limiter.ausage(**who)] == [1, 1000, 1]
        await permit.acommit(tokens=400)
    assert [u.used for u in await limiter.ausage(**who)] == [1, 400, 0]
    with pytest.raises(KeyError):
        async with limiter.acquire(**who, tokens=500):
            raise KeyError("boom")
    assert [u.used for u in await limiter.ausage(**who)] == [1, 400, 0]
    with limiter.acquire(**who, tokens=200) as permit:
        permit.actual_tokens = 250
    assert [u.used for u in limiter.usage(**who)] == [2, 650, 0]


async def test_a_cancelled_waiter_on_redis_takes_no_slot(limiter: tollgate.Limiter) -> None:
    who = dict(tenant="acme", provider="openai")
    holder = await limiter.acquire(**who, tokens=1)

    async def wait() -> None:
        async with limiter.acquire(**who, tokens=1, timeout=None):
            pass

    waiter = asyncio.create_task(wait())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await holder.acancel()
    async with limiter.acquire(**who, tokens=1, timeout=0):
        pass
    assert [u.used for u in await limiter.ausage(**who)][2] == 0


def test_without_the_fallback_an_unreachable_redis_is_a_store_error(prefix: str) -> None:
    from conftest import free_port

    with pytest.raises(tollgate.StoreError) as e:
        tollgate.Limiter(HOURLY, redis=f"redis://127.0.0.1:{free_port()}", fallback=False)
    assert e.value.transient


FAILURE_MODES = tollgate.Policy.from_toml(
    """
    [[rules]]
    name = "fails-open"
    match = { tenant = "*", tier = "open" }
    failure_mode = "open"
    limits = [{ kind = "requests", amount = 2, per = "hour" }]

    [[rules]]
    name = "fails-closed"
    match = { tenant = "*", tier = "closed" }
    failure_mode = "closed"
    limits = [{ kind = "requests", amount = 2, per = "hour" }]

    [[rules]]
    name = "fails-local"
    match = { tenant = "*", tier = "local" }
    failure_mode = "local"
    limits = [{ kind = "requests", amount = 4, per = "hour" }]
    """
)


def test_redis_stopped_mid_run_answers_by_each_rules_failure_mode(
    own_redis: RedisServer, prefix: str
) -> None:
    # Two instances share the limits: while degraded, a "local" rule enforces half of each.
    limiter = tollgate.Limiter(
        FAILURE_MODES, redis=own_redis.url, prefix=prefix, instances=2, **PATIENT
    )
    for tier in ("open", "closed", "local"):
        d = limiter.check(tenant="acme", tier=tier)
        assert d.allowed and not d.degraded
    assert limiter.breaker == "closed"

    own_redis.kill()

    # open: admitted, and said to be degraded.
    for _ in range(5):
        d = limiter.check(tenant="acme", tier="open")
        assert (d.allowed, d.degraded) == (True, True)
        assert d.headers()["x-tollgate-degraded"] == "true"
    # closed: refused as unavailable, which is not a rate-limit denial.
    d = limiter.check(tenant="acme", tier="closed")
    assert (d.allowed, d.outcome, d.reason, d.code, d.degraded) == (
        False,
        "unavailable",
        "unavailable",
        "E4503",
        True,
    )
    assert d.retry_after is None
    # local: this instance's share (4 / 2 = 2), in memory.
    local = [limiter.check(tenant="acme", tier="local") for _ in range(3)]
    assert [d.allowed for d in local] == [True, True, False]
    assert all(d.degraded for d in local)
    assert local[2].reason == "requests"
    # The breaker has opened: Redis is no longer asked.
    assert limiter.breaker in ("open", "half_open")


async def test_redis_stopped_mid_run_async_and_permits(own_redis: RedisServer, prefix: str) -> None:
    limiter = tollgate.Limiter(FAILURE_MODES, redis=own_redis.url, prefix=prefix, **PATIENT)
    assert (await limiter.acheck(tenant="acme", tier="open")).allowed
    own_redis.kill()
    d = await limiter.acheck(tenant="acme", tier="open")
    assert d.allowed and d.degraded
    async with limiter.acquire(tenant="acme", tier="local", timeout=0) as permit:
        assert permit.decision.degraded
    with pytest.raises(tollgate.RateLimited) as e:
        async with limiter.acquire(tenant="acme", tier="closed", timeout=0):
            pass
    assert e.value.code == "E4503"


def test_without_the_fallback_redis_stopped_is_a_store_error(
    own_redis: RedisServer, prefix: str
) -> None:
    limiter = tollgate.Limiter(
        FAILURE_MODES, redis=own_redis.url, prefix=prefix, fallback=False, **PATIENT
    )
    assert limiter.check(tenant="acme", tier="open").allowed
    own_redis.kill()
    with pytest.raises(tollgate.StoreError) as e:
        limiter.check(tenant="acme", tier="open")
    assert e.value.transient


def test_a_cluster_needs_cluster_true(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="cluster=True"):
        tollgate.Limiter(redis=[redis_server.url, redis_server.url])


CLUSTER_POLICY = tollgate.Policy.from_toml(
    """
    [[rules]]
    name = "per-tenant"
    match = { tenant = "*" }
    limits = [{ kind = "requests", amount = 5, per = "hour" },
              { kind = "tokens", amount = 500, per = "hour" }]

    [[rules]]
    name = "per-model"
    match = { model = "*" }
    limits = [{ kind = "requests", amount = 1000, per = "hour" }]
    """
)


async def test_a_redis_cluster_by_its_seeds(redis_cluster: RedisCluster, prefix: str) -> None:
    """Buckets spread over the cluster's slots; each tenant gets exactly its five, sync and
    awaited, and a decision spanning two slots spends in both or neither."""
    limiter = tollgate.Limiter(
        CLUSTER_POLICY, redis=redis_cluster.urls, cluster=True, fallback=False, prefix=prefix,
        **{k: v for k, v in PATIENT.items() if k != "deadline"},
    )
    assert limiter.store == "redis"
    tenants = [f"tenant-{i}" for i in range(20)]
    for t in tenants[:10]:
        assert sum(limiter.check(tenant=t, model="m").allowed for _ in range(7)) == 5
    decisions = await asyncio.gather(
        *(limiter.acheck(tenant=t, model="m") for t in tenants[10:] for _ in range(7))
    )
    assert sum(d.allowed for d in decisions) == 50
    # 100 admitted calls on the model's bucket, whatever slot each tenant's bucket is in.
    assert limiter.usage(tenant="tenant-0", model="m")[2].used == 100
    # A call the tenant's tokens refuse spends nothing on the model's bucket either.
    d = limiter.check(tenant="fresh", model="m", tokens=600)
    assert d.outcome == "too_large"
    d = limiter.check(tenant="fresh", model="m", tokens=400)
    assert d.allowed
    assert not limiter.check(tenant="fresh", model="m", tokens=200).allowed
    assert limiter.usage(tenant="fresh", model="m")[2].used == 101
