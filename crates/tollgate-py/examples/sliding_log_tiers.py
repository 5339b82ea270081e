"""An inference API's limiter: an exact rolling window per user and model, tiers with the
reason of each refusal, counts of decisions, and 429 responses with headers, in FastAPI.

The scenario: an API serving models limits each user on each model to 100 requests per rolling
hour, exactly (a sliding window log: one timestamp per admitted call), and each tier of
users to a requests-per-minute rate on top. Denials say which limit refused and when to come
back; operators read allowed/denied counts.

Run it: python crates/tollgate-py/examples/sliding_log_tiers.py   (needs fastapi and httpx)
"""

from __future__ import annotations

import warnings

from fastapi import FastAPI

with warnings.catch_warnings():
    # Starlette's TestClient asks for httpx2; httpx still works.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

import tollgate
from tollgate.asgi import RateLimitMiddleware

POLICY = tollgate.Policy.from_toml(
    """
    # Exact: 100 requests per rolling hour for each user on each model.
    [[rules]]
    name = "user-model-hourly"
    match = { user = "*", model = "*" }
    limits = [{ kind = "requests", amount = 100, per = "hour", algorithm = "sliding_log" }]

    # Tiers: a per-minute rate for each user, by tier (unknown tiers get the free one).
    [[rules]]
    name = "tier-rate"
    match = { user = "*" }
    limits = [{ kind = "requests", amount = 5, per = "minute" }]
    [rules.tiers.pro]
    limits = [{ kind = "requests", amount = 200, per = "minute" }]
    """
)


def subject(scope: dict) -> dict[str, str]:
    """The user, their tier and the model, from the request (here: headers and the path)."""
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    return {
        "user": headers.get("x-user", "anonymous"),
        "tier": headers.get("x-tier", "free"),
        "model": scope["path"].rsplit("/", 1)[-1],
    }


def build(limiter: tollgate.Limiter) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/infer/{model}")
    async def infer(model: str) -> dict[str, str]:
        return {"model": model, "output": "..."}

    app.add_middleware(RateLimitMiddleware, limiter=limiter, subject=subject)
    return app


def main() -> None:
    clock = tollgate.ManualClock(start=1_750_000_000.0)
    limiter = tollgate.Limiter(POLICY, clock=clock)
    with TestClient(build(limiter)) as http:
        # A free user: the tier's 5 per minute refuse first.
        free = {"x-user": "alice", "x-tier": "free"}
        codes = [http.post("/v1/infer/gpt-4", headers=free).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        r = http.post("/v1/infer/gpt-4", headers=free)
        print("free user:", r.status_code, r.json()["reason"], "retry-after", r.headers["retry-after"])
        assert r.headers["retry-after"] == "12"  # 5 per minute: one every 12 s

        # A pro user: the exact hourly window on one model refuses at 101, whatever the rate.
        pro = {"x-user": "bob", "x-tier": "pro"}
        codes = [http.post("/v1/infer/gpt-4", headers=pro).status_code for _ in range(101)]
        assert codes.count(200) == 100 and codes[-1] == 429
        r = http.post("/v1/infer/gpt-4", headers=pro)
        print("pro user on gpt-4:", r.status_code, r.json()["message"])
        # Another model has its own window.
        assert http.post("/v1/infer/llama-3", headers=pro).status_code == 200

        # A sliding log is exact: the window frees one call an hour after each was made.
        clock.advance(3599.0)
        assert http.post("/v1/infer/gpt-4", headers=pro).status_code == 429
        clock.advance(1.0)
        assert http.post("/v1/infer/gpt-4", headers=pro).status_code == 200

    stats = limiter.stats()
    print(f"decisions: {stats.allowed} allowed, {stats.denied} denied ({stats.deny_rate:.1%})")
    assert stats.allowed == 5 + 100 + 1 + 1
    print("ok")


if __name__ == "__main__":
    main()
