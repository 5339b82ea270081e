"""The exceptions tollgate raises (the native module raises these classes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._tollgate import Decision

__all__ = ["PolicyError", "RateLimited", "StoreError", "TollgateError"]


class TollgateError(Exception):
    """The base class of tollgate's exceptions."""


class RateLimited(TollgateError):
    """The call was not admitted.

    Raised by ``acquire`` (when the wait ends without a permit) and by the decorators.
    ``Limiter.check`` does not raise it: a denial there is a ``Decision``.

    Attributes:
        decision: the ``Decision`` that refused the call.
        retry_after: seconds until the same call would be admitted if nothing else
            happened; ``None`` when waiting cannot help (``outcome`` ``too_large``) or the
            refusal is not a rate limit (``unavailable``, ``store_full``).
        reason: ``requests``, ``tokens``, ``concurrency``, ``quota``, ``too_large``,
            ``store_full`` or ``unavailable``.
        code: the stable code: ``E4404`` requests, ``E4405`` tokens, ``E4406``
            concurrency, ``E4407`` quota, ``E4413`` too large, ``E4503`` unavailable,
            ``E4400`` otherwise.
        outcome: ``denied``, ``too_large``, ``store_full`` or ``unavailable``.
    """

    decision: Decision
    retry_after: float | None
    reason: str | None
    code: str | None
    outcome: str

    def __init__(self, decision: Decision) -> None:
        super().__init__(str(decision))
        self.decision = decision
        self.retry_after = decision.retry_after
        self.reason = decision.reason
        self.code = decision.code
        self.outcome = decision.outcome

    def headers(self) -> dict[str, str]:
        """The HTTP headers of the refusal (``retry-after``, ``retry-after-ms``, the
        rate-limit headers); see ``Decision.headers``."""
        return self.decision.headers()


class PolicyError(TollgateError, ValueError):
    """A policy that cannot be used, naming where and what is wrong.

    Attributes:
        file: the policy file (``None`` for a policy not read from a file).
        line: the 1-based line in that file, when known.
        column: the 1-based column, when known.
        rule: the rule at fault, when the error is inside one.
        field: the field at fault, such as ``limits[1].burst``, or the environment
            variable.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        rule: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.column = column
        self.rule = rule
        self.field = field


class StoreError(TollgateError):
    """The store (Redis) could not answer, and no fallback decided instead.

    Attributes:
        transient: whether trying again later may succeed (a timeout, an unreachable
            server), as opposed to a store that answered something unexpected.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# Shown as tollgate.RateLimited (and so on) in tracebacks: the package exports them there.
for _cls in (TollgateError, RateLimited, PolicyError, StoreError):
    _cls.__module__ = "tollgate"
del _cls
