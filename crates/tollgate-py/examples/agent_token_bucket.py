"""A token bucket per agent, configured from the environment, shared through Redis, enforced
locally while Redis is unreachable.

The scenario: agents of a fleet spend tokens (compute, API, bandwidth) from a bucket of
TOKEN_BUCKET_SIZE tokens each, refilled at TOKEN_REFILL_RATE tokens per second. With
REDIS_URL set every node shares the buckets; when Redis fails, a circuit breaker stops asking
it, and decisions go on without it, saying so (`degraded`): each node enforces the bucket
itself (or, with a rule's `failure_mode = "open"`, admits).

Run it: python crates/tollgate-py/examples/agent_token_bucket.py   (REDIS_URL=... optional)
"""

from __future__ import annotations

import asyncio
import os
import socket

import tollgate

os.environ.setdefault("TOKEN_BUCKET_SIZE", "1000")
os.environ.setdefault("TOKEN_REFILL_RATE", "10.0")


def unused_port() -> int:
    """A loopback port nothing listens on (to show Redis being unreachable)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main() -> None:
    clock = tollgate.ManualClock()
    # REDIS_URL, TOKEN_BUCKET_SIZE and TOKEN_REFILL_RATE, as the fleet sets them.
    limiter = tollgate.Limiter.from_env(clock=clock, prefix="example-agents")
    print("store:", limiter.store)
    await limiter.areset(agent="agent-7")

    async def check_and_consume(agent: str, tokens: int) -> bool:
        return (await limiter.acheck(agent=agent, tokens=tokens)).allowed

    # 100 operations of 10 tokens empty the 1,000-token bucket.
    results = [await check_and_consume("agent-7", 10) for _ in range(101)]
    assert results.count(True) == 100 and not results[-1]
    d = await limiter.acheck(agent="agent-7", tokens=10)
    print(f"agent-7 out of tokens: retry in {d.retry_after:.2f} s")
    assert d.retry_after is not None and d.retry_after <= 1.0
    # Another agent has its own bucket.
    assert await check_and_consume("agent-8", 500)
    await limiter.areset(agent="agent-8")

    if limiter.store == "memory":
        clock.advance(1.0)  # ten tokens refill every second
        assert await check_and_consume("agent-7", 10)
    await limiter.areset(agent="agent-7")

    # Redis unreachable: decisions go on, say they are degraded, and enforce each agent's
    # bucket in this process (the default failure mode, "local"). A policy can admit instead
    # while Redis is down, with `failure_mode = "open"`.
    size, rate = os.environ["TOKEN_BUCKET_SIZE"], os.environ["TOKEN_REFILL_RATE"]
    dead = f"redis://127.0.0.1:{unused_port()}"
    local = tollgate.Limiter.from_env(redis=dead, clock=clock)
    decisions = [await local.acheck(agent="agent-7", tokens=100) for _ in range(11)]
    assert all(d.degraded for d in decisions)
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    fail_open = tollgate.Limiter(
        tollgate.Policy.from_toml(
            f"""
            [[rules]]
            name = "agent-token-bucket"
            match = {{ agent = "*" }}
            failure_mode = "open"
            limits = [{{ kind = "tokens", amount = {int(float(rate))}, per = "1s", burst = {size} }}]
            """
        ),
        redis=dead,
        clock=clock,
    )
    decisions = [await fail_open.acheck(agent="agent-7", tokens=100) for _ in range(11)]
    assert all(d.allowed and d.degraded for d in decisions)
    print("redis down: the bucket enforced locally (or, fail-open, admitted); breaker", local.breaker)
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
