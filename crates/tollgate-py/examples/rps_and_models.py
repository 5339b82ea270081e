"""Requests-per-second limiters shared by sync and async functions, and per-model limits on
requests, tokens and parallel calls for LLM APIs, with a context manager and statistics.

The scenario: a client library rate-limits the functions that call an API (N per second,
bursts allowed, one limiter shared by several functions), and an orchestrator calls several
models, each with its own RPM, TPM and cap on calls in flight, reserving the estimated
tokens before a call and recording the actual usage after it.

Run it: python crates/tollgate-py/examples/rps_and_models.py
"""

from __future__ import annotations

import asyncio
import time

import tollgate


def requests_per_second() -> None:
    # A manual clock: the limiter advances it instead of sleeping, so this runs at once.
    clock = tollgate.ManualClock(start=0.0)
    shared = tollgate.RateLimiter(per_second=10, clock=clock)

    @shared.limited
    def send_email(to: str) -> str:
        return f"sent to {to}"

    @shared.limited
    def fetch_user(user_id: int) -> str:
        return f"user {user_id}"

    times = []
    for i in range(15):
        (send_email if i % 2 else fetch_user)(i)
        times.append(round(clock.now, 3))
    # Ten at once (the burst), then one every 0.1 s, shared by both functions.
    assert times == [0.0] * 10 + [0.1, 0.2, 0.3, 0.4, 0.5]
    print("15 calls by two functions sharing 10/s:", times[-1], "s")


async def async_requests_per_second() -> None:
    limiter = tollgate.RateLimiter(per_second=50, burst=5)

    @limiter.limited
    async def fetch(i: int) -> int:
        return i

    start = time.monotonic()
    results = await asyncio.gather(*(fetch(i) for i in range(15)))
    elapsed = time.monotonic() - start
    assert results == list(range(15))
    # Five at once, then one every 20 ms: about 0.2 s for the other ten.
    assert elapsed >= 0.18
    print(f"15 async calls at 50/s (burst 5): {elapsed:.2f} s")


async def models() -> None:
    limiter = tollgate.ModelRateLimiter(
        {
            "gpt-4": {"rpm": 500, "tpm": 40_000, "max_parallel": 10},
            "gpt-3.5-turbo": {"rpm": 3500, "tpm": 90_000, "max_parallel": 20},
            "claude-3": {"rpm": 1000, "tpm": 80_000, "max_parallel": 5},
        },
        default={"rpm": 10, "tpm": 200_000, "max_parallel": 5},
        # A clock held still, so that the statistics below are exact (nothing refills).
        clock=tollgate.ManualClock(),
    )
    in_flight = 0
    most = 0

    async def generate(model: str, prompt: str) -> str:
        nonlocal in_flight, most
        estimated = int(len(prompt.split()) * 1.3) + 200
        async with limiter.acquire(model, estimated_tokens=estimated, timeout=30) as ctx:
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.01)  # the model call
            in_flight -= 1
            ctx.actual_tokens = estimated - 50  # the usage the response reports
        return f"{model}: ok"

    prompts = [("claude-3", "Summarize this article ...")] * 12 + [("gpt-4", "Explain GCRA")] * 3
    results = await asyncio.gather(*(generate(m, p) for m, p in prompts))
    assert len(results) == 15
    assert most <= 5 + 3  # claude-3 never had more than 5 calls in flight
    stats = limiter.stats()
    for model, s in stats.items():
        print(f"  {model}: {s}")
    assert stats["claude-3"]["rpm"]["used"] == 12
    assert stats["claude-3"]["max_parallel"]["used"] == 0
    assert stats["gpt-4"]["tpm"]["used"] == 3 * (int(2 * 1.3) + 200 - 50)

    # Unknown models get the default limits, in buckets of their own.
    async with limiter.acquire("mistral-large", estimated_tokens=100):
        pass

    # An error inside the block refunds the reservation.
    before = limiter.stats()["gpt-4"]["tpm"]["used"]
    try:
        async with limiter.acquire("gpt-4", estimated_tokens=5000):
            raise TimeoutError("the model timed out")
    except TimeoutError:
        pass
    assert limiter.stats()["gpt-4"]["tpm"]["used"] == before


def main() -> None:
    requests_per_second()
    asyncio.run(async_requests_per_second())
    asyncio.run(models())
    print("ok")


if __name__ == "__main__":
    main()
