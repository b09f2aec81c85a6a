"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI
document). Every string that reaches the store is checked for what the databases refuse
(NUL, lone surrogates), so such input is a 422, never a driver error."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from corral.dispatch.schedule import DEFAULT_CATCH_UP, ScheduleState
from corral.models import JournalEntry, Run, RunStatus, TenantStats, WorkerPresence, WorkerState
from corral.values import MAX_NAME, MAX_PRIORITY, text_problem


def clean_text(value: str) -> str:
    """Refuse strings PostgreSQL or SQLite cannot store as text."""
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def clean_name(value: str | None) -> str | None:
    """A name given in a query (a tenant, an agent): text (``clean_text``) that is not blank,
    refused alike for every key. A tenant key's filter naming another tenant answers an
    empty page, so ``?tenant=%20`` was an empty 200 to it and a 422 to an admin key."""
    if value is None:
        return None
    if not value.strip():
        raise ValueError("is blank (a name needs a character other than spaces)")
    return clean_text(value)


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(clean_text)]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code (corral.errors classes' .code).")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class SubmitRequest(BaseModel):
    # strict: "7" or true is not a priority here either (the Python API refuses them)
    model_config = ConfigDict(extra="forbid", strict=True)

    agent: Name = Field(description="Name of a registered agent.")
    input: Any = Field(default=None, description="Any JSON value, passed to the agent.")
    tenant: Name | None = Field(
        default=None,
        description="The tenant the run is for (default: the key's). An admin key names any "
        "(a platform's backend submitting for each customer); a tenant key naming another "
        "gets 403 and nothing is submitted.",
    )
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    budget: float | None = Field(
        default=None,
        ge=0,
        le=1e15,
        allow_inf_nan=False,
        description="Budget of the run tree (charges of the run and its descendants).",
    )
    idempotency_key: Name | None = Field(
        default=None,
        description="A repeated key (per tenant) returns the same run.",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=1e9,
        allow_inf_nan=False,
        description="Seconds one attempt may run, in place of the agent's timeout; past it "
        "the attempt fails with agent_timeout and is retried.",
    )
    start_within: float | None = Field(
        default=None,
        gt=0,
        le=1e9,
        allow_inf_nan=False,
        description="Seconds after it is due within which the run must start; a run not "
        "started by then ends failed (run_expired), its agent never called.",
    )
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Attempts before the run is dead-lettered (default: the app's, 3).",
    )
    delay: float | None = Field(
        default=None,
        ge=0,
        le=1e9,
        allow_inf_nan=False,
        description="Seconds from now before the run may start.",
    )
    not_before: float | None = Field(
        default=None,
        ge=0,
        le=1e11,
        allow_inf_nan=False,
        description="Unix time before which the run may not start (not with delay).",
    )

    @model_validator(mode="after")
    def _one_start_time(self) -> SubmitRequest:
        if self.delay is not None and self.not_before is not None:
            raise ValueError("give delay or not_before, not both")
        return self

    def run_fields(self, tenant: str, idempotency_key: str | None) -> dict[str, Any]:
        """What ``Corral.submit_many`` takes for this run, for ``tenant`` (the one the
        caller may act for: see ``Principal.acting_for``)."""
        return {
            "agent": self.agent,
            "input": self.input,
            "tenant": tenant,
            "priority": self.priority,
            "idempotency_key": idempotency_key,
            "budget": self.budget,
            "timeout": self.timeout,
            "start_within": self.start_within,
            "max_attempts": self.max_attempts,
            "delay": self.delay,
            "not_before": self.not_before,
        }


#: most runs one batch submit takes (one transaction)
MAX_BATCH = 1000


class BatchSubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    runs: list[SubmitRequest] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="The runs, each as for POST /v1/runs; accepted all together or not at all.",
    )


class SubmitResponse(BaseModel):
    run_id: str
    status: RunStatus


class BatchSubmitResponse(BaseModel):
    runs: list[SubmitResponse] = Field(description="In the order of the request's runs.")


class RunOut(BaseModel):
    id: str
    tenant: str
    agent: str
    status: RunStatus
    priority: int
    attempts: int
    max_attempts: int
    input: Any = None
    result: Any = None
    error: Any = None
    created_at: float
    started_at: float | None
    finished_at: float | None
    available_at: float
    cancel_requested: bool
    idempotency_key: str | None
    parent_id: str | None
    root_id: str
    depth: int
    budget: float | None
    spent: float
    timeout: float | None = None
    start_by: float | None = None

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls(
            id=run.id,
            tenant=run.tenant,
            agent=run.agent,
            status=run.status,
            priority=run.priority,
            attempts=run.attempts,
            max_attempts=run.max_attempts,
            input=run.input,
            result=run.result,
            error=run.error,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            available_at=run.available_at,
            cancel_requested=run.cancel_requested,
            idempotency_key=run.idempotency_key,
            parent_id=run.parent_id,
            root_id=run.root_id,
            depth=run.depth,
            budget=run.budget,
            spent=run.spent,
            timeout=run.timeout,
            start_by=run.start_by,
        )


class RunPage(BaseModel):
    runs: list[RunOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next (older) page; null on the last page."
    )


class RunChildren(BaseModel):
    run_id: str
    children: list[RunOut]


class JournalEntryOut(BaseModel):
    seq: int
    kind: str
    name: str | None
    data: Any = None
    epoch: int
    created_at: float

    @classmethod
    def of(cls, entry: JournalEntry) -> JournalEntryOut:
        return cls(
            seq=entry.seq,
            kind=entry.kind,
            name=entry.name,
            data=entry.data,
            epoch=entry.epoch,
            created_at=entry.created_at,
        )


class JournalPage(BaseModel):
    run_id: str
    entries: list[JournalEntryOut]
    next_after: int = Field(description="Pass as ?after= to read on from here.")


class TenantQueue(BaseModel):
    tenant: str
    plan: str
    queued: int
    queued_later: int = Field(
        description="Of queued, the runs not due yet (a not_before ahead, a retry's backoff)."
    )
    in_flight: int
    cap: int | None
    weight: float
    oldest_queued_age: float
    succeeded: int = Field(description="Runs of the tenant that ever succeeded.")
    failed: int = Field(description="Runs of the tenant that ever failed (dead letters).")
    cancelled: int = Field(description="Runs of the tenant that were ever cancelled.")

    @classmethod
    def of(cls, t: TenantStats) -> TenantQueue:
        return cls(
            tenant=t.tenant,
            plan=t.plan,
            queued=t.queued,
            queued_later=t.queued_later,
            in_flight=t.in_flight,
            cap=t.cap,
            weight=t.weight,
            oldest_queued_age=t.oldest_queued_age,
            succeeded=t.succeeded,
            failed=t.failed,
            cancelled=t.cancelled,
        )


class WorkerOut(BaseModel):
    worker_id: str
    state: WorkerState = Field(
        description="running; draining (stopping: leases nothing more); lost: not heard "
        "from for a lease TTL (killed, frozen or cut off; shown for an hour)."
    )
    host: str
    pid: int
    started_at: float
    seen_at: float = Field(description="Its latest report (Unix time), every third of its TTL.")
    lease_ttl: float
    concurrency: int
    express_slots: int
    busy: int = Field(description="Slots taken, stuck agents' included.")
    stuck: int = Field(
        description="Agents that ignored a stop past the grace and still run, each in a slot."
    )
    completed: int = Field(description="Runs it finished since it started.")
    agents: list[str] = Field(description="The agents it executes, by name.")

    @classmethod
    def of(cls, w: WorkerPresence, now: float) -> WorkerOut:
        return cls(
            worker_id=w.worker_id,
            state=w.state(now),
            host=w.host,
            pid=w.pid,
            started_at=w.started_at,
            seen_at=w.seen_at,
            lease_ttl=w.lease_ttl,
            concurrency=w.concurrency,
            express_slots=w.express_slots,
            busy=w.busy,
            stuck=w.stuck,
            completed=w.completed,
            agents=list(w.agents),
        )


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class QueuesOut(BaseModel):
    tenant: str | None = Field(
        description="The key's tenant, whose queue this is; null for an admin key (all tenants)."
    )
    tenants: list[TenantQueue]
    queued: int
    in_flight: int
    oldest_queued_age: float
    global_cap: int | None
    by_status: dict[str, int]
    age_target: float
    slots_per_worker: int
    suggested_workers: int = Field(
        description="Workers the visible load needs (see docs/service.md for the formula)."
    )


class ScheduleRequest(BaseModel):
    """A recurring run for the caller's tenant, stored until deleted."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name = Field(
        description="The schedule's name within the tenant: no '/', and not '.' or '..' "
        "(its URL, /v1/schedules/{name}, would not reach it)."
    )
    agent: Name = Field(description="Name of a registered agent.")
    input: Any = Field(default=None, description="Any JSON value, passed to each run.")
    cron: str | None = Field(
        default=None,
        max_length=200,
        description='Five cron fields ("0 9 * * 1-5"), in time zone tz; or every.',
    )
    every: float | None = Field(
        default=None,
        ge=1,
        le=1e9,
        allow_inf_nan=False,
        description="Seconds between ticks (multiples of it since the Unix epoch); or cron.",
    )
    tz: Name = Field(
        default="UTC",
        description="IANA time zone of the cron fields ('Europe/Berlin'); not 'localtime', "
        "the zone of whichever machine runs the schedule.",
    )
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    timeout: float | None = Field(default=None, gt=0, le=1e9, allow_inf_nan=False)
    start_within: float | None = Field(default=None, gt=0, le=1e9, allow_inf_nan=False)
    catch_up: float = Field(
        default=DEFAULT_CATCH_UP,
        ge=0,
        le=1e9,
        allow_inf_nan=False,
        description="A tick missed while no worker ran gets its run if one comes back within "
        "this many seconds.",
    )

    @model_validator(mode="after")
    def _one_period(self) -> ScheduleRequest:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give cron or every, one of the two")
        return self


class ScheduleOut(BaseModel):
    name: str = Field(
        description="The schedule's full name: as declared in code, or tenant/name for one "
        "created at run time."
    )
    stored: bool = Field(
        description="Created at run time (POST /v1/schedules), so deletable; false: declared "
        "in the app's code."
    )
    paused_at: float | None = Field(
        default=None,
        description="When a stored schedule was paused (Unix time); null: it runs.",
    )
    when: str = Field(description="The ticks: a cron expression (and time zone) or a period.")
    agent: str
    tenant: str
    input: Any = None
    last_tick: float | None = Field(
        description="The latest tick the schedule has reached (Unix time; null: not yet seen "
        "by a worker)."
    )
    last_run_tick: float | None = Field(
        description="The latest tick that got a run; below last_tick, that tick was skipped."
    )
    next_tick: float

    @classmethod
    def of(cls, state: ScheduleState) -> ScheduleOut:
        schedule = state.schedule
        return cls(
            name=schedule.name,
            stored=schedule.definition is not None,
            paused_at=schedule.paused_at,
            when=schedule.when,
            agent=schedule.run.agent,
            tenant=schedule.run.tenant,
            input=schedule.run.input,
            last_tick=state.last_tick,
            last_run_tick=state.last_run_tick,
            next_tick=state.next_tick,
        )


class SchedulesOut(BaseModel):
    schedules: list[ScheduleOut]


class Health(BaseModel):
    status: str
