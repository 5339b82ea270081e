"""A model gateway's limiter: requests and tokens per minute for each agent and provider.

The scenario: a gateway checks every inference call against the calling agent's RPM and TPM on
the provider it goes to, before the call. Limits are shared by every gateway instance through
Redis (set REDIS_URL); if Redis fails, calls are admitted (fail-open) and say so. Operators
read an agent's usage and reset it; callers branch on stable error codes (E4404 requests per
minute, E4405 tokens per minute).

Run it: python crates/tollgate-py/examples/gateway_rpm_tpm.py  (REDIS_URL=redis://... optional)
"""

from __future__ import annotations

import os

import tollgate

# 60 requests and 100,000 tokens per minute for each agent on each provider; OpenAI's
# defaults are higher. `failure_mode = "open"`: admit while Redis is unreachable.
POLICY = tollgate.Policy.from_toml(
    """
    [[rules]]
    name = "agent-provider"
    match = { agent = "*", provider = "*" }
    failure_mode = "open"
    limits = [
      { kind = "requests", amount = 60, per = "minute" },
      { kind = "tokens", amount = 100000, per = "minute" },
    ]

    [[rules.overrides]]
    match = { provider = "openai" }
    limits = [
      { kind = "requests", amount = 500, per = "minute" },
      { kind = "tokens", amount = 90000, per = "minute" },
    ]
    """
)


def main() -> None:
    redis = os.environ.get("REDIS_URL")
    # Redis keeps time by its own clock; in memory the example holds the clock still, so that
    # nothing refills while it runs.
    clock = None if redis else tollgate.ManualClock()
    limiter = tollgate.Limiter(POLICY, redis=redis, prefix="example-gateway", clock=clock)
    agent, provider = "did:agent:abc123", "anthropic"
    limiter.reset(agent=agent, provider=provider)  # start from full buckets on every run

    # 1. Check (and spend) before each inference.
    d = limiter.check(agent=agent, provider=provider, tokens=500)
    assert d.allowed
    print(f"allowed; {d.limits[0].remaining} requests and {d.limits[1].remaining} tokens left")

    # 2. A burst: the 61st request in the minute is refused with E4404.
    refused = None
    for i in range(100):
        d = limiter.check(agent=agent, provider=provider, tokens=100)
        if not d.allowed:
            refused = (i + 2, d)
            break
    assert refused is not None
    n, d = refused
    assert n >= 61 and (d.code, d.reason) == ("E4404", "requests")
    print(f"request {n} refused: {d.code} ({d.reason}), retry in {d.retry_after:.2f} s")

    # 3. Usage, as an operator sees it.
    for u in limiter.usage(agent=agent, provider=provider):
        print(f"  {u.kind}: {u.used}/{u.capacity} used, {u.available} available")
    requests, tokens = limiter.usage(agent=agent, provider=provider)
    if clock is not None:
        assert (requests.used, tokens.used) == (60, 500 + 59 * 100)
    else:
        # On Redis, whose clock runs, what the calls took to make has refilled a little.
        assert requests.used >= 59 and 0 < tokens.used <= 500 + 59 * 100

    # 4. Reset, then a call too big for what is left of the minute's tokens: E4405.
    limiter.reset(agent=agent, provider=provider)
    assert limiter.usage(agent=agent, provider=provider)[0].used == 0
    assert limiter.check(agent=agent, provider=provider, tokens=99_000).allowed
    d = limiter.check(agent=agent, provider=provider, tokens=2_000)
    assert (d.code, d.reason) == ("E4405", "tokens")
    print(f"tokens refused: {d.code}, retry in {d.retry_after:.2f} s")

    # 5. The error-handling style: RateLimited carries the same code.
    try:
        with limiter.acquire(agent=agent, provider=provider, tokens=2_000, timeout=0):
            pass
    except tollgate.RateLimited as e:
        assert e.code == "E4405"
        print(f"RateLimited {e.code}: {e}")

    # 6. Another provider, another bucket, with its own (override) limits.
    d = limiter.check(agent=agent, provider="openai", tokens=500)
    assert d.allowed and d.limits[0].amount == 500
    limiter.reset(agent=agent, provider="openai")
    limiter.reset(agent=agent, provider=provider)
    print("ok")


if __name__ == "__main__":
    main()
