"""The decorators: Limiter.limit, RateLimiter.limited and ModelRateLimiter, on sync and async
functions."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest

import tollgate

POLICY = tollgate.Policy.from_toml(
    """
    [[rules]]
    name = "model-calls"
    match = { tenant = "*", provider = "openai" }
    limits = [
      { kind = "requests", amount = 2, per = "minute" },
      { kind = "tokens", amount = 1000, per = "minute" },
    ]
    """
)


@pytest.fixture
def limiter() -> tollgate.Limiter:
    return tollgate.Limiter(POLICY, clock=tollgate.ManualClock())


def test_limit_on_a_sync_function_raises_rate_limited(limiter: tollgate.Limiter) -> None:
    @limiter.limit(tenant="acme", provider="openai", tokens=lambda prompt, **_: len(prompt) // 4)
    def call_model(prompt: str, temperature: float = 0.0) -> str:
        """Calls the model."""
        return prompt.upper()

    assert call_model.__name__ == "call_model" and call_model.__doc__ == "Calls the model."
    assert call_model("a" * 400) == "A" * 400
    assert call_model("b" * 40, temperature=1.0) == "B" * 40
    assert [u.used for u in limiter.usage(tenant="acme", provider="openai")] == [2, 110]
    with pytest.raises(tollgate.RateLimited) as e:
        call_model("c")
    assert (e.value.reason, e.value.code) == ("requests", "E4404")
    assert e.value.retry_after == pytest.approx(30.0, abs=1e-5)


def test_limit_on_an_async_function(limiter: tollgate.Limiter) -> None:
    @limiter.limit(tenant=lambda who, **_: who, provider="openai", tokens=600)
    async def call_model(who: str) -> str:
        await asyncio.sleep(0)
        return f"hi {who}"

    assert inspect.iscoroutinefunction(call_model)

    async def main() -> None:
        assert await call_model("acme") == "hi acme"
        with pytest.raises(tollgate.RateLimited) as e:
            await call_model("acme")
        assert e.value.reason == "tokens"
        # Another tenant, another bucket.
        assert await call_model("globex") == "hi globex"

    asyncio.run(main())


def test_limit_refunds_a_call_that_raised_and_commits_the_actual_usage(
    limiter: tollgate.Limiter,
) -> None:
    @limiter.limit(tenant="acme", provider="openai", tokens=500, actual=lambda r: r["used"])
    def call_model(fail: bool) -> dict[str, int]:
        if fail:
            raise ConnectionError("provider down")
        return {"used": 120}

    with pytest.raises(ConnectionError):
        call_model(True)
    assert [u.used for u in limiter.usage(tenant="acme", provider="openai")] == [0, 0]
    call_model(False)
    assert [u.used for u in limiter.usage(tenant="acme", provider="openai")] == [1, 120]


def test_limit_can_wait_for_room(limiter: tollgate.Limiter) -> None:
    """With a timeout, a call waits for a slot that another call gives back."""
    slots = tollgate.Limiter(
        tollgate.Policy.from_toml(
            """
            [[rules]]
            name = "one-at-a-time"
            match = { tenant = "*" }
            limits = [{ kind = "concurrency", amount = 1 }]
            """
        )
    )
    started = threading.Event()
    release = threading.Event()

    @slots.limit(tenant="acme", timeout=60)
    def work(hold: bool) -> int:
        if hold:
            started.set()
            release.wait(30)
        return 1

    t = threading.Thread(target=work, args=(True,))
    t.start()
    assert started.wait(10)
    result: list[int] = []
    w = threading.Thread(target=lambda: result.append(work(False)))
    w.start()
    release.set()
    t.join(30)
    w.join(30)
    assert result == [1]


def test_rate_limiter_limited_sync_with_a_manual_clock() -> None:
    clock = tollgate.ManualClock(start=1000.0)
    rps = tollgate.RateLimiter(per_second=10, clock=clock)
    calls: list[float] = []

    @rps.limited
    def send(i: int) -> int:
        calls.append(clock.now)
        return i

    @rps.limited
    def other() -> str:
        return "shared"

    assert [send(i) for i in range(15)] == list(range(15))
    # Ten at once (the burst), then one every tenth of a second: the clock advanced instead
    # of sleeping.
    assert calls[:10] == [1000.0] * 10
    assert calls[10:] == pytest.approx([1000.1, 1000.2, 1000.3, 1000.4, 1000.5])
    assert other() == "shared"
    assert clock.now == pytest.approx(1000.6)


def test_rate_limiter_try_acquire_and_fractional_rates() -> None:
    clock = tollgate.ManualClock(start=0.0)
    rps = tollgate.RateLimiter(per_second=0.5, clock=clock)  # one call per 2 s
    assert rps.try_acquire() and not rps.try_acquire()
    clock.advance(2.0)
    assert rps.try_acquire()
    per_minute = tollgate.RateLimiter(per_minute=120, burst=1, clock=clock)
    assert per_minute.try_acquire() and not per_minute.try_acquire()
    clock.advance(0.5)
    assert per_minute.try_acquire()
    with pytest.raises(ValueError, match="per_second"):
        tollgate.RateLimiter(per_second=0)
    with pytest.raises(ValueError):
        tollgate.RateLimiter()


def test_rate_limiter_limited_async_serves_callers_in_turn() -> None:
    rps = tollgate.RateLimiter(per_second=200, burst=1)
    order: list[int] = []

    @rps.limited
    async def fetch(i: int) -> int:
        order.append(i)
        return i

    async def main() -> list[int]:
        return await asyncio.gather(*(fetch(i) for i in range(5)))

    assert asyncio.run(main()) == list(range(5))
    assert order == list(range(5))


def test_a_cancelled_rate_limiter_wait_gives_its_slot_back() -> None:
    """Four waiters take the next four slots; cancelling them gives their slots back before
    their tasks see the cancellation, so the next caller is served as if they had never
    come."""
    clock = tollgate.ManualClock(start=0.0)
    rps = tollgate.RateLimiter(per_minute=60, burst=1, clock=clock)  # one call per second

    async def main() -> None:
        await rps.aacquire()  # the burst
        async def wait() -> None:
            await rps.aacquire()

        waiters = [asyncio.create_task(wait()) for _ in range(4)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        for w in waiters:
            w.cancel()
        for w in waiters:
            with pytest.raises(asyncio.CancelledError):
                await w
        # Had the four kept their slots, the next free one would be 5 s away; it is 1 s away.
        clock.advance(1.0)
        assert rps.try_acquire()

    asyncio.run(main())


# The per-model limiter.


def test_model_rate_limiter_limits_requests_tokens_and_parallel_calls() -> None:
    models = tollgate.ModelRateLimiter(
        {"gpt-4o": dict(rpm=500, tpm=30_000, max_parallel=2), "claude": {"rpm": 1}},
        clock=tollgate.ManualClock(),
    )
    with models.acquire("gpt-4o", estimated_tokens=2000) as a:
        a.actual_tokens = 1700
        with models.acquire("gpt-4o", estimated_tokens=1000):
            with pytest.raises(tollgate.RateLimited) as e:
                with models.acquire("gpt-4o", estimated_tokens=10, timeout=0):
                    pass
            assert e.value.reason == "concurrency"
    stats = models.stats()
    assert stats["gpt-4o"]["tpm"] == {"used": 2700, "capacity": 30_000, "available": 27_300}
    assert stats["gpt-4o"]["rpm"]["used"] == 2
    assert stats["gpt-4o"]["max_parallel"]["used"] == 0
    assert stats["claude"]["rpm"] == {"used": 0, "capacity": 1, "available": 1}
    assert models.check("claude").allowed and not models.check("claude").allowed
    with pytest.raises(KeyError, match="gpt-5"):
        models.acquire("gpt-5")
    models.reset("claude")
    assert models.check("claude").allowed


def test_model_rate_limiter_default_limits_and_async_context() -> None:
    models = tollgate.ModelRateLimiter(
        {"gpt-4o": {"tpm": 1000}}, default={"rpm": 1, "tpm": 100}, clock=tollgate.ManualClock()
    )

    async def main() -> None:
        async with models.acquire("gpt-4o", estimated_tokens=900) as ctx:
            ctx.actual_tokens = 800
        async with models.acquire("mistral", estimated_tokens=50):
            pass
        with pytest.raises(tollgate.RateLimited):
            async with models.acquire("mistral", estimated_tokens=10, timeout=0):
                pass
        # A model without its own limits gets the default ones, in buckets of its own.
        async with models.acquire("llama", estimated_tokens=100):
            pass

    asyncio.run(main())
    assert [u.used for u in models.usage("gpt-4o")] == [800]
    with pytest.raises(tollgate.PolicyError) as e:
        tollgate.ModelRateLimiter({"gpt-4o": {"rpx": 5}})
    assert e.value.field == "models[\"gpt-4o\"][\"rpx\"]"


def test_model_rate_limiter_decorator() -> None:
    models = tollgate.ModelRateLimiter({"gpt-4o": {"rpm": 1}}, clock=tollgate.ManualClock())

    @models.limit("gpt-4o")
    async def ask() -> str:
        return "ok"

    async def main() -> None:
        assert await ask() == "ok"
        with pytest.raises(tollgate.RateLimited):
            await ask()

    asyncio.run(main())
