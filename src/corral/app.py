"""``Corral``: the composition root. It owns one store and the registry of agents, validates
everything a caller hands it, and builds workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any

from corral.clock import Clock, system_clock
from corral.config import PlanSpec, StoreConfig
from corral.contention.shared import SharedScheduler
from corral.dispatch.schedule import (
    DEFAULT_CATCH_UP,
    Schedule,
    ScheduleState,
    check_schedule_name,
    check_time_zone,
    encode_definition,
    stored_name,
)
from corral.errors import InvalidInput, RunNotFound, ScheduleNotFound, UnknownAgent
from corral.models import (
    JSON,
    JournalEntry,
    QueueStats,
    Run,
    RunSpec,
    RunStatus,
    WorkerPresence,
)
from corral.runs.context import FanoutLimits
from corral.store import DEFAULT_URL, Store, create_store
from corral.values import (
    MAX_BUDGET,
    MAX_SECONDS,
    MAX_TIMESTAMP,
    check_amount,
    check_finite,
    check_int,
    check_json,
    check_name,
    check_positive,
    check_priority,
    check_weight,
)
from corral.worker import AgentFn, Worker, WorkerOptions
from corral.worker.retention import RETENTION_INTERVAL

#: journal sequence numbers (64-bit columns) and the longest page of a journal read
MAX_SEQ = 2**62
MAX_JOURNAL_PAGE = 10_000


class Corral:
    """An app: a database, the agents it can run, and the defaults its workers use.

    >>> app = Corral("sqlite:///corral.db")
    >>> @app.agent("echo")
    ... async def echo(ctx, input):
    ...     return input
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        lease_ttl: float = 30.0,
        max_attempts: int = 3,
        max_children: int = 16,
        max_depth: int = 3,
        config: StoreConfig | None = None,
        clock: Clock = system_clock,
        store: Store | None = None,
    ) -> None:
        check_positive("lease_ttl", lease_ttl, maximum=MAX_SECONDS)
        check_int("max_attempts", max_attempts)
        check_int("max_children", max_children)
        check_int("max_depth", max_depth)
        if config is not None and not isinstance(config, StoreConfig):
            raise InvalidInput(f"config must be a StoreConfig, not {type(config).__name__}")
        self.url = url or DEFAULT_URL
        #: fan-out limits for runs of this app (a tenant's own limits, when set, win)
        self.limits = FanoutLimits(max_children=max_children, max_depth=max_depth)
        self.lease_ttl = float(lease_ttl)
        self.max_attempts = max_attempts
        self.store: Store = store or create_store(self.url, config, clock)
        self.agents: dict[str, AgentFn] = {}
        #: seconds one attempt of an agent may run, by agent name (agents without: no limit)
        self.agent_timeouts: dict[str, float] = {}
        #: recurring runs, by schedule name (every worker of the app submits them; each tick
        #: gets one run)
        self.schedules: dict[str, Schedule] = {}
        #: shared resources (capacity and rate limits for all workers), by name
        self.resources: dict[str, SharedScheduler] = {}
        #: each shared resource's declaration, to declare it again on another database
        self._resource_args: dict[str, dict[str, Any]] = {}
        self._config = config
        self._clock = clock
        self._opened = False
        self._open_lock = asyncio.Lock()

    # -- registry -----------------------------------------------------------------------------

    def agent(
        self, name: str | None = None, *, timeout: float | None = None
    ) -> Callable[[AgentFn], AgentFn]:
        """Register an ``async def agent(ctx, input)`` under ``name`` (default: its __name__).

        ``timeout``: seconds one attempt may run (default: no limit). Past it the worker
        cancels the agent and fails the attempt with ``AgentTimeout``, retried with backoff
        up to the run's max attempts like any failure. Time a waiting parent spends
        suspended is not counted (the attempt ended there). An agent that swallows the
        cancellation cannot be stopped: its attempt fails all the same once the worker's
        ``stop_grace`` has passed, and its task keeps its slot until it ends."""
        seconds = (
            None if timeout is None else check_positive("timeout", timeout, maximum=MAX_SECONDS)
        )

        def register(fn: AgentFn) -> AgentFn:
            if not asyncio.iscoroutinefunction(fn):
                raise TypeError(f"agent {fn!r} must be an async def function")
            agent_name = name or fn.__name__
            check_name("agent", agent_name)
            if agent_name in self.agents:
                raise ValueError(f"an agent named {agent_name!r} is already registered")
            self.agents[agent_name] = fn
            if seconds is not None:
                self.agent_timeouts[agent_name] = seconds
            return fn

        return register

    def schedule(
        self,
        name: str,
        agent: str,
        input: JSON = None,
        *,
        cron: str | None = None,
        every: float | None = None,
        tz: str = "UTC",
        tenant: str = "default",
        priority: int = 0,
        max_attempts: int | None = None,
        timeout: float | None = None,
        start_within: float | None = None,
        catch_up: float = DEFAULT_CATCH_UP,
    ) -> Schedule:
        """A run of ``agent`` with ``input`` for ``tenant`` at every tick of ``cron`` (five
        fields, in IANA time zone ``tz``: ``"0 9 * * 1-5"``) or of ``every`` seconds (multiples
        of it since the Unix epoch). The app's workers submit the runs: each tick gets one
        run however many workers run, through the same fair dispatch as any run. A schedule
        starts with the first tick after it is first seen. A tick missed while no worker ran
        gets its run if a worker comes back within ``catch_up`` seconds of it (only the
        latest missed tick; older ones are skipped; a tick up to 30 s late is on time
        whatever ``catch_up`` says). ``priority``, ``max_attempts``,
        ``timeout`` and ``start_within`` are those of each run, as in ``submit``. ``name``
        may not contain a slash (a stored schedule's full name is ``"tenant/name"``, and the
        two share one table of ticks), nor be "." or ".." (as a stored schedule's may not)."""
        check_schedule_name(name)
        if name in self.schedules:
            raise ValueError(f"a schedule named {name!r} is already registered")
        schedule = self._build_schedule(
            name,
            agent,
            input,
            cron=cron,
            every=every,
            tz=tz,
            tenant=tenant,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            start_within=start_within,
            catch_up=catch_up,
        )
        self.schedules[name] = schedule
        return schedule

    async def create_schedule(
        self,
        name: str,
        agent: str,
        input: JSON = None,
        *,
        cron: str | None = None,
        every: float | None = None,
        tz: str = "UTC",
        tenant: str = "default",
        priority: int = 0,
        max_attempts: int | None = None,
        timeout: float | None = None,
        start_within: float | None = None,
        catch_up: float = DEFAULT_CATCH_UP,
    ) -> Schedule:
        """As ``schedule``, but stored in the database rather than declared in code: for
        schedules that tenants set up while the service runs (``POST /v1/schedules``). Its
        full name is ``"tenant/name"``, so each tenant names its own. It starts at once: its
        first run is at the first tick after now, submitted by any worker of the deployment
        (each reads the stored schedules every few seconds). ``name`` may not contain a
        slash, nor be "." or ".." (its URL, ``/v1/schedules/{name}``, would not reach it).
        Raises ``ScheduleExists`` for a name the tenant uses (delete it to change it) and
        ``ScheduleLimitReached`` past ``StoreConfig.max_schedules_per_tenant``."""
        check_schedule_name(name)
        check_name("tenant", tenant)
        full = stored_name(tenant, name)
        check_name("schedule", full)
        built = self._build_schedule(
            full,
            agent,
            input,
            cron=cron,
            every=every,
            tz=tz,
            tenant=tenant,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            start_within=start_within,
            catch_up=catch_up,
        )
        schedule = replace(built, definition=encode_definition(built))
        await self.open()
        await self.store.create_schedule(schedule)
        return schedule

    async def delete_schedule(self, name: str, *, tenant: str = "default") -> None:
        """Delete ``tenant``'s stored schedule ``name``: no tick after this gets a run (runs
        already submitted stay). Raises ``ScheduleNotFound`` when there is none."""
        await self._change_schedule(self.store.delete_schedule, name, tenant)

    async def pause_schedule(self, name: str, *, tenant: str = "default") -> None:
        """Pause ``tenant``'s stored schedule ``name``: its ticks get no run until
        ``resume_schedule``. Raises ``ScheduleNotFound`` when there is none."""
        await self._change_schedule(self.store.pause_schedule, name, tenant)

    async def resume_schedule(self, name: str, *, tenant: str = "default") -> None:
        """Resume ``tenant``'s paused stored schedule ``name`` from its next tick (the ticks
        it was paused through are not made up for). Raises ``ScheduleNotFound``."""
        await self._change_schedule(self.store.resume_schedule, name, tenant)

    async def _change_schedule(
        self, change: Callable[[str], Awaitable[bool]], name: str, tenant: str
    ) -> None:
        """``change`` (a store verb) applied to ``tenant``'s stored schedule ``name``;
        ``ScheduleNotFound`` when the verb found none."""
        # not check_path_name: a schedule named ".." before creation refused it can still be
        # paused or deleted (over HTTP as /v1/schedules/%2E%2E)
        check_name("schedule", name)
        check_name("tenant", tenant)
        await self.open()
        full = stored_name(tenant, name)
        if not await change(full):
            raise ScheduleNotFound(full)

    def _build_schedule(
        self,
        name: str,
        agent: str,
        input: JSON,
        *,
        cron: str | None,
        every: float | None,
        tz: str,
        tenant: str,
        priority: int,
        max_attempts: int | None,
        timeout: float | None,
        start_within: float | None,
        catch_up: float,
    ) -> Schedule:
        # the run as the schedule will submit it, validated now rather than at its first tick
        spec = self._spec(
            agent=agent,
            input=input,
            tenant=tenant,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            start_within=start_within,
        )
        # here, not in Schedule: a stored definition is read back whatever its zone, so one
        # stored before the rule does not keep every worker from reading the others
        check_time_zone(name, tz)
        return Schedule(name, spec, cron=cron, every=every, tz=tz, catch_up=catch_up)

    async def schedule_states(self, tenant: str | None = None) -> list[ScheduleState]:
        """This app's schedules and those created at run time (``tenant``'s only, if given),
        each with its latest tick, its latest tick that got a run, and its next tick (what
        ``corral schedules list`` and ``GET /v1/schedules`` show)."""
        await self.open()
        ticks = await self.store.schedule_ticks(tenant)
        stored = await self.store.stored_schedules(tenant)
        now = self.store.clock()
        states = []
        for s in [*self.schedules.values(), *stored]:
            if tenant is not None and s.run.tenant != tenant:
                continue
            last_tick, last_run_tick = ticks.get(s.name, (None, None))
            states.append(ScheduleState(s, last_tick, last_run_tick, s.next_tick(now)))
        return states

    def shared_resource(
        self,
        name: str,
        *,
        capacity: int,
        rpm: int | None = None,
        tpm: int | None = None,
        alpha: float = 0.25,
        max_waiters: int = 100,
        max_waiters_per_agent: int | None = None,
        lease_ttl: float = 10.0,
    ) -> SharedScheduler:
        """Declare a resource every worker of this app shares (an LLM API): at most
        ``capacity`` calls at once, ``rpm`` requests and ``tpm`` tokens per minute across all
        processes. Agents use it with ``async with ctx.acquire(name, tokens=...)``."""
        check_name("resource", name)
        if name in self.resources:
            raise ValueError(f"a shared resource named {name!r} is already declared")
        args: dict[str, Any] = {
            "capacity": capacity,
            "rpm": rpm,
            "tpm": tpm,
            "alpha": alpha,
            "max_waiters": max_waiters,
            "max_waiters_per_agent": max_waiters_per_agent,
            "lease_ttl": lease_ttl,
        }
        scheduler = SharedScheduler(self.store, name, **args)
        self.resources[name] = scheduler
        self._resource_args[name] = args
        return scheduler

    def with_database(self, url: str) -> Corral:
        """This app on another database: the same agents, shared resources, fan-out limits
        and defaults (how ``corral worker --db URL`` runs an app whose module names another
        database). Not opened."""
        other = Corral(
            url,
            lease_ttl=self.lease_ttl,
            max_attempts=self.max_attempts,
            max_children=self.limits.max_children,
            max_depth=self.limits.max_depth,
            config=self._config,
            clock=self._clock,
        )
        other.agents.update(self.agents)
        other.agent_timeouts.update(self.agent_timeouts)
        other.schedules.update(self.schedules)
        for name, args in self._resource_args.items():
            other.shared_resource(name, **args)
        return other

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        async with self._open_lock:
            if not self._opened:
                await self.store.open()
                self._opened = True

    async def close(self) -> None:
        async with self._open_lock:
            for scheduler in self.resources.values():
                # the store closes next: nothing could renew a hold left behind
                await scheduler.close(keep_renewing=False)
            if self._opened:
                await self.store.close()
                self._opened = False

    async def __aenter__(self) -> Corral:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- client API ---------------------------------------------------------------------------

    async def submit(
        self,
        agent: str,
        input: JSON = None,
        *,
        tenant: str = "default",
        priority: int = 0,
        idempotency_key: str | None = None,
        not_before: float | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        budget: float | None = None,
        timeout: float | None = None,
        start_within: float | None = None,
    ) -> str:
        """Accept a run and return its id; never waits for execution. ``timeout``: seconds
        one attempt of this run may take, in place of its agent's timeout and the worker's
        default (past it the attempt fails with ``AgentTimeout`` and is retried).
        ``start_within``: seconds after the run is due (now, or its ``delay``/``not_before``)
        within which it must start; a run not started by then ends failed with
        ``RunExpired``, its agent never called (for work nobody wants late)."""
        spec = self._spec(
            agent=agent,
            input=input,
            tenant=tenant,
            priority=priority,
            idempotency_key=idempotency_key,
            not_before=not_before,
            delay=delay,
            max_attempts=max_attempts,
            budget=budget,
            timeout=timeout,
            start_within=start_within,
        )
        await self.open()
        (run_id,) = await self.store.submit([spec])
        return run_id

    async def submit_many(self, items: Iterable[RunSpec | Mapping[str, Any]]) -> list[str]:
        """Accept many runs in one transaction: all are accepted or none is."""
        if isinstance(items, Mapping | str | bytes):
            raise InvalidInput("submit_many takes a list of runs (RunSpecs or mappings), not one")
        specs = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping | RunSpec):
                raise InvalidInput(
                    f"item {index}: a run is a RunSpec or a mapping, not {type(item).__name__}"
                )
            try:
                specs.append(
                    self._spec(**dict(item))
                    if isinstance(item, Mapping)
                    else self._spec(**_spec_fields(item))
                )
            except TypeError as exc:
                raise InvalidInput(f"item {index}: {exc}") from exc
            except UnknownAgent as exc:  # its own code kept, for HTTP's error body
                raise UnknownAgent(exc.name, exc.known, where=f"item {index}") from None
            except InvalidInput as exc:
                raise InvalidInput(f"item {index}: {exc}") from exc
        if not specs:
            return []
        await self.open()
        return await self.store.submit(specs)

    async def get(self, run_id: str) -> Run:
        check_name("run id", run_id)
        await self.open()
        run = await self.store.get(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    async def cancel(self, run_id: str) -> Run:
        check_name("run id", run_id)
        await self.open()
        return await self.store.cancel(run_id)

    async def retry(self, run_id: str, *, attempts: int | None = None) -> Run:
        """Queue a dead-lettered (``failed``) root run again, with ``attempts`` more attempts
        (default: as many as it was submitted with). Its journal stays, so it replays what
        already succeeded instead of redoing it. ``RunNotRetryable`` for a run that has not
        failed or is a child (retry its root); ``BackpressureError`` over the tenant's
        queued quota (the run stays failed)."""
        check_name("run id", run_id)
        if attempts is not None:
            check_int("attempts", attempts)
        await self.open()
        return await self.store.retry(run_id, attempts=attempts)

    async def list_runs(
        self,
        *,
        tenant: str | None = None,
        status: RunStatus | str | None = None,
        agent: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]:
        if status is not None:
            try:
                status = RunStatus(status)
            except ValueError:
                raise InvalidInput(
                    f"unknown status {status!r}; one of {', '.join(s.value for s in RunStatus)}"
                ) from None
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput("limit must be an integer from 1 to 1000")
        for what, value in (("tenant", tenant), ("agent", agent), ("before", before)):
            if value is not None:
                check_name(what, value)
        await self.open()
        return await self.store.list_runs(
            tenant=tenant, status=status, agent=agent, limit=limit, before=before
        )

    async def iter_runs(
        self,
        *,
        tenant: str | None = None,
        status: RunStatus | str | None = None,
        agent: str | None = None,
        page: int = 1000,
    ) -> AsyncIterator[list[Run]]:
        """Every run ``list_runs`` would list with these filters, newest first, ``page`` at a
        time. The id cursor pages on past runs that change meanwhile (a run retried leaves
        the failed listing without moving the next page)."""
        before: str | None = None
        while True:
            runs = await self.list_runs(
                tenant=tenant, status=status, agent=agent, limit=page, before=before
            )
            if runs:
                yield runs
            if len(runs) < page:
                return
            before = runs[-1].id

    async def journal(
        self, run_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[JournalEntry]:
        check_int("after", after, minimum=0, maximum=MAX_SEQ)
        check_int("limit", limit, maximum=MAX_JOURNAL_PAGE)
        await self.get(run_id)
        return await self.store.journal(run_id, after=after, limit=limit)

    async def wait(self, run_id: str, *, timeout: float | None = None, poll: float = 0.05) -> Run:
        """Poll until the run ends (for scripts and tests; services should not block on runs)."""
        async with asyncio.timeout(timeout):
            while True:
                run = await self.get(run_id)
                if run.done:
                    return run
                await asyncio.sleep(poll)

    async def stats(self) -> QueueStats:
        await self.open()
        return await self.store.stats()

    async def workers(self) -> list[WorkerPresence]:
        """The workers on this database, as each last reported itself (every third of its
        lease TTL): slots busy, agents stuck past their stop, draining; ``state(now)`` is
        ``lost`` for one not heard from for a lease TTL (killed, say: shown for an hour)."""
        await self.open()
        return await self.store.workers()

    async def purge_finished(self, older_than: float, *, limit: int = 1000) -> int:
        """Delete runs that ended more than ``older_than`` seconds ago, with their journals,
        at most ``limit`` top-level runs (each with all its descendants) per call; a tree goes
        only once every run in it has ended that long ago. Returns the runs deleted (0: none
        left to delete). An idempotency key of a deleted run can be used again."""
        check_amount("older_than", older_than)
        check_int("limit", limit)
        await self.open()
        return await self.store.purge_finished(self.store.clock() - float(older_than), limit=limit)

    # -- tenancy ------------------------------------------------------------------------------

    async def set_plan(
        self,
        name: str,
        *,
        cap: int | None = None,
        weight: float = 1.0,
        max_queued: int | None = None,
    ) -> None:
        check_name("plan", name)
        if cap is not None:
            check_int("cap", cap)
        if max_queued is not None:
            check_int("max_queued", max_queued)
        check_weight("weight", weight)
        await self.open()
        await self.store.set_plan(PlanSpec(name, cap, float(weight), max_queued))

    async def plans(self) -> list[PlanSpec]:
        await self.open()
        return await self.store.plans()

    async def set_tenant(
        self,
        tenant: str,
        *,
        plan: str | None = None,
        cap: int | None = None,
        weight: float | None = None,
        max_queued: int | None = None,
    ) -> None:
        check_name("tenant", tenant)
        if plan is not None:
            check_name("plan", plan)
        if cap is not None:
            check_int("cap", cap)
        if max_queued is not None:
            check_int("max_queued", max_queued)
        if weight is not None:
            check_weight("weight", weight)
        await self.open()
        await self.store.set_tenant(
            tenant, plan=plan, cap=cap, weight=weight, max_queued=max_queued
        )

    async def set_tenant_fanout(
        self, tenant: str, *, max_children: int | None = None, max_depth: int | None = None
    ) -> None:
        """Per-tenant fan-out limits (None: the app's)."""
        check_name("tenant", tenant)
        for what, value in (("max_children", max_children), ("max_depth", max_depth)):
            if value is not None:
                check_int(what, value)
        await self.open()
        await self.store.set_tenant_fanout(tenant, max_children=max_children, max_depth=max_depth)

    async def set_global_cap(self, cap: int | None) -> None:
        if cap is not None:
            check_int("global cap", cap)
        await self.open()
        await self.store.set_global_cap(cap)

    # -- workers ------------------------------------------------------------------------------

    def worker(
        self,
        *,
        concurrency: int = 10,
        lease_ttl: float | None = None,
        drain_timeout: float = 30.0,
        poll_interval: float = 1.0,
        retry_base: float = 1.0,
        retry_cap: float = 300.0,
        worker_id: str | None = None,
        express_slots: int = 0,
        express_below: int = 1,
        agent_timeout: float | None = None,
        retain: float | None = None,
        retention_interval: float = RETENTION_INTERVAL,
        handoffs: bool = True,
        schedules: bool = True,
        stop_grace: float = 5.0,
    ) -> Worker:
        """A worker of this app's agents: ``concurrency`` slots, plus ``express_slots`` that
        only runs of tenants with fewer than ``express_below`` runs in flight take.
        ``agent_timeout`` (seconds) bounds each attempt of the agents registered without a
        ``timeout`` of their own (see ``agent``). With ``retain`` (seconds), it also deletes,
        every ``retention_interval`` seconds, the run trees that ended more than ``retain``
        seconds ago (as ``purge_finished`` does). With
        ``handoffs`` (PostgreSQL), a waiting worker offers its free slots and runs submitted
        meanwhile come to it already leased; off, it only leases. ``worker_id`` names the
        worker (default: host and process id); its id is that name plus a random part, so
        two workers given the same name never share leases, offers or the runs a stopping
        worker gives back (``Worker.worker_id`` is the full id, as runs show it). With
        ``schedules`` (the default) it submits the runs of the app's schedules, and of those
        created at run time (``create_schedule``), as their ticks come; off, it leaves them
        to other workers. An agent told to stop (its run cancelled, its timeout passed, the
        worker draining) has ``stop_grace`` seconds to end; one that ignores it has its run
        ended without it (cancelled, failed with ``AgentTimeout``, released) and its task
        left running in its slot until it ends (``Worker.stuck``)."""
        check_int("concurrency", concurrency)
        check_int("express_slots", express_slots, minimum=0)
        check_int("express_below", express_below)
        check_amount("drain_timeout", drain_timeout, maximum=MAX_SECONDS)
        check_positive("poll_interval", poll_interval, maximum=MAX_SECONDS)
        check_amount("retry_base", retry_base, maximum=MAX_SECONDS)
        check_amount("retry_cap", retry_cap, maximum=MAX_SECONDS)
        if retain is not None:
            check_amount("retain", retain, maximum=MAX_SECONDS)
        if agent_timeout is not None:
            check_positive("agent_timeout", agent_timeout, maximum=MAX_SECONDS)
        check_positive("retention_interval", retention_interval, maximum=MAX_SECONDS)
        check_amount("stop_grace", stop_grace, maximum=MAX_SECONDS)
        ttl = self.lease_ttl if lease_ttl is None else lease_ttl
        check_positive("lease_ttl", ttl, maximum=MAX_SECONDS)
        options = WorkerOptions(
            concurrency=concurrency,
            lease_ttl=float(ttl),
            drain_timeout=float(drain_timeout),
            poll_interval=float(poll_interval),
            retry_base=float(retry_base),
            retry_cap=float(retry_cap),
            limits=self.limits,
            resources=self.resources,
            timeouts=(
                self.agent_timeouts
                if agent_timeout is None
                else {name: self.agent_timeouts.get(name, agent_timeout) for name in self.agents}
            ),
            express_slots=express_slots,
            express_below=express_below,
            retain=None if retain is None else float(retain),
            retention_interval=float(retention_interval),
            handoffs=bool(handoffs),
            schedules=tuple(self.schedules.values()) if schedules else (),
            stored_schedules=bool(schedules),
            stop_grace=float(stop_grace),
        )
        return Worker(self.store, self.agents, options, worker_id)

    async def run_worker(self, **options: Any) -> Worker:
        """Open the store and run one worker until it is stopped (or the store is idle, with
        ``until_idle=True``); the worker, once it has stopped. Agents that ignored their stop
        past the grace may still be running then (``Worker.stuck``): ``asyncio.run`` would
        cancel them again and wait for them without a bound, so a process that is meant to
        end should then end with ``os._exit``, as ``corral worker`` does."""
        until_idle = bool(options.pop("until_idle", False))
        await self.open()
        worker = self.worker(**options)
        await worker.run(until_idle=until_idle)
        return worker

    # -- validation ---------------------------------------------------------------------------

    def _spec(
        self,
        *,
        agent: str,
        input: JSON = None,
        tenant: str = "default",
        priority: int = 0,
        idempotency_key: str | None = None,
        not_before: float | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        budget: float | None = None,
        timeout: float | None = None,
        start_within: float | None = None,
    ) -> RunSpec:
        check_name("agent", agent)
        if self.agents and agent not in self.agents:
            raise UnknownAgent(agent, list(self.agents))
        check_name("tenant", tenant)
        check_priority("priority", priority)
        if idempotency_key is not None:
            check_name("idempotency_key", idempotency_key)
        check_json(input, "input")
        attempts = self.max_attempts if max_attempts is None else max_attempts
        check_int("max_attempts", attempts)
        if delay is not None:
            check_amount("delay", delay, maximum=MAX_SECONDS)
            if not_before is not None:
                raise InvalidInput("give delay or not_before, not both")
            not_before = self.store.clock() + delay
        if not_before is not None:
            check_finite("not_before", not_before, maximum=MAX_TIMESTAMP)
        if budget is not None:
            check_amount("budget", budget, maximum=MAX_BUDGET)
        if timeout is not None:
            check_positive("timeout", timeout, maximum=MAX_SECONDS)
        if start_within is not None:
            check_positive("start_within", start_within, maximum=MAX_SECONDS)
        return RunSpec(
            agent=agent,
            input=input,
            tenant=tenant,
            priority=priority,
            idempotency_key=idempotency_key,
            not_before=not_before,
            max_attempts=attempts,
            budget=None if budget is None else float(budget),
            timeout=None if timeout is None else float(timeout),
            start_within=None if start_within is None else float(start_within),
        )


def _spec_fields(spec: RunSpec) -> dict[str, Any]:
    return {
        "agent": spec.agent,
        "input": spec.input,
        "tenant": spec.tenant,
        "priority": spec.priority,
        "idempotency_key": spec.idempotency_key,
        "not_before": spec.not_before,
        "max_attempts": spec.max_attempts,
        "budget": spec.budget,
        "timeout": spec.timeout,
        "start_within": spec.start_within,
    }


__all__ = ["Corral"]
