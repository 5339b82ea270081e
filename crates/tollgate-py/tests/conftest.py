"""Test support: private redis-server processes on free loopback ports, and policies.

Every Redis the tests use is started here, on a port nobody else uses, and stopped at the end;
the server on 127.0.0.1:6379 is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private redis-server on a free port, in its own directory, saving nothing."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not on the PATH (.ci/run installs it)")
        self.dir = tempfile.mkdtemp(prefix="tollgate-py-redis-")
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> None:
        # A port found free may be taken before the server binds it: try a few.
        for _ in range(5):
            port = self.port or free_port()
            proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", self.dir,
                    *extra,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                if ping(port):
                    self.port, self.proc = port, proc
                    return
                time.sleep(0.02)
            proc.kill()
            proc.wait()
        pytest.fail("could not start a private redis-server")

    def kill(self) -> None:
        """Stops the server at once (SIGKILL), as a crash would."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, check=True
        )
        return out.stdout.decode().strip()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A private Redis Cluster of three masters on free ports."""

    def __init__(self) -> None:
        self.nodes = [RedisServer() for _ in range(3)]
        for n in self.nodes:
            n.start("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        subprocess.run(
            ["redis-cli", "--cluster", "create",
             *[f"127.0.0.1:{n.port}" for n in self.nodes],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            check=True,
        )
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in self.nodes):
            if time.monotonic() > deadline:
                pytest.fail("the private Redis Cluster did not come up")
            time.sleep(0.05)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def close(self) -> None:
        for n in self.nodes:
            n.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private Redis for the session's tests (each uses its own key prefix)."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private Redis for one test, which may stop it."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own, so that tests sharing a Redis share no bucket."""
    return f"t{os.getpid()}-{request.node.name}".replace("[", "-").replace("]", "")


#: Options for limiters on the tests' Redis: on a busy host a command may take a while without
#: Redis being in trouble, so connecting and each command get time, and the fallback store's
#: deadline (the time after which it decides without Redis) is long.
PATIENT = dict(connect_timeout=30.0, timeout=30.0, deadline=30.0)


def write_policy(tmp_path: Path, toml: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(toml)
    return path
