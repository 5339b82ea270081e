"""acquire and permits: the sync and async context managers on success, on exception and on
cancellation; waiting; settling by hand."""

from __future__ import annotations

import asyncio
import threading

import pytest

import tollgate

POLICY = tollgate.Policy.from_toml(
    """
    [[rules]]
    name = "calls"
    match = { tenant = "*" }
    limits = [
      { kind = "tokens", amount = 10000, per = "minute" },
      { kind = "concurrency", amount = 1 },
    ]
    """
)

ACME = dict(tenant="acme")


@pytest.fixture
def clock() -> tollgate.ManualClock:
    return tollgate.ManualClock()


@pytest.fixture
def limiter(clock: tollgate.ManualClock) -> tollgate.Limiter:
    return tollgate.Limiter(POLICY, clock=clock)


def in_use(limiter: tollgate.Limiter) -> tuple[int, int]:
    """(tokens used, slots held)."""
    tokens, slots = limiter.usage(**ACME)
    return tokens.used, slots.used


# Sync.


def test_leaving_normally_commits_the_estimate(limiter: tollgate.Limiter) -> None:
    with limiter.acquire(**ACME, tokens=800) as permit:
        assert isinstance(permit, tollgate.Permit) and permit.decision.allowed
        assert permit.tokens == 800 and not permit.settled
        assert in_use(limiter) == (800, 1)
    assert permit.settled
    assert in_use(limiter) == (800, 0)


def test_commit_settles_the_actual_usage_once(limiter: tollgate.Limiter) -> None:
    with limiter.acquire(**ACME, tokens=8000) as permit:
        permit.commit(tokens=6250)
        assert in_use(limiter) == (6250, 0)
        permit.commit(tokens=1)  # settled already: nothing changes
        permit.cancel()
    assert in_use(limiter) == (6250, 0)


def test_a_commit_above_the_estimate_charges_the_difference(limiter: tollgate.Limiter) -> None:
    with limiter.acquire(**ACME, tokens=100) as permit:
        permit.commit(tokens=12_000)  # a charge never fails: the bucket goes into debt
    used, _ = in_use(limiter)
    assert used == 12_000
    assert not limiter.check(**ACME, tokens=1).allowed


def test_actual_tokens_set_during_the_block_is_what_is_committed(
    limiter: tollgate.Limiter,
) -> None:
    with limiter.acquire(**ACME, tokens=2000) as permit:
        permit.actual_tokens = 1700
    assert in_use(limiter) == (1700, 0)


def test_an_exception_inside_refunds_everything(limiter: tollgate.Limiter) -> None:
    with pytest.raises(RuntimeError, match="model failed"):
        with limiter.acquire(**ACME, tokens=5000):
            assert in_use(limiter) == (5000, 1)
            raise RuntimeError("model failed")
    assert in_use(limiter) == (0, 0)


def test_a_denied_acquire_raises_rate_limited_and_spends_nothing(
    limiter: tollgate.Limiter,
) -> None:
    with limiter.acquire(**ACME, tokens=9000):
        with pytest.raises(tollgate.RateLimited) as e:
            with limiter.acquire(**ACME, tokens=100, timeout=0):
                pass
        assert (e.value.reason, e.value.code) == ("concurrency", "E4406")
        assert e.value.decision.outcome == "denied"
    with pytest.raises(tollgate.RateLimited) as e:
        with limiter.acquire(**ACME, tokens=2000, timeout=0):
            pass
    assert (e.value.reason, e.value.code) == ("tokens", "E4405")
    # 1,000 tokens are free; 1,000 more take 6 s at 10,000 per minute.
    assert e.value.retry_after == pytest.approx(6.0, abs=1e-5)
    assert e.value.headers()["retry-after"] == "6"
    assert in_use(limiter) == (9000, 0)


def test_a_cost_that_never_fits_is_refused_at_once(limiter: tollgate.Limiter) -> None:
    with pytest.raises(tollgate.RateLimited) as e:
        with limiter.acquire(**ACME, tokens=50_000, timeout=None):
            pass
    assert (e.value.outcome, e.value.code, e.value.retry_after) == ("too_large", "E4413", None)


def test_a_blocked_waiter_is_admitted_when_the_slot_is_released(
    limiter: tollgate.Limiter,
) -> None:
    """The waiting thread releases the GIL: the main thread runs (and releases the slot)
    while it waits, and the release wakes it without a timer."""
    holder = limiter.acquire(**ACME, tokens=10)
    permit = holder.__enter__()
    waiting = threading.Event()
    got: list[tollgate.Permit] = []

    def waiter() -> None:
        waiting.set()
        with limiter.acquire(**ACME, tokens=10, timeout=60) as p:
            got.append(p)

    t = threading.Thread(target=waiter)
    t.start()
    assert waiting.wait(10)
    assert not got
    permit.cancel()
    t.join(30)
    assert not t.is_alive() and len(got) == 1
    assert in_use(limiter) == (10, 0)


def test_a_wait_that_times_out_raises_and_leaves_no_trace(limiter: tollgate.Limiter) -> None:
    with limiter.acquire(**ACME, tokens=10):
        with pytest.raises(tollgate.RateLimited):
            with limiter.acquire(**ACME, tokens=10, timeout=0.05):
                pass
    assert in_use(limiter) == (10, 0)


def test_permits_settled_by_hand_and_dropped(limiter: tollgate.Limiter) -> None:
    acquiring = limiter.acquire(**ACME, tokens=300)
    permit = acquiring.__enter__()
    permit.cancel()
    assert permit.settled and in_use(limiter) == (0, 0)
    # A permit dropped unsettled releases its slot and keeps the estimate spent.
    permit = limiter.acquire(**ACME, tokens=300).__enter__()
    del permit
    assert in_use(limiter) == (300, 0)


# Async.


async def test_async_with_commits_the_estimate_or_actual_tokens(limiter: tollgate.Limiter) -> None:
    async with limiter.acquire(**ACME, tokens=800) as permit:
        assert in_use(limiter) == (800, 1)
        permit.actual_tokens = 500
    assert in_use(limiter) == (500, 0)
    async with limiter.acquire(**ACME, tokens=1000) as permit:
        await permit.acommit(tokens=100)
        await permit.acancel()  # settled already
    assert in_use(limiter) == (600, 0)


async def test_async_with_refunds_on_exception(limiter: tollgate.Limiter) -> None:
    with pytest.raises(ValueError):
        async with limiter.acquire(**ACME, tokens=4000):
            raise ValueError("bad response")
    assert in_use(limiter) == (0, 0)


async def test_a_task_cancelled_inside_the_block_refunds_and_releases(
    limiter: tollgate.Limiter,
) -> None:
    entered = asyncio.Event()

    async def call() -> None:
        async with limiter.acquire(**ACME, tokens=3000):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await entered.wait()
    assert in_use(limiter) == (3000, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert in_use(limiter) == (0, 0)


async def test_a_task_cancelled_while_waiting_gives_up_its_place(
    limiter: tollgate.Limiter,
) -> None:
    holder = await limiter.acquire(**ACME, tokens=10)
    waiter = asyncio.create_task(_enter(limiter, tokens=20))
    # Let the waiter reach its wait (it cannot be admitted: the slot is held).
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await holder.acancel()
    # The cancelled waiter holds nothing and spent nothing: the slot is free.
    assert in_use(limiter) == (0, 0)
    async with limiter.acquire(**ACME, tokens=10, timeout=0):
        pass


async def _enter(limiter: tollgate.Limiter, tokens: int) -> None:
    async with limiter.acquire(**ACME, tokens=tokens, timeout=None):
        pass


async def test_an_async_waiter_is_woken_by_a_release(limiter: tollgate.Limiter) -> None:
    holder = await limiter.acquire(**ACME, tokens=10)
    waiter = asyncio.create_task(_enter(limiter, tokens=20))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    await holder.acommit()
    await asyncio.wait_for(waiter, timeout=30)
    assert in_use(limiter) == (30, 0)


async def test_async_denial_raises_rate_limited(limiter: tollgate.Limiter) -> None:
    async with limiter.acquire(**ACME, tokens=10):
        with pytest.raises(tollgate.RateLimited) as e:
            async with limiter.acquire(**ACME, tokens=10, timeout=0.05):
                pass
    assert e.value.code == "E4406"
    assert in_use(limiter) == (10, 0)


async def test_many_tasks_share_one_slot_in_turn(limiter: tollgate.Limiter) -> None:
    inside = 0
    most = 0

    async def call(i: int) -> int:
        nonlocal inside, most
        async with limiter.acquire(**ACME, tokens=1, timeout=60):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
            inside -= 1
        return i

    done = await asyncio.gather(*(call(i) for i in range(50)))
    assert sorted(done) == list(range(50))
    assert most == 1
    assert in_use(limiter) == (50, 0)
