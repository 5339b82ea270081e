"""A FastAPI app behind RateLimitMiddleware, for the tests (served by uvicorn in a subprocess,
or by FastAPI's TestClient). TOLLGATE_TEST_REDIS selects a Redis store; TOLLGATE_TEST_PREFIX
its key prefix."""

from __future__ import annotations

import os

from fastapi import FastAPI

import tollgate
from tollgate.asgi import RateLimitMiddleware

POLICY = tollgate.Policy.from_toml(
    """
    [[rules]]
    name = "api"
    match = { tenant = "*" }
    limits = [
      { kind = "requests", amount = 3, per = "hour" },
      { kind = "tokens", amount = 1000, per = "hour" },
    ]
    """
)


def tenant_of(scope: dict) -> dict[str, str] | None:
    headers = dict(scope["headers"])
    tenant = headers.get(b"x-tenant")
    if tenant is None:
        return None  # anonymous requests are not limited here
    return {"tenant": tenant.decode(), "route": scope["path"]}


def tokens_of(scope: dict) -> int:
    return int(dict(scope["headers"]).get(b"x-tokens", b"0"))


def make_app(limiter: tollgate.Limiter) -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(
        RateLimitMiddleware,
        limiter=limiter,
        subject=tenant_of,
        tokens=tokens_of,
        exempt=["/healthz"],
    )
    return app


def limiter_from_env() -> tollgate.Limiter:
    url = os.environ.get("TOLLGATE_TEST_REDIS")
    if url:
        return tollgate.Limiter(
            POLICY,
            redis=url,
            prefix=os.environ.get("TOLLGATE_TEST_PREFIX"),
            connect_timeout=30.0,
            timeout=30.0,
            deadline=30.0,
        )
    return tollgate.Limiter(POLICY)


app = make_app(limiter_from_env())
