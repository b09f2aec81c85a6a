"""Every failure a user of corral can cause or observe, under one root.

    CorralError
    ├── InvalidInput (also ValueError)      bad input at an edge: HTTP 422, CLI exit 2
    │   ├── UnknownAgent                    no agent registered under that name
    │   └── InvalidDatabaseURL              a database URL corral cannot parse
    ├── RunNotFound                         unknown run, or another tenant's run (HTTP 404)
    ├── RunNotRetryable                     retry of a run that is not a failed root (HTTP 409)
    ├── ScheduleNotFound                    no stored schedule of that name (HTTP 404)
    ├── ScheduleExists                      a schedule of that name exists already (HTTP 409)
    ├── ScheduleLimitReached                the tenant has as many schedules as allowed (409)
    ├── BackpressureError                   a bounded queue is full; retry later (HTTP 429)
    ├── BudgetExceeded                      a charge would overspend the root run's budget
    ├── FanoutLimitError                    max children per run or max depth reached
    ├── LeaseLost                           the caller's lease epoch is stale (fencing)
    ├── RunCancelled                        the run's cancellation was requested; it must stop
    ├── NonDeterminismError                 a replay asked for a different step than recorded
    ├── ChildRunFailed                      a run awaited with ctx.wait() ended failed/cancelled
    ├── StepFailed                          a journaled step raised (recorded, replayed as is)
    ├── AgentTimeout                        an attempt ran past its timeout (retried)
    ├── RunExpired                          a run not started within its start_within
    ├── ShutdownError                       a scheduler or worker is shutting down
    ├── StoreUnavailable                    the database cannot be reached or opened
    ├── Unauthorized                        no API key, or an unknown or revoked one (HTTP 401)
    ├── Forbidden                           a tenant key naming another tenant (HTTP 403)
    └── PayloadTooLarge                     a request body over the limit (HTTP 413)

Raised by agents, not by corral:

    NonRetryableError                       fail the run (or step) at once, without retries

Driver errors (sqlite3, psycopg) are translated at the store adapter and never reach a
caller; the original is kept as ``__cause__`` for logs.
"""

from __future__ import annotations

from typing import Any


class CorralError(Exception):
    """Root of every error corral raises on purpose."""

    #: stable machine-readable code, used as ``error.code`` in HTTP bodies
    code: str = "corral_error"


class InvalidInput(CorralError, ValueError):
    """Input that corral refuses at its edge; nothing was written."""

    code = "invalid_input"


class UnknownAgent(InvalidInput):
    code = "unknown_agent"

    def __init__(
        self, name: str, known: list[str] | None = None, *, where: str | None = None
    ) -> None:
        self.name = name
        self.known = known
        hint = f"; registered agents: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"{where + ': ' if where else ''}no agent named {name!r}{hint}")


class InvalidDatabaseURL(InvalidInput):
    code = "invalid_database_url"


class RunNotFound(CorralError, LookupError):
    code = "run_not_found"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r}")


class RunNotRetryable(CorralError):
    """``retry`` of a run that is not a dead-lettered (``failed``) root run: one that has not
    ended or ended otherwise, or a child run (its parent saw it fail: retry the root)."""

    code = "run_not_retryable"

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} cannot be retried: {reason}")


class ScheduleNotFound(CorralError, LookupError):
    code = "schedule_not_found"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no schedule {name!r}")


class ScheduleExists(CorralError):
    """``create_schedule`` with a name the tenant already uses (delete it first to change it)."""

    code = "schedule_exists"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a schedule named {name!r} exists already")


class ScheduleLimitReached(CorralError):
    """``create_schedule`` for a tenant that has ``StoreConfig.max_schedules_per_tenant``
    schedules already: one tenant cannot fill the workers' schedule loops."""

    code = "schedule_limit"

    def __init__(self, tenant: str, limit: int) -> None:
        self.tenant = tenant
        self.limit = limit
        super().__init__(f"tenant {tenant!r} has {limit} schedules, the most allowed")


class BackpressureError(CorralError):
    """A bounded queue is full. Nothing was taken; retry after ``retry_after`` seconds.
    ``tenant``: the tenant whose quota of queued runs refused it (None for other queues)."""

    code = "backpressure"

    def __init__(
        self, message: str, retry_after: float = 1.0, *, tenant: str | None = None
    ) -> None:
        self.retry_after = retry_after
        self.tenant = tenant
        super().__init__(message)


class BudgetExceeded(CorralError):
    code = "budget_exceeded"

    def __init__(self, message: str, *, requested: float = 0.0, remaining: float = 0.0) -> None:
        self.requested = requested
        self.remaining = remaining
        super().__init__(message)


class FanoutLimitError(CorralError):
    code = "fanout_limit"


class LeaseLost(CorralError):
    """The lease this write was fenced by is no longer held (expired, released, or re-leased)."""

    code = "lease_lost"

    def __init__(self, run_id: str, epoch: int) -> None:
        self.run_id = run_id
        self.epoch = epoch
        super().__init__(f"lease on run {run_id} at epoch {epoch} is no longer held")


class RunCancelled(CorralError):
    """Cancellation of the run was requested: the write that would continue it is refused."""

    code = "run_cancelled"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} is being cancelled")


class NonDeterminismError(CorralError):
    code = "non_determinism"


class ChildRunFailed(CorralError):
    code = "child_run_failed"

    def __init__(self, run_id: str, status: str, error: Any) -> None:
        self.run_id = run_id
        self.status = status
        self.error = error
        super().__init__(f"child run {run_id} ended {status}{_summary(error)}")


def _summary(error: Any) -> str:
    """A recorded error as a message's tail: its type and message, not the whole record. The
    record holds a traceback, and a failure up a tree of runs nested each level's record in
    the next one's message (thousands of escaped characters for three levels)."""
    if error is None:
        return ""
    if isinstance(error, dict) and ("type" in error or "message" in error):
        kind, message = error.get("type"), error.get("message")
        return f": {kind}: {message}" if kind and message else f": {kind or message}"
    return f": {error}"


class StepFailed(CorralError):
    code = "step_failed"

    def __init__(self, step: str, error: Any) -> None:
        self.step = step
        self.error = error
        super().__init__(f"step {step!r} failed: {error}")


class AgentTimeout(CorralError):
    """An attempt of a run ran longer than its timeout (the run's own, given at submit, else
    its agent's, else the worker's default): the worker stopped it and failed the attempt with
    this error, which is retried (with backoff, up to the run's max attempts) and then kept as
    the dead-lettered run's error."""

    code = "agent_timeout"

    def __init__(self, agent: str, seconds: float) -> None:
        self.agent = agent
        self.seconds = seconds
        super().__init__(f"agent {agent!r} ran past its timeout of {seconds:g} s")


class RunExpired(CorralError):
    """A run was leased for its first attempt after its ``start_by`` (its due time plus the
    ``start_within`` it was submitted with): the worker ended it failed with this error,
    without calling its agent and without retries. An operator's retry runs it."""

    code = "run_expired"

    def __init__(self, run_id: str, late: float) -> None:
        self.run_id = run_id
        self.late = late
        super().__init__(f"run {run_id} was not started in time: {late:.3g} s past its start_by")


class ShutdownError(CorralError):
    code = "shutdown"


class StoreUnavailable(CorralError):
    code = "store_unavailable"


class Unauthorized(CorralError):
    """No API key, or one that is unknown or revoked (HTTP 401)."""

    code = "unauthorized"


class Forbidden(CorralError):
    """The key may not do this: a tenant key acts for its own tenant only, and reads nothing
    of other tenants' or the whole system's (the workers); an admin key may (HTTP 403)."""

    code = "forbidden"


class PayloadTooLarge(CorralError):
    """A request body over the configured limit (HTTP 413)."""

    code = "payload_too_large"


class NonRetryableError(Exception):
    """Raise (or subclass) in an agent or a step to fail at once: no retry, no backoff."""


__all__ = [
    "AgentTimeout",
    "BackpressureError",
    "BudgetExceeded",
    "ChildRunFailed",
    "CorralError",
    "FanoutLimitError",
    "Forbidden",
    "InvalidDatabaseURL",
    "InvalidInput",
    "LeaseLost",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadTooLarge",
    "RunCancelled",
    "RunNotFound",
    "RunNotRetryable",
    "ScheduleExists",
    "ScheduleLimitReached",
    "ScheduleNotFound",
    "ShutdownError",
    "StepFailed",
    "StoreUnavailable",
    "Unauthorized",
    "UnknownAgent",
]
