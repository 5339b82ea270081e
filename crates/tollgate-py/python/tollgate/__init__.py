"""tollgate: rate limiting for AI inference traffic, in process.

Decide, for each call to a model, whether it may go ahead now, and if not, exactly when.
Limit requests, tokens and in-flight calls per tenant, agent, user, provider and model, with
the same engine (and the same policy files) as the tollgate service: in this process's memory,
or in Redis for a fleet, with a fallback when Redis fails.

    import tollgate

    limiter = tollgate.Limiter()                      # 60 requests, 100k tokens/min per tenant+provider
    d = limiter.check(tenant="acme", provider="openai", tokens=1500)
    if not d.allowed:
        print(d.reason, d.code, d.retry_after)        # e.g. tokens E4405 12.5

    with limiter.acquire(tenant="acme", provider="openai", tokens=8000, timeout=5.0) as permit:
        ...                                           # call the model
        permit.commit(tokens=6250)                    # settle the actual usage

The engine is Rust: sync calls release the GIL while it works or waits, and the ``a``-methods
and ``async with`` return awaitables driven by its own runtime.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from . import _tollgate
from ._errors import PolicyError, RateLimited, StoreError, TollgateError
from ._tollgate import (
    Acquire,
    Decision,
    LimitStatus,
    ManualClock,
    Permit,
    Policy,
    Stats,
    Usage,
)

__version__: str = _tollgate.__version__

__all__ = [
    "Acquire",
    "Decision",
    "LimitStatus",
    "Limiter",
    "ManualClock",
    "ModelRateLimiter",
    "Permit",
    "Policy",
    "PolicyError",
    "RateLimited",
    "RateLimiter",
    "Stats",
    "StoreError",
    "TollgateError",
    "Usage",
    "__version__",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The attributes of a subject that have their own keyword; any other goes in ``labels``.
SUBJECT_ATTRIBUTES = ("tenant", "agent", "user", "provider", "model", "tier")


def _resolve(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A decorator argument's value for one call: called with the call's arguments if it
    is callable, as given otherwise."""
    return value(*args, **kwargs) if callable(value) else value


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)


class Limiter(_tollgate.Limiter):
    __doc__ = _tollgate.Limiter.__doc__

    def limit(
        self,
        *,
        tenant: str | Callable[..., str] | None = None,
        agent: str | Callable[..., str] | None = None,
        user: str | Callable[..., str] | None = None,
        provider: str | Callable[..., str] | None = None,
        model: str | Callable[..., str] | None = None,
        tier: str | Callable[..., str] | None = None,
        labels: Mapping[str, str | Callable[..., str]] | None = None,
        tokens: int | Callable[..., int] | None = None,
        requests: int = 1,
        timeout: float | None = 0.0,
        actual: Callable[[Any], int | None] | None = None,
    ) -> Callable[[F], F]:
        """Rate-limits a function, sync or async.

        Each call acquires a permit for the subject and cost (``with`` / ``async with``
        ``acquire``), runs the function holding it, and raises ``RateLimited`` if the call
        is not admitted within ``timeout`` seconds (default 0: do not wait; ``None``: wait
        as long as it takes). Any argument may be a callable, called with the function's
        arguments: ``tokens=lambda prompt, **_: len(prompt) // 4``.

        When the function returns, the permit is committed at ``actual(result)`` if
        ``actual`` is given and returns a number (the usage a model reports), else at the
        estimate; when it raises (or its task is cancelled), the reservation is refunded.
        """

        attrs = {
            "tenant": tenant,
            "agent": agent,
            "user": user,
            "provider": provider,
            "model": model,
            "tier": tier,
        }
        fixed = {k: v for k, v in attrs.items() if v is not None}

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            out = {k: _resolve(v, args, kwargs) for k, v in fixed.items()}
            if labels:
                out["labels"] = {k: _resolve(v, args, kwargs) for k, v in labels.items()}
            if tokens is not None:
                out["tokens"] = _resolve(tokens, args, kwargs)
            out["requests"] = requests
            out["timeout"] = timeout
            return out

        def settle(permit: Permit, result: Any) -> None:
            if actual is not None:
                used = actual(result)
                if used is not None:
                    permit.actual_tokens = used

        def decorate(fn: F) -> F:
            if _is_async(fn):

                @functools.wraps(fn)
                async def call_async(*args: Any, **kwargs: Any) -> Any:
                    async with self.acquire(**arguments(args, kwargs)) as permit:
                        result = await fn(*args, **kwargs)
                        settle(permit, result)
                        return result

                return cast(F, call_async)

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                with self.acquire(**arguments(args, kwargs)) as permit:
                    result = fn(*args, **kwargs)
                    settle(permit, result)
                    return result

            return cast(F, call)

        return decorate


class RateLimiter(_tollgate.RateLimiter):
    __doc__ = _tollgate.RateLimiter.__doc__

    def limited(self, fn: F) -> F:
        """Rate-limits ``fn`` (sync or async) by this limiter: each call waits for its slot
        first. Any number of functions may share one limiter."""
        if _is_async(fn):

            @functools.wraps(fn)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                await self.aacquire()
                return await fn(*args, **kwargs)

            return cast(F, call_async)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            self.acquire()
            return fn(*args, **kwargs)

        return cast(F, call)


#: The names ``ModelRateLimiter.stats`` gives the limits of a model.
_STAT_NAMES = {
    ("requests", "minute"): "rpm",
    ("tokens", "minute"): "tpm",
    ("requests", "hour"): "rph",
    ("tokens", "hour"): "tph",
    ("requests", "day"): "rpd",
    ("tokens", "day"): "tpd",
}


class ModelRateLimiter:
    """Per-model limits on requests, tokens and calls in flight, on tollgate's engine.

    ``ModelRateLimiter({"gpt-4o": dict(rpm=500, tpm=30_000, max_parallel=10)})`` gives each
    model its own buckets (keys: ``rpm``, ``tpm``, ``rph``, ``tph``, ``rpd``, ``tpd``,
    ``max_parallel``). ``default`` gives the limits of models not listed; without it, such a
    model is an error (``KeyError``). Other keyword arguments (``redis=``, ``clock=``, ...)
    go to the ``Limiter`` underneath, which ``limiter`` exposes.

        async with models.acquire("gpt-4o", estimated_tokens=2000) as permit:
            response = await call_model()
            permit.actual_tokens = response.usage.total_tokens

    Entering waits (up to ``timeout`` seconds; ``None`` as long as it takes) for a request,
    the estimated tokens and a slot; leaving commits ``actual_tokens`` (the estimate if not
    set), or refunds everything if the block raised or was cancelled.
    """

    def __init__(
        self,
        models: Mapping[str, Mapping[str, int]],
        default: Mapping[str, int] | None = None,
        *,
        failure_mode: str | None = None,
        **limiter_options: Any,
    ) -> None:
        self.models: dict[str, dict[str, int]] = {k: dict(v) for k, v in models.items()}
        self.default: dict[str, int] | None = dict(default) if default is not None else None
        policy = Policy.per_model(self.models, self.default, failure_mode=failure_mode)
        self.limiter: Limiter = Limiter(policy, **limiter_options)

    def _known(self, model: str) -> str:
        if self.default is None and model not in self.models:
            raise KeyError(f"no limits for model {model!r} and no default limits")
        return model

    def acquire(
        self, model: str, estimated_tokens: int = 0, *, timeout: float | None = None
    ) -> Acquire:
        """A permit for one call to ``model`` reserving ``estimated_tokens`` (use with
        ``with`` / ``async with``, or ``await`` it; see ``Acquire``)."""
        return self.limiter.acquire(
            model=self._known(model), tokens=estimated_tokens, timeout=timeout
        )

    def check(self, model: str, tokens: int = 0) -> Decision:
        """Admits one call to ``model`` costing ``tokens`` now, or denies it (holds no slot)."""
        return self.limiter.check(model=self._known(model), tokens=tokens)

    def limit(
        self,
        model: str,
        *,
        tokens: int | Callable[..., int] | None = None,
        timeout: float | None = 0.0,
        actual: Callable[[Any], int | None] | None = None,
    ) -> Callable[[F], F]:
        """Rate-limits a function (sync or async) as calls to ``model``; see
        ``Limiter.limit``."""
        return self.limiter.limit(
            model=self._known(model), tokens=tokens, timeout=timeout, actual=actual
        )

    def usage(self, model: str) -> list[Usage]:
        """How much of each of ``model``'s limits is in use."""
        return self.limiter.usage(model=self._known(model))

    def reset(self, model: str) -> int:
        """Forgets ``model``'s buckets: its limits are fully available again. Returns how
        many buckets that is."""
        return self.limiter.reset(model=self._known(model))

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """For each configured model, each limit's ``used``, ``capacity`` and ``available``
        (``max_parallel``: slots in use), keyed like the configuration (``rpm``, ``tpm``,
        ...)."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for model in self.models:
            limits: dict[str, dict[str, int]] = {}
            for u in self.limiter.usage(model=model):
                name = (
                    "max_parallel"
                    if u.kind == "concurrency"
                    else _STAT_NAMES.get((u.kind, u.per), f"{u.kind}/{u.per}")
                )
                limits[name] = {"used": u.used, "capacity": u.capacity, "available": u.available}
            out[model] = limits
        return out

    def __repr__(self) -> str:
        return f"ModelRateLimiter(models={sorted(self.models)!r}, store={self.limiter.store!r})"
