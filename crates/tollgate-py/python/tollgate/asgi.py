"""ASGI middleware (Starlette, FastAPI, any ASGI app): one decision per HTTP request.

    from fastapi import FastAPI
    from tollgate import Limiter
    from tollgate.asgi import RateLimitMiddleware

    app = FastAPI()
    app.add_middleware(
        RateLimitMiddleware,
        limiter=Limiter("policy.toml"),
        subject=lambda scope: {"tenant": dict(scope["headers"]).get(b"x-tenant", b"anonymous").decode()},
    )

A request the limiter admits goes through, and its response carries the rate-limit headers.
A refused one is answered here, with the decision as JSON and its headers:

- 429 for a rate-limit denial (``Retry-After`` and ``retry-after-ms`` say when to come back);
- 413 with ``x-should-retry: false`` for a cost that can never fit;
- 503 when the shared store is failing and a rule fails closed, or a store without the
  fallback cannot answer.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from ._errors import StoreError
from ._tollgate import Decision, Limiter

__all__ = ["RateLimitMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Subject attributes with their own keyword; other keys the subject callable returns are
#: custom labels.
_KNOWN = frozenset(("tenant", "agent", "user", "provider", "model", "tier"))

#: The HTTP status of each way a request can be refused.
_STATUS = {"denied": 429, "too_large": 413, "unavailable": 503, "store_full": 429}


class RateLimitMiddleware:
    """Limits an ASGI app's HTTP requests with a ``Limiter``.

    Args:
        app: the ASGI application.
        limiter: the ``tollgate.Limiter``.
        subject: called with each request's ASGI scope; returns the subject's attributes
            (``tenant``, ``agent``, ``user``, ``provider``, ``model``, ``tier``; any other
            key is a custom label), or ``None`` to let the request through unlimited. It may
            be a coroutine function.
        tokens: the tokens a request costs: a number, or a callable of the scope.
        exempt: paths that are never limited (health checks).
        headers: whether admitted responses carry the rate-limit headers (default yes).
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: Limiter,
        subject: Callable[[Scope], Mapping[str, str] | None | Awaitable[Mapping[str, str] | None]],
        *,
        tokens: int | Callable[[Scope], int] = 0,
        exempt: Iterable[str] = (),
        headers: bool = True,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.subject = subject
        self.tokens = tokens
        self.exempt = frozenset(exempt)
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        attrs = self.subject(scope)
        if inspect.isawaitable(attrs):
            attrs = await attrs
        if attrs is None:
            await self.app(scope, receive, send)
            return
        known = {k: v for k, v in attrs.items() if k in _KNOWN}
        labels = {k: v for k, v in attrs.items() if k not in _KNOWN}
        tokens = self.tokens(scope) if callable(self.tokens) else self.tokens
        try:
            decision: Decision = await self.limiter.acheck(
                **known, labels=labels or None, tokens=tokens
            )
        except StoreError as e:
            await _respond(send, 503, {"error": "store_unavailable", "message": str(e)}, [])
            return
        if not decision.allowed:
            body = decision.to_dict()
            body["error"] = "rate_limited"
            status = _STATUS.get(decision.outcome, 429)
            await _respond(send, status, body, _encode(decision.headers()))
            return
        if not self.headers:
            await self.app(scope, receive, send)
            return
        extra = _encode(decision.headers())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", ())) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _encode(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def _respond(
    send: Send, status: int, body: Mapping[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
