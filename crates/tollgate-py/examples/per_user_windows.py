"""Per-provider limits for each user over a minute, an hour and a day, with bursts; custom
limits for one user; waiting instead of failing; status, reset and service tiers.

The scenario: a router sends each user's calls to several providers (GLM, DeepSeek, Claude,
OpenAI, DeepInfra), each with default limits per user, and tenants on free, pro and
enterprise tiers. The defaults are the repository's policy file
`examples/policies/providers.toml`, the same file the tollgate service reads.

Run it: python crates/tollgate-py/examples/per_user_windows.py
"""

from __future__ import annotations

import time
from pathlib import Path

import tollgate

ROOT = Path(__file__).resolve().parents[3]
PROVIDERS = ROOT / "examples" / "policies" / "providers.toml"


def main() -> None:
    clock = tollgate.ManualClock(start=1_750_000_000.0)
    limiter = tollgate.Limiter(str(PROVIDERS), clock=clock)
    print("rules:", ", ".join(limiter.policy.rules))

    # GLM: 60 per minute in bursts of 20, for each user.
    user = dict(provider="glm", user="user_123")
    results = [limiter.check(**user).allowed for _ in range(21)]
    assert results == [True] * 20 + [False]
    d = limiter.check(**user)
    print(f"glm burst spent: {d.reason}, next in {d.retry_after:.2f} s")
    assert d.retry_after == 1.0  # 60 per minute: one more each second

    # Status: every window of the user's limits.
    for u in limiter.usage(**user):
        print(f"  {u.per:>6}: {u.used}/{u.capacity} (available {u.available})")
    assert [u.used for u in limiter.usage(**user)] == [20, 20, 20]

    # The clock moves on: a second later one more request fits.
    clock.advance(1.0)
    assert limiter.check(**user).allowed

    # Reset the user on GLM (other providers keep their state).
    limiter.check(provider="claude", user="user_123")
    limiter.reset(**user)
    assert limiter.usage(**user)[0].used == 0
    assert limiter.usage(provider="claude", user="user_123")[0].used == 1

    # Custom limits for one user: a policy that adds an override to a provider's rule.
    # (Here the override is added to the file's OpenAI rule, which the DeepInfra rule follows.)
    marker = "# --- DeepInfra"
    custom = tollgate.Policy.from_toml(
        PROVIDERS.read_text().replace(
            marker,
            "[[rules.overrides]]\n"
            'match = { user = "premium_user" }\n'
            'limits = [{ kind = "requests", amount = 600, per = "minute", burst = 200 }]\n\n'
            + marker,
            1,
        )
    )
    premium = tollgate.Limiter(custom, clock=clock)
    assert sum(premium.check(provider="openai", user="premium_user").allowed for _ in range(250)) == 200
    assert sum(premium.check(provider="openai", user="someone").allowed for _ in range(250)) == 20

    # Tiers: the tenant's tier picks its limits (bursts of 5 on free, 50 on pro).
    for tier, burst in (("free", 5), ("pro", 50), ("enterprise", 500)):
        n = sum(limiter.check(tenant=f"t-{tier}", tier=tier).allowed for _ in range(600))
        print(f"  tier {tier}: {n} requests at once")
        assert n == burst

    # Waiting instead of failing: acquire sleeps until the call fits (no polling), up to a
    # deadline. A real clock here: 2 per second in bursts of 1, so the second call waits 0.5 s.
    waits = tollgate.Limiter(
        tollgate.Policy.from_toml(
            """
            [[rules]]
            name = "slow-provider"
            match = { user = "*" }
            limits = [{ kind = "requests", amount = 2, per = "second", burst = 1 }]
            """
        )
    )
    start = time.monotonic()
    for _ in range(2):
        with waits.acquire(user="user_123", timeout=5.0):
            pass
    waited = time.monotonic() - start
    print(f"two calls, the second waited: {waited:.2f} s")
    assert waited >= 0.45
    print("ok")


if __name__ == "__main__":
    main()
