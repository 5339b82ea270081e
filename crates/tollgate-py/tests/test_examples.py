"""Every example runs and checks what it demonstrates: in memory, and on Redis where the
example takes REDIS_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RedisServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ALL = sorted(p.name for p in EXAMPLES.glob("*.py"))
ON_REDIS = ["agent_token_bucket.py", "gateway_rpm_tpm.py"]


def run(example: str, redis_url: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TOKEN_BUCKET_SIZE", "TOKEN_REFILL_RATE")}
    if redis_url:
        env["REDIS_URL"] = redis_url
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / example)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_there_is_an_example_for_each_seed() -> None:
    assert ALL == [
        "agent_token_bucket.py",
        "gateway_rpm_tpm.py",
        "per_user_windows.py",
        "rps_and_models.py",
        "sliding_log_tiers.py",
    ]


@pytest.mark.parametrize("example", ALL)
def test_example_runs(example: str) -> None:
    assert run(example, None).rstrip().endswith("ok")


@pytest.mark.parametrize("example", ON_REDIS)
def test_example_runs_on_redis(example: str, redis_server: RedisServer) -> None:
    out = run(example, redis_server.url)
    assert "ok" in out
