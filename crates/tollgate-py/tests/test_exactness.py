"""Exactness: many threads, and many processes on one Redis, against a limit of 1,000 admit
exactly 1,000 calls."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading

import tollgate
from conftest import PATIENT, RedisServer

# 1,000 requests per 30 days: nothing refills while the test runs.
LIMIT = """
[[rules]]
name = "thousand"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 1000, per = "30d" }]
"""


def test_eight_threads_of_500_calls_admit_exactly_1000() -> None:
    limiter = tollgate.Limiter(tollgate.Policy.from_toml(LIMIT))
    start = threading.Barrier(8)
    admitted = [0] * 8

    def worker(i: int) -> None:
        start.wait()
        admitted[i] = sum(limiter.check(tenant="acme").allowed for _ in range(500))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 1000
    s = limiter.stats()
    assert (s.allowed, s.denied) == (1000, 3000)


def test_eight_threads_acquiring_and_committing_admit_exactly_1000() -> None:
    limiter = tollgate.Limiter(tollgate.Policy.from_toml(LIMIT))
    start = threading.Barrier(8)
    admitted = [0] * 8

    def worker(i: int) -> None:
        start.wait()
        for _ in range(500):
            try:
                with limiter.acquire(tenant="acme", timeout=0):
                    admitted[i] += 1
            except tollgate.RateLimited:
                pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 1000


WORKER = """
import asyncio, json, sys, threading
import tollgate

url, prefix, policy = sys.argv[1], sys.argv[2], sys.argv[3]
# Generous timeouts: four processes share a busy host's cores with Redis.
limiter = tollgate.Limiter(tollgate.Policy.from_toml(policy), redis=url, prefix=prefix,
                           fallback=False, connect_timeout=30, timeout=30)
print("ready", flush=True)
sys.stdin.readline()  # every process starts together

# 250 calls from two threads, synchronously, and 250 awaited together.
counts = [0, 0]
def sync_calls(i):
    counts[i] = sum(limiter.check(tenant="acme").allowed for _ in range(125))
threads = [threading.Thread(target=sync_calls, args=(i,)) for i in range(2)]
for t in threads:
    t.start()

async def async_calls():
    ds = await asyncio.gather(*(limiter.acheck(tenant="acme") for _ in range(250)))
    return sum(d.allowed for d in ds)
awaited = asyncio.run(async_calls())
for t in threads:
    t.join()
print(json.dumps({"admitted": sum(counts) + awaited}), flush=True)
"""


def test_four_processes_on_one_redis_admit_exactly_1000(
    redis_server: RedisServer, prefix: str
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_server.url, prefix, LIMIT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    admitted = 0
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        admitted += json.loads(out.strip().splitlines()[-1])["admitted"]
    assert admitted == 1000


def _forked_child(url: str, prefix: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = tollgate.Limiter(
        tollgate.Policy.from_toml(LIMIT), redis=url, prefix=prefix, **PATIENT
    )
    d = limiter.check(tenant="forked")
    out.put((d.allowed, d.degraded, os.getpid()))


def test_a_forked_child_runs_its_own_engine(redis_server: RedisServer, prefix: str) -> None:
    """The parent's runtime threads do not survive fork: the child makes its own."""
    parent = tollgate.Limiter(
        tollgate.Policy.from_toml(LIMIT), redis=redis_server.url, prefix=prefix, **PATIENT
    )
    assert parent.check(tenant="forked").allowed
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_forked_child, args=(redis_server.url, prefix, out))
    child.start()
    allowed, degraded, pid = out.get(timeout=60)
    child.join(60)
    assert (allowed, degraded) == (True, False) and pid != os.getpid()
    assert [u.used for u in parent.usage(tenant="forked")] == [2]
