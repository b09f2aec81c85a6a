"""The context an agent is called with: who the run is, and the durable calls it makes.

Each durable call is journaled before the agent continues and replayed on later deliveries
(see ``replay.py``). Writes are fenced by the lease epoch: once another worker owns the run
they raise ``LeaseLost``. A call that finds cancellation requested stops the run: a spawn or a
suspension before it acts, a step once its function has run (as it writes its result).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Executor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.errors import (
    BudgetExceeded,
    ChildRunFailed,
    CorralError,
    FanoutLimitError,
    InvalidInput,
    NonRetryableError,
    RunCancelled,
    StepFailed,
)
from corral.models import JSON, JournalEntry, Lease, LeaseRef, RunOutcome, RunSpec, RunStatus
from corral.runs.replay import Replay
from corral.runs.signals import CancelRequested, Suspended
from corral.runs.turns import Turn, Turns
from corral.store.user_sql import StepTransaction
from corral.values import (
    check_amount,
    check_int,
    check_json,
    check_name,
    check_positive,
    check_priority,
)

if TYPE_CHECKING:
    from corral.contention.shared import SharedHandle, SharedScheduler
    from corral.store import Store


@dataclass(frozen=True, slots=True)
class StepPolicy:
    """How one step is run: retried ``retries`` times with exponential ``backoff`` (seconds)
    on any exception except those in ``give_up_on``, each try bounded by ``timeout``."""

    retries: int = 0
    backoff: float = 0.5
    timeout: float | None = None
    give_up_on: tuple[type[BaseException], ...] = ()


@dataclass(frozen=True, slots=True)
class FanoutLimits:
    max_children: int = 16
    max_depth: int = 3


class RunContext:
    """Passed to every agent as ``ctx``."""

    def __init__(
        self,
        lease: Lease,
        store: Store,
        *,
        history: Sequence[JournalEntry] = (),
        limits: FanoutLimits | None = None,
        resources: Mapping[str, SharedScheduler] | None = None,
        threads: Executor | None = None,
    ) -> None:
        self._lease = lease
        #: where steps of plain (blocking) functions run (None: the event loop's default)
        self._threads = threads
        self._store = store
        self._replay = Replay(lease.run_id, history)
        self._turns = Turns()
        self._limits = limits or FanoutLimits()
        self._resources = resources or {}
        self.ref = LeaseRef(lease.run_id, lease.epoch)

    # -- identity -----------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self._lease.run_id

    @property
    def tenant(self) -> str:
        return self._lease.tenant

    @property
    def agent(self) -> str:
        return self._lease.agent

    @property
    def attempt(self) -> int:
        """1 on the first delivery, higher on retries and redeliveries."""
        return self._lease.attempt

    @property
    def epoch(self) -> int:
        return self._lease.epoch

    @property
    def root_id(self) -> str:
        return self._lease.root_id

    @property
    def parent_id(self) -> str | None:
        return self._lease.parent_id

    @property
    def depth(self) -> int:
        return self._lease.depth

    @property
    def replaying(self) -> bool:
        """True while calls are being answered from the journal of an earlier delivery."""
        return self._replay.replaying

    # -- journaled calls ----------------------------------------------------------------------

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        policy: StepPolicy | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` (sync functions in a thread) once for this run: its
        result is journaled, and every later delivery gets the recorded result instead. An
        exception in ``policy.give_up_on`` (or a ``NonRetryableError``) is recorded too and
        raised as ``StepFailed``, then and on every replay; any other exception, once the
        step's retries are spent, fails this attempt of the run (which the queue retries)."""
        check_name("step name", name)
        with self._journaled("step", name) as (recorded, turn):
            if recorded is not None:
                return _unpack_step(name, recorded.data)
            policy = policy or StepPolicy()
            try:
                value = _round_trip(
                    await self._run_step(fn, args, kwargs, policy), f"step {name!r}'s result"
                )
            except _GaveUp as gave_up:
                error = _describe(gave_up.error)
                await turn.come()
                await self._record("step", name, {"error": error})
                raise StepFailed(name, error) from gave_up.error
            await turn.come()
            await self._record("step", name, {"ok": value})
            return value

    async def _run_step(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: StepPolicy,
    ) -> Any:
        tries = 0
        while True:
            try:
                call = (
                    fn(*args, **kwargs)
                    if asyncio.iscoroutinefunction(fn)
                    else self._in_thread(fn, args, kwargs)
                )
                async with asyncio.timeout(policy.timeout):
                    result = await call
                    # a callable that is not an async def but returns an awaitable (a lambda
                    # around a coroutine, an object with an async __call__) ran in a thread
                    # and handed its coroutine back unawaited
                    return await result if inspect.isawaitable(result) else result
            except Exception as exc:
                if isinstance(exc, (NonRetryableError, *policy.give_up_on)):
                    raise _GaveUp(exc) from exc
                tries += 1
                if tries > policy.retries:
                    raise
                await asyncio.sleep(policy.backoff * (2 ** (tries - 1)))

    def _in_thread(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Awaitable[Any]:
        """``fn`` on one of the worker's step threads, with this task's context variables
        (what asyncio.to_thread does on the loop's shared default pool)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def transaction(
        self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """A transactional step: ``await fn(tx, *args, **kwargs)`` runs in the same database
        transaction as the step's journal entry, so its writes (``tx.execute(sql, params)``
        with ``:name`` parameters) happen exactly once per run, whatever crashes. Replays
        return the recorded result. Keep it short: it holds a database transaction open."""
        check_name("step name", name)
        with self._journaled("step", name) as (recorded, turn):
            if recorded is not None:
                return _unpack_step(name, recorded.data)

            async def call(tx: StepTransaction) -> Any:
                return await fn(tx, *args, **kwargs)

            await turn.come()
            value, cancel = await self._store.transact(
                self.ref, name, call, functools.partial(_round_trip, what=f"step {name!r}'s result")
            )
        if cancel:
            raise CancelRequested
        return value

    async def emit(self, kind: str, data: JSON = None) -> int:
        """Append a user event to the run's journal (once per run, even across replays);
        returns its sequence number."""
        check_name("event kind", kind)
        with self._journaled("event", kind) as (recorded, turn):
            if recorded is not None:
                return recorded.seq
            value = _round_trip(data, f"event {kind!r}'s data")
            await turn.come()
            return await self._record("event", kind, value)

    async def spawn(
        self,
        agent: str,
        input: JSON = None,
        *,
        budget: float | None = None,
        priority: int = 0,
        max_attempts: int = 3,
        timeout: float | None = None,
        start_within: float | None = None,
    ) -> str:
        """Start a child run (same tenant, same fair dispatch, drawing on this run tree's
        budget; ``budget`` sets a sub-limit; ``timeout``, seconds one attempt of the child may
        take, and ``start_within``, seconds within which it must start or end failed
        unrun, as in ``Corral.submit``). Returns its run id."""
        (child,) = await self.spawn_many(
            [
                {
                    "agent": agent,
                    "input": input,
                    "budget": budget,
                    "priority": priority,
                    "max_attempts": max_attempts,
                    "timeout": timeout,
                    "start_within": start_within,
                }
            ]
        )
        return child

    async def spawn_many(self, children: Iterable[dict[str, Any]]) -> list[str]:
        """Start several child runs in one transaction (all or none), each a dict of
        ``spawn``'s arguments."""
        specs = [_child_spec(c) for c in children]
        name = ",".join(sorted({s.agent for s in specs}))
        with self._journaled("spawn", name) as (recorded, turn):
            if recorded is not None:
                _raise_recorded(recorded.data)
                return list(recorded.data["children"])
            await turn.come()
            try:
                return await self._store.spawn(
                    self.ref,
                    specs,
                    max_children=self._limits.max_children,
                    max_depth=self._limits.max_depth,
                    entry=("spawn", name, {}),
                )
            except (FanoutLimitError, BudgetExceeded) as exc:
                await self._record("spawn", name, {"error": _describe(exc)})
                raise
            except RunCancelled:
                raise CancelRequested from None

    async def wait(self, *runs: str | Iterable[str], return_exceptions: bool = False) -> list[Any]:
        """The results of the given runs (this run's own children, from ``spawn``), in order.
        While any is unfinished the run suspends: its lease and tenant slot are given back,
        and it resumes when the last one ends. A failed or cancelled run raises
        ``ChildRunFailed`` (or, with ``return_exceptions``, is returned as one); a run that is
        not this run's child is InvalidInput."""
        ids = [r for item in runs for r in ([item] if isinstance(item, str) else item)]
        with self._journaled("wait", None) as (recorded, turn):
            if recorded is not None:
                outcomes = [
                    RunOutcome(o["run_id"], RunStatus(o["status"]), o["result"], o["error"])
                    for o in recorded.data["outcomes"]
                ]
            else:
                await turn.come()
                outcomes = await self._wait_for(ids)
        results: list[Any] = []
        for o in outcomes:
            if o.status == RunStatus.SUCCEEDED:
                results.append(o.result)
                continue
            failure = ChildRunFailed(o.run_id, o.status.value, o.error)
            if not return_exceptions:
                raise failure
            results.append(failure)
        return results

    async def _wait_for(self, ids: list[str]) -> list[RunOutcome]:
        """The outcomes of children ``ids``, journaled, once all have ended; until then the
        run suspends (``Suspended``)."""
        while True:
            outcomes = await self._store.outcomes(ids, parent=self.run_id)
            if all(o.done for o in outcomes):
                break
            if await self._suspend(children=ids, entry=("suspended", "wait", {"runs": ids})):
                raise Suspended
        await self._record(
            "wait",
            None,
            {
                "outcomes": [
                    {
                        "run_id": o.run_id,
                        "status": o.status.value,
                        "result": o.result,
                        "error": o.error,
                    }
                    for o in outcomes
                ]
            },
        )
        return outcomes

    async def sleep(self, seconds: float) -> None:
        """A durable timer: the run suspends (holding no slot) and resumes after ``seconds``,
        even if every worker restarts in between."""
        check_amount("sleep's seconds", seconds)
        with self._journaled("sleep", None) as (recorded, turn):
            if recorded is not None:
                wake_at = float(recorded.data["wake_at"])
            else:
                await turn.come()
                wake_at = self._store.clock() + seconds
                await self._record("sleep", None, {"wake_at": wake_at, "seconds": seconds})
        if self._store.clock() >= wake_at:
            return
        if await self._suspend(wake_at=wake_at, entry=("suspended", "sleep", {"wake_at": wake_at})):
            raise Suspended

    async def charge(self, amount: float, *, reason: str | None = None) -> float | None:
        """Draw ``amount`` cost units from the root run's budget (and any sub-limit on the way),
        atomically across all workers. Returns what the root has left (None: no budget).
        Raises ``BudgetExceeded`` — then and on every replay — when it would overspend."""
        check_amount("a charge's amount", amount)
        if reason is not None:
            check_name("a charge's reason", reason)
        with self._journaled("charge", reason) as (recorded, turn):
            if recorded is not None:
                _raise_recorded(recorded.data)
                remaining = recorded.data.get("remaining")
                return None if remaining is None else float(remaining)
            await turn.come()
            try:
                return await self._store.charge(
                    self.ref, float(amount), ("charge", reason, {"amount": amount})
                )
            except BudgetExceeded as exc:
                await self._record("charge", reason, {"amount": amount, "error": _describe(exc)})
                raise

    @asynccontextmanager
    async def acquire(
        self,
        resource: str,
        *,
        tokens: int = 0,
        weight: float = 1.0,
        timeout: float | None = None,
    ) -> AsyncIterator[SharedHandle]:
        """A slot of a shared resource of the app (``Corral.shared_resource``), for this run:
        its agent id is ``tenant/agent``. Report what the call used with
        ``handle.report_usage(tokens)``; at release it is charged to the run's budget (not
        journaled: if the surrounding step runs again, so does its spend)."""
        scheduler = self._resources.get(resource)
        if scheduler is None:
            known = ", ".join(sorted(self._resources)) or "none"
            raise InvalidInput(f"no shared resource named {resource!r} (the app has: {known})")
        async with scheduler.acquire(
            f"{self.tenant}/{self.agent}", weight=weight, timeout=timeout, tokens=tokens
        ) as handle:
            yield handle
        if handle.tokens_used:
            await self._store.charge(self.ref, float(handle.tokens_used), None)

    async def journal(self, after: int = 0) -> list[JournalEntry]:
        return await self._store.journal(self.run_id, after=after)

    @contextmanager
    def _journaled(self, kind: str, name: str | None) -> Iterator[tuple[JournalEntry | None, Turn]]:
        """A journaled call's recorded entry (None: it must act and record itself) and its
        turn to write (see turns.py), which ends with the block. Both are taken on entering,
        synchronously, before the call's first await, so concurrent calls get them in the
        order they were made."""
        recorded = self._replay.next(kind, name)
        turn = self._turns.take()
        try:
            yield recorded, turn
        finally:
            turn.end()

    async def _suspend(self, **what: Any) -> bool:
        try:
            return await self._store.suspend(self.ref, **what)
        except RunCancelled:
            raise CancelRequested from None

    async def _record(self, kind: str, name: str | None, data: JSON) -> int:
        appended = await self._store.append(self.ref, [(kind, name, data)])
        if appended.cancel_requested:
            raise CancelRequested
        return appended.seqs[0]


class _GaveUp(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _round_trip(value: Any, what: str) -> JSON:
    """What the journal will give back on replay, so first run and replay see the same value."""
    return json.loads(check_json(value, what))


def _describe(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "code": exc.code if isinstance(exc, CorralError) else None,
    }


def _unpack_step(name: str, data: Any) -> Any:
    if "error" in data:
        raise StepFailed(name, data["error"])
    return data["ok"]


def _raise_recorded(data: Any) -> None:
    error = data.get("error")
    if error is None:
        return
    if error.get("type") == "BudgetExceeded":
        raise BudgetExceeded(error["message"])
    raise FanoutLimitError(error["message"])


def _child_spec(child: dict[str, Any]) -> RunSpec:
    agent = child.get("agent")
    check_name("agent", agent)
    budget = child.get("budget")
    if budget is not None:
        check_amount("a child's budget", budget)
    timeout = child.get("timeout")
    if timeout is not None:
        check_positive("a child's timeout", timeout)
    start_within = child.get("start_within")
    if start_within is not None:
        check_positive("a child's start_within", start_within)
    return RunSpec(
        agent=str(agent),
        input=_round_trip(child.get("input"), "a child's input"),
        priority=check_priority("a child's priority", child.get("priority", 0)),
        max_attempts=check_int("a child's max_attempts", child.get("max_attempts", 3)),
        budget=None if budget is None else float(budget),
        timeout=None if timeout is None else float(timeout),
        start_within=None if start_within is None else float(start_within),
    )
