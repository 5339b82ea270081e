"""Type stubs of the native module ``tollgate._tollgate`` (import ``tollgate`` instead)."""

import os
from collections.abc import Awaitable, Generator, Mapping
from types import TracebackType
from typing import Any, final

__version__: str

@final
class Decision:
    """The answer to one call. ``bool(decision)`` is ``decision.allowed``."""

    @property
    def allowed(self) -> bool:
        """Whether the call may go ahead (its cost has been spent)."""
    @property
    def outcome(self) -> str:
        """``allowed``, ``denied``, ``too_large``, ``store_full`` or ``unavailable``."""
    @property
    def retry_after(self) -> float | None:
        """Seconds until the same call would be admitted (a denial by a limit only)."""
    @property
    def reason(self) -> str | None:
        """``requests``, ``tokens``, ``concurrency``, ``quota``, ``too_large``,
        ``store_full`` or ``unavailable``; ``None`` if allowed."""
    @property
    def code(self) -> str | None:
        """``E4404`` requests, ``E4405`` tokens, ``E4406`` concurrency, ``E4407`` quota,
        ``E4413`` too large, ``E4503`` unavailable, ``E4400`` otherwise; ``None`` if
        allowed."""
    @property
    def degraded(self) -> bool:
        """Whether the decision was made without the shared store (Redis failing)."""
    @property
    def limits(self) -> list[LimitStatus]:
        """The status of every limit that applied, in policy order."""
    @property
    def denied_by(self) -> LimitStatus | None:
        """The limit that denied the call."""
    def headers(self) -> dict[str, str]:
        """The HTTP headers of the decision (rate-limit headers; ``retry-after`` and
        ``retry-after-ms`` on a denial; ``x-tollgate-degraded``; ``x-should-retry``)."""
    def to_dict(self) -> dict[str, Any]:
        """The decision as plain data."""
    def __bool__(self) -> bool: ...

@final
class LimitStatus:
    """The status of one limit in a decision."""

    @property
    def rule(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def kind(self) -> str:
        """``requests``, ``tokens``, ``input_tokens``, ``output_tokens`` or
        ``concurrency``."""
    @property
    def amount(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def window(self) -> float:
        """The window in seconds (a month counts as 30 days)."""
    @property
    def per(self) -> str:
        """``second``, ``minute``, ``hour``, ``day``, ``month`` or a length."""
    @property
    def quota(self) -> bool: ...
    @property
    def admitted(self) -> bool: ...
    @property
    def remaining(self) -> int: ...
    @property
    def reset_after(self) -> float: ...
    @property
    def retry_after(self) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Usage:
    """How much of one limit is in use."""

    @property
    def rule(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def window(self) -> float: ...
    @property
    def per(self) -> str: ...
    @property
    def used(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def available(self) -> int: ...
    @property
    def reset_after(self) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Stats:
    """Counts of decisions since the limiter was made."""

    @property
    def allowed(self) -> int: ...
    @property
    def denied(self) -> int: ...
    @property
    def deny_rate(self) -> float: ...
    @property
    def active_buckets(self) -> dict[str, int] | None: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Permit:
    """A granted reservation, settled once by ``commit`` or ``cancel``."""

    @property
    def decision(self) -> Decision: ...
    @property
    def tokens(self) -> int:
        """The tokens reserved (the estimate)."""
    @property
    def settled(self) -> bool: ...
    @property
    def actual_tokens(self) -> int | None:
        """The tokens actually used, committed when the context manager exits normally."""
    @actual_tokens.setter
    def actual_tokens(self, tokens: int | None) -> None: ...
    def commit(
        self,
        tokens: int | None = None,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        requests: int | None = None,
    ) -> None: ...
    def acommit(
        self,
        tokens: int | None = None,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        requests: int | None = None,
    ) -> Awaitable[None]: ...
    def cancel(self) -> None: ...
    def acancel(self) -> Awaitable[None]: ...
    def renew(self) -> bool: ...
    def keep_alive(self, every: float) -> None: ...

@final
class Acquire:
    """A pending ``acquire``: ``with``, ``async with`` or ``await`` it."""

    def __enter__(self) -> Permit: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> bool: ...
    def __aenter__(self) -> Awaitable[Permit]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> Awaitable[bool]: ...
    def __await__(self) -> Generator[Any, None, Permit]: ...

@final
class Policy:
    """A validated set of rules."""

    @staticmethod
    def default() -> Policy: ...
    @staticmethod
    def load(path: str | os.PathLike[str]) -> Policy: ...
    @staticmethod
    def from_toml(source: str, file: str = "<string>") -> Policy: ...
    @staticmethod
    def per_model(
        models: Mapping[str, Mapping[str, int]],
        default: Mapping[str, int] | None = None,
        *,
        failure_mode: str | None = None,
    ) -> Policy: ...
    @property
    def rules(self) -> list[str]: ...

@final
class ManualClock:
    """A clock for tests that moves only when told to."""

    def __init__(self, start: float = 1_000_000.0) -> None: ...
    @property
    def now(self) -> float: ...
    def advance(self, seconds: float) -> None: ...
    def set(self, seconds: float) -> None: ...

class Limiter:
    """Decides, for each call to a model, whether it may go ahead now, and if not, when."""

    def __init__(
        self,
        policy: Policy | str | os.PathLike[str] | None = None,
        *,
        redis: str | list[str] | None = None,
        cluster: bool = False,
        fallback: bool = True,
        deadline: float = 0.025,
        instances: int = 1,
        clock: ManualClock | None = None,
        max_buckets: int | None = None,
        prefix: str | None = None,
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
    ) -> None: ...
    @classmethod
    def from_env(cls, **kwargs: Any) -> Any: ...
    def check(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tier: str | None = None,
        labels: Mapping[str, str] | None = None,
        tokens: int | None = None,
        requests: int = 1,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> Decision: ...
    def peek(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tier: str | None = None,
        labels: Mapping[str, str] | None = None,
        tokens: int | None = None,
        requests: int = 1,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> Decision: ...
    def acheck(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tier: str | None = None,
        labels: Mapping[str, str] | None = None,
        tokens: int | None = None,
        requests: int = 1,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> Awaitable[Decision]: ...
    def apeek(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tier: str | None = None,
        labels: Mapping[str, str] | None = None,
        tokens: int | None = None,
        requests: int = 1,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> Awaitable[Decision]: ...
    def acquire(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tier: str | None = None,
        labels: Mapping[str, str] | None = None,
        tokens: int | None = None,
        requests: int = 1,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        timeout: float | None = None,
    ) -> Acquire: ...
    def usage(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tier: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[Usage]: ...
    def ausage(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tier: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Awaitable[list[Usage]]: ...
    def reset(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tier: str | None = None,
        labels: Mapping[str, str] | None = None,
        rule: str | None = None,
    ) -> int: ...
    def areset(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tier: str | None = None,
        labels: Mapping[str, str] | None = None,
        rule: str | None = None,
    ) -> Awaitable[int]: ...
    def reset_rule(self, name: str) -> int: ...
    def stats(self) -> Stats: ...
    @property
    def policy(self) -> Policy: ...
    def set_policy(self, policy: Policy | str | os.PathLike[str]) -> None: ...
    @property
    def store(self) -> str:
        """``memory``, ``redis+fallback`` or ``redis``."""
    @property
    def breaker(self) -> str | None:
        """``closed``, ``open`` or ``half_open`` (``None`` without the fallback store)."""

class RateLimiter:
    """At most ``per_second`` calls per second (or ``per_minute`` per minute)."""

    def __init__(
        self,
        per_second: float | None = None,
        *,
        per_minute: float | None = None,
        burst: int | None = None,
        clock: ManualClock | None = None,
    ) -> None: ...
    def try_acquire(self) -> bool: ...
    def acquire(self) -> None: ...
    def aacquire(self) -> Awaitable[None]: ...

@final
class Ready:
    """An awaitable whose answer is already known."""

    def __await__(self) -> Generator[Any, None, Any]: ...

def _after_fork_in_child() -> None: ...
def _rust_check_loop(
    limiter: Limiter, tenants: list[str], provider: str | None, n: int
) -> float: ...
