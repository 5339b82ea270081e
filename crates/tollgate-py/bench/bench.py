"""tollgate's Python package against the Python rate limiters it replaces, side by side in one
run on one machine.

    python crates/tollgate-py/bench/bench.py [--quick] [--only inproc,redis,threads]

- inproc: one limit, 10,000 keys, one thread: ``Limiter.check`` against ``limits`` (moving
  window, memory storage), ``pyrate-limiter`` (token bucket per key, in memory) and
  ``throttled-py`` (token bucket, memory store); and the same decisions made in a Rust loop,
  which gives what the crossing from Python costs per call.
- redis: 50 asyncio callers on one private redis-server (started here, on a free port):
  ``await Limiter.acheck`` against ``limits``' async Redis storage (moving and fixed window)
  and ``throttled-py``'s async Redis store (token bucket).
- threads: ``Limiter.check`` from 4 threads against 1 thread, on the memory store.

Every contender runs the same number of decisions, in interleaved rounds; the tables give the
median round. No contender is denied during a run (the limits are far above the load), so
every one does the same work: decide and spend.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import version

import tollgate
from tollgate import _tollgate

KEYS = [f"user-{i}" for i in range(10_000)]

# One limit per key, far above what a run spends: 1,000,000 requests per hour.
POLICY = tollgate.Policy.from_toml(
    """
    [[rules]]
    name = "per-key"
    match = { tenant = "*" }
    limits = [{ kind = "requests", amount = 1000000, per = "hour" }]
    """
)
LIMIT_PER_HOUR = 1_000_000


def median_rate(rounds: list[float], n: int) -> tuple[float, float]:
    """(decisions per second, ns per decision) of the median round."""
    t = statistics.median(rounds)
    return n / t, t / n * 1e9


# In process.


def inproc_contenders(n: int) -> dict[str, Callable[[], float]]:
    """Each returns the seconds `n` decisions took."""
    from limits import parse, storage, strategies
    from pyrate_limiter import BucketFactory, Limiter, Rate, RateItem, StateBucket, TokenBucket
    from throttled import MemoryStore, RateLimiterType, Throttled, per_hour

    keys = KEYS
    k = len(keys)

    limiter = tollgate.Limiter(POLICY)

    def tollgate_check() -> float:
        check = limiter.check
        start = time.perf_counter()
        for i in range(n):
            check(tenant=keys[i % k])
        return time.perf_counter() - start

    def tollgate_rust() -> float:
        return _tollgate._rust_check_loop(limiter, keys, None, n)

    moving = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
    item = parse(f"{LIMIT_PER_HOUR}/hour")

    def limits_moving_window() -> float:
        hit = moving.hit
        start = time.perf_counter()
        for i in range(n):
            hit(item, keys[i % k])
        return time.perf_counter() - start

    class PerKey(BucketFactory):
        """One token bucket per key (pyrate-limiter's factories route items to buckets)."""

        def __init__(self) -> None:
            self.rates = [Rate(LIMIT_PER_HOUR, 3_600_000)]
            self.buckets: dict[str, StateBucket] = {}
            self.ms = lambda: time.monotonic_ns() // 1_000_000

        def wrap_item(self, name: str, weight: int = 1) -> RateItem:
            return RateItem(name, self.ms(), weight=weight)

        def get(self, item: RateItem) -> StateBucket:
            b = self.buckets.get(item.name)
            if b is None:
                b = self.buckets[item.name] = StateBucket(self.rates, algorithm=TokenBucket())
            return b

    pyrate = Limiter(PerKey())

    def pyrate_limiter() -> float:
        acquire = pyrate.try_acquire
        start = time.perf_counter()
        for i in range(n):
            acquire(keys[i % k], blocking=False)
        return time.perf_counter() - start

    throttle = Throttled(
        using=RateLimiterType.TOKEN_BUCKET.value,
        quota=per_hour(LIMIT_PER_HOUR),
        store=MemoryStore(options={"MAX_SIZE": 2 * k}),
    )

    def throttled_py() -> float:
        limit = throttle.limit
        start = time.perf_counter()
        for i in range(n):
            limit(keys[i % k])
        return time.perf_counter() - start

    # Every contender admits everything (a check that a run measures real decisions).
    assert limiter.check(tenant="probe").allowed
    assert moving.hit(item, "probe")
    assert pyrate.try_acquire("probe", blocking=False)
    assert not throttle.limit("probe").limited

    return {
        "tollgate `Limiter.check`": tollgate_check,
        "limits (moving window, memory)": limits_moving_window,
        "pyrate-limiter (token bucket, memory)": pyrate_limiter,
        "throttled-py (token bucket, memory)": throttled_py,
        "tollgate, the same decisions in a Rust loop": tollgate_rust,
    }


def bench_inproc(n: int, rounds: int) -> list[tuple[str, float, float]]:
    contenders = inproc_contenders(n)
    # A warm-up pass: every key's bucket exists before the measured rounds.
    for run in contenders.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            times[name].append(run())
    return [(name, *median_rate(t, n)) for name, t in times.items()]


# Redis.


class RedisServer:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="tollgate-bench-redis-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def flush(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "FLUSHALL"], check=True,
                       stdout=subprocess.DEVNULL)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


async def run_callers(n: int, callers: int, decide: Callable[[str], object]) -> float:
    """`n` decisions by `callers` concurrent tasks, each deciding for its next key."""
    per = n // callers

    async def caller(c: int) -> None:
        for i in range(per):
            await decide(KEYS[(c * per + i) % len(KEYS)])  # type: ignore[misc]

    start = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    return time.perf_counter() - start


def redis_contenders(url: str, degraded: list[int]) -> dict[str, Callable[[], object]]:
    """Each builds (inside the running loop) the async decision function of one contender.
    `degraded` counts the fallback contender's decisions made without Redis."""

    def tollgate_direct() -> Callable[[str], object]:
        limiter = tollgate.Limiter(POLICY, redis=url, fallback=False, prefix="bench")
        return lambda key: limiter.acheck(tenant=key)

    def tollgate_fallback() -> Callable[[str], object]:
        limiter = tollgate.Limiter(POLICY, redis=url, prefix="bench-fb")

        async def decide(key: str) -> None:
            d = await limiter.acheck(tenant=key)
            degraded[0] += d.degraded

        return decide

    def limits_moving() -> Callable[[str], object]:
        from limits import parse
        from limits.aio import storage, strategies

        s = strategies.MovingWindowRateLimiter(
            storage.RedisStorage(f"async+{url}", key_prefix="bench-mw")
        )
        item = parse(f"{LIMIT_PER_HOUR}/hour")
        return lambda key: s.hit(item, key)

    def limits_fixed() -> Callable[[str], object]:
        from limits import parse
        from limits.aio import storage, strategies

        s = strategies.FixedWindowRateLimiter(
            storage.RedisStorage(f"async+{url}", key_prefix="bench-fw")
        )
        item = parse(f"{LIMIT_PER_HOUR}/hour")
        return lambda key: s.hit(item, key)

    def throttled_redis() -> Callable[[str], object]:
        from throttled.asyncio import RateLimiterType, RedisStore, Throttled, per_hour

        t = Throttled(
            using=RateLimiterType.TOKEN_BUCKET.value,
            quota=per_hour(LIMIT_PER_HOUR),
            store=RedisStore(server=url),
        )
        return lambda key: t.limit(key)

    return {
        "tollgate `await Limiter.acheck` (Redis, no fallback)": tollgate_direct,
        "tollgate `await Limiter.acheck` (Redis behind the fallback store)": tollgate_fallback,
        "limits (async Redis, coredis, moving window)": limits_moving,
        "limits (async Redis, coredis, fixed window)": limits_fixed,
        "throttled-py (async Redis, token bucket)": throttled_redis,
    }


def bench_redis(n: int, rounds: int, callers: int) -> tuple[list[tuple[str, float, float]], str]:
    server = RedisServer()
    try:
        degraded = [0]
        contenders = redis_contenders(server.url, degraded)
        times: dict[str, list[float]] = {name: [] for name in contenders}

        async def main() -> None:
            deciders = {name: make() for name, make in contenders.items()}
            # Warm-up: connections made, scripts loaded, every key's bucket present.
            for decide in deciders.values():
                await run_callers(min(n, 2 * len(KEYS)), callers, decide)
            for _ in range(rounds):
                for name, decide in deciders.items():
                    times[name].append(await run_callers(n, callers, decide))

        asyncio.run(main())
        total = n * rounds + min(n, 2 * len(KEYS))
        note = (
            f"the fallback store made {degraded[0]} of its {total:,} decisions without Redis "
            "(degraded)"
        )
        return [(name, *median_rate(t, n)) for name, t in times.items()], note
    finally:
        server.close()


# Threads.


def bench_threads(n: int, rounds: int) -> list[tuple[str, float, float]]:
    limiter = tollgate.Limiter(POLICY)
    for key in KEYS:
        limiter.check(tenant=key)

    def run(threads: int, rust: bool) -> float:
        barrier = threading.Barrier(threads + 1)
        done: list[float] = []

        def worker(t: int) -> None:
            keys = KEYS[t::threads]
            check = limiter.check
            barrier.wait()
            if rust:
                _tollgate._rust_check_loop(limiter, keys, None, n)
            else:
                k = len(keys)
                for i in range(n):
                    check(tenant=keys[i % k])
            done.append(time.perf_counter())

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in ts:
            t.join()
        return max(done) - start

    out = []
    for rust in (False, True):
        one: list[float] = []
        four: list[float] = []
        for _ in range(rounds):
            one.append(run(1, rust))
            four.append(run(4, rust))
        r1, _ = median_rate(one, n)
        r4, _ = median_rate(four, 4 * n)
        label = "Rust loop (no Python per call)" if rust else "`Limiter.check` from Python"
        out.append((label, r1, r4))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer decisions (a smoke run)")
    ap.add_argument("--only", default="inproc,redis,threads")
    args = ap.parse_args()
    only = set(args.only.split(","))
    scale = 10 if args.quick else 1
    rounds = 3 if args.quick else 5

    load = os.getloadavg()
    print(f"# tollgate {tollgate.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at start")
    print("versions: " + ", ".join(
        f"{p} {version(p)}" for p in ("limits", "coredis", "pyrate-limiter", "throttled-py", "redis")))
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}\n")

    if "inproc" in only:
        n = 200_000 // scale
        rows = bench_inproc(n, rounds)
        print(f"## In process: one limit, 10,000 keys, one thread ({n:,} decisions per round, "
              f"median of {rounds})\n")
        print("| contender | decisions/s | ns/decision |")
        print("| --- | ---: | ---: |")
        for name, rate, ns in rows:
            print(f"| {name} | {rate:,.0f} | {ns:,.0f} |")
        ours = rows[0][1]
        anchors = [r for r in rows[1:-1]]
        best = max(anchors, key=lambda r: r[1])
        print(f"\ntollgate ÷ the fastest other ({best[0]}): **{ours / best[1]:.1f}×**; "
              f"Python's cost over the Rust call: **{rows[0][2] - rows[-1][2]:,.0f} ns** per decision\n")

    if "redis" in only:
        n = 20_000 // scale
        rows, note = bench_redis(n, rounds, callers=50)
        print(f"## Redis: 50 asyncio callers, one private redis-server ({n:,} decisions per "
              f"round, median of {rounds})\n")
        print("| contender | decisions/s | µs/decision (wall ÷ decisions) |")
        print("| --- | ---: | ---: |")
        for name, rate, ns in rows:
            print(f"| {name} | {rate:,.0f} | {ns / 1000:,.1f} |")
        ours = rows[0][1]
        best = max(rows[2:], key=lambda r: r[1])
        print(f"\ntollgate (no fallback) ÷ the fastest other ({best[0]}): **{ours / best[1]:.1f}×**; "
              f"{note}\n")

    if "threads" in only:
        n = 200_000 // scale
        rows = bench_threads(n, rounds)
        print(f"## Threads: memory store, 4 threads ÷ 1 thread ({n:,} decisions per thread, "
              f"median of {rounds})\n")
        print("| calls | 1 thread, decisions/s | 4 threads, decisions/s | 4 ÷ 1 |")
        print("| --- | ---: | ---: | ---: |")
        for label, r1, r4 in rows:
            print(f"| {label} | {r1:,.0f} | {r4:,.0f} | {r4 / r1:.2f}× |")
        print()


if __name__ == "__main__":
    main()
