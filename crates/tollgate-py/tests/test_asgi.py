"""The ASGI middleware: in a FastAPI app through its TestClient, and behind a real uvicorn
server over a socket."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import tollgate
from asgi_app import POLICY, make_app
from conftest import RedisServer, free_port

HERE = Path(__file__).resolve().parent


@pytest.fixture
def client() -> Iterator[TestClient]:
    limiter = tollgate.Limiter(POLICY, clock=tollgate.ManualClock())
    with TestClient(make_app(limiter)) as c:
        yield c


def test_admitted_requests_carry_the_rate_limit_headers(client: TestClient) -> None:
    r = client.get("/hello", headers={"x-tenant": "acme", "x-tokens": "100"})
    assert r.status_code == 200 and r.json() == {"hello": "world"}
    assert r.headers["x-ratelimit-limit-requests"] == "3"
    assert r.headers["x-ratelimit-remaining-requests"] == "2"
    assert r.headers["x-ratelimit-remaining-tokens"] == "900"
    assert "ratelimit-policy" in r.headers


def test_a_denied_request_is_429_with_retry_after_and_the_decision(client: TestClient) -> None:
    for _ in range(3):
        assert client.get("/hello", headers={"x-tenant": "acme"}).status_code == 200
    r = client.get("/hello", headers={"x-tenant": "acme"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1200"  # 3 per hour: 20 minutes
    assert r.headers["retry-after-ms"] == "1200000"
    body = r.json()
    assert (body["error"], body["outcome"], body["reason"], body["error_code"]) == (
        "rate_limited",
        "denied",
        "requests",
        "E4404",
    )
    assert body["retry_after_ms"] == 1_200_000 and body["degraded"] is False
    # Other tenants are not affected; anonymous and exempt requests are not limited.
    assert client.get("/hello", headers={"x-tenant": "globex"}).status_code == 200
    for _ in range(5):
        assert client.get("/hello").status_code == 200
        assert client.get("/healthz", headers={"x-tenant": "acme"}).status_code == 200


def test_a_request_that_can_never_fit_is_413_and_says_not_to_retry(client: TestClient) -> None:
    r = client.get("/hello", headers={"x-tenant": "acme", "x-tokens": "5000"})
    assert r.status_code == 413
    assert r.headers["x-should-retry"] == "false"
    assert "retry-after" not in r.headers
    assert r.json()["outcome"] == "too_large"


def test_an_async_subject_callable_and_no_headers() -> None:
    from fastapi import FastAPI

    from tollgate.asgi import RateLimitMiddleware

    async def subject(scope: dict) -> dict[str, str]:
        return {"tenant": "everyone"}

    app = FastAPI()

    @app.get("/")
    async def root() -> str:
        return "ok"

    app.add_middleware(
        RateLimitMiddleware,
        limiter=tollgate.Limiter(POLICY, clock=tollgate.ManualClock()),
        subject=subject,
        headers=False,
    )
    with TestClient(app) as c:
        r = c.get("/")
        assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers
        assert [c.get("/").status_code for _ in range(3)] == [200, 200, 429]


@pytest.fixture(params=["memory", "redis"])
def server(request: pytest.FixtureRequest, redis_server: RedisServer, prefix: str) -> Iterator[str]:
    """uvicorn serving asgi_app in a subprocess, on a free port."""
    port = free_port()
    env = dict(os.environ)
    env.pop("TOLLGATE_TEST_REDIS", None)
    if request.param == "redis":
        env["TOLLGATE_TEST_REDIS"] = redis_server.url
        env["TOLLGATE_TEST_PREFIX"] = prefix
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "asgi_app:app",
            "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=1.0)
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("uvicorn did not start")
            time.sleep(0.05)
    yield base
    proc.terminate()
    proc.wait(30)


def test_behind_uvicorn_over_a_socket(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as http:
        codes = [http.get("/hello", headers={"x-tenant": "acme"}).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        denied = http.get("/hello", headers={"x-tenant": "acme"})
        assert int(denied.headers["retry-after"]) > 1000
        assert denied.json()["error_code"] == "E4404"
        assert http.get("/hello", headers={"x-tenant": "other", "x-tokens": "2000"}).status_code == 413


async def test_concurrent_requests_behind_uvicorn_admit_exactly_the_limit(server: str) -> None:
    import asyncio

    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        rs = await asyncio.gather(
            *(http.get("/hello", headers={"x-tenant": "crowd"}) for _ in range(20))
        )
    codes = sorted(r.status_code for r in rs)
    assert codes == [200] * 3 + [429] * 17
