"""Recurring runs: when a schedule's ticks fall. Pure: the worker's schedule loop
(worker/schedules.py) asks for the latest tick and the next one, and the store decides, in one
transaction, which process submits a tick's run (Store.submit_ticks).

A tick is a moment the schedule names: a cron expression's matches (in the schedule's time
zone, so "0 9 * * *" follows daylight saving time) or the multiples of ``every`` seconds since
the Unix epoch (so every process agrees on them without talking to the others).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from corral.errors import InvalidInput
from corral.models import JSON, RunSpec
from corral.values import MAX_SECONDS, check_between, check_path_name

#: seconds a tick may be late and still get its run: a tick missed while no worker ran (a
#: deploy, an outage) gets its run when a worker comes back within this; older ones are
#: skipped, and only the latest missed tick is ever made up for. (A tick up to 30 s late is
#: on time whatever this says: worker/schedules.py, ON_TIME.)
DEFAULT_CATCH_UP = 3600.0


def check_time_zone(schedule: str, tz: object) -> str:
    """``tz`` if it names a zone of the IANA tz database; InvalidInput naming ``schedule``
    otherwise. ``ZoneInfo`` loads any TZif file under the zone directories, and some are no
    IANA zone: "posixrules", the copies under posix/ and right/ (the latter counting leap
    seconds), and "localtime", on Debian and Ubuntu a link to /etc/localtime, in which a
    schedule ticked in the zone of whichever machine ran it. ``available_timezones`` leaves
    out all but the last."""
    if not isinstance(tz, str):
        raise InvalidInput(f"schedule {schedule!r}: tz must be a string, not {tz!r}")
    if tz == "localtime":
        raise InvalidInput(
            f"schedule {schedule!r}: time zone 'localtime' is the zone of whichever machine "
            "runs the schedule (its /etc/localtime), so its ticks would move from machine to "
            "machine; name an IANA time zone, as 'Europe/Berlin' or 'UTC'"
        )
    if tz not in _iana_zones():
        raise InvalidInput(
            f"schedule {schedule!r}: no IANA time zone named {tz!r} (a name of the tz "
            "database, as 'Europe/Berlin' or 'UTC')"
        )
    return tz


@functools.cache
def _iana_zones() -> frozenset[str]:
    # read once per process: listing them walks the whole zone directory (~40 ms), and what
    # is installed does not change under a running process often enough to matter
    return frozenset(available_timezones())


@dataclass(frozen=True, slots=True)
class Schedule:
    """The run ``run`` submitted at every tick: ``cron`` (five fields, in time zone ``tz``)
    or ``every`` seconds. ``definition`` is set on a schedule created at run time
    (``Corral.create_schedule``): the text its row stores, which a worker's claim of a tick
    must still find there, so a deleted or replaced schedule gets no run from a worker that
    has not yet noticed."""

    name: str
    run: RunSpec
    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    catch_up: float = DEFAULT_CATCH_UP
    definition: str | None = field(default=None, compare=False)
    #: when a stored schedule was paused (None: it runs); its ticks get no run meanwhile
    paused_at: float | None = field(default=None, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise InvalidInput(f"schedule {self.name!r}: give cron or every, one of the two")
        if self.every is not None:
            check_between(
                f"schedule {self.name!r}: every",
                self.every,
                1,
                MAX_SECONDS,
                kind="a number of seconds",
            )
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
            raise InvalidInput(f"schedule {self.name!r}: no time zone named {self.tz!r}") from None
        object.__setattr__(self, "_zone", zone)
        if self.cron is not None:
            if not isinstance(self.cron, str):
                raise InvalidInput(f"schedule {self.name!r}: cron must be a string")
            if len(self.cron.split()) > 5:
                # cronsim takes a sixth field (seconds), which no cron reader expects
                raise InvalidInput(
                    f"schedule {self.name!r}: {self.cron!r} is not a five-field cron expression"
                )
            try:
                CronSim(self.cron, datetime.now(zone))
            except CronSimError as exc:
                raise InvalidInput(
                    f"schedule {self.name!r}: {self.cron!r} is not a cron expression: {exc}"
                ) from None
        check_between(
            f"schedule {self.name!r}: catch_up", self.catch_up, 0, MAX_SECONDS, kind="seconds"
        )

    @property
    def when(self) -> str:
        """The ticks, as a person reads them."""
        if self.cron is not None:
            return f"cron {self.cron!r}" + ("" if self.tz == "UTC" else f" ({self.tz})")
        return f"every {self.every:g} s"

    def latest_tick(self, now: float) -> float:
        """The last tick at or before ``now`` (Unix seconds)."""
        if self.every is not None:
            return math.floor(now / self.every) * self.every
        start = datetime.fromtimestamp(now, self._zone)
        # CronSim looks strictly before its start in reverse: a tick at exactly ``now`` counts
        reverse: datetime = next(CronSim(self.cron or "", _after(start), reverse=True))
        tick = reverse.timestamp()
        # In the second pass of the hour a fall-back repeats, CronSim's reverse walk passes
        # over the ticks of the first ("30 1 * * *" at the second 01:10: the day before's
        # 01:30, not this night's, 40 minutes ago), which next_tick yields: walk forward
        # from it to the last tick at or before now
        while (later := self.next_tick(tick)) <= now:
            tick = later
        return tick

    def next_tick(self, now: float) -> float:
        """The first tick after ``now``."""
        if self.every is not None:
            return (math.floor(now / self.every) + 1) * self.every
        ticks = CronSim(self.cron or "", datetime.fromtimestamp(now, self._zone))
        # In the second pass of the hour a fall-back repeats, CronSim's forward walk starts
        # with the ticks of the first, before now ("30 1 * * *" at the second 01:10: 01:30 of
        # the first pass, 40 minutes ago): the loop, sleeping until that, did not sleep
        tick: float = next(ticks).timestamp()
        while tick <= now:
            tick = next(ticks).timestamp()
        return tick


def check_schedule_name(name: object) -> str:
    """A schedule's own name, in code or stored: a path name (``check_path_name``) without a
    slash. A stored schedule's full name is ``"tenant/name"`` and both kinds tick in one
    table, so a schedule in code named ``"acme/nightly"`` would claim the ticks of tenant
    acme's stored ``"nightly"``."""
    checked = check_path_name("schedule", name)
    if "/" in checked:
        raise InvalidInput(
            f"schedule name {checked!r} may not contain '/' (a stored schedule's full name is "
            "'tenant/name')"
        )
    return checked


def stored_name(tenant: str, name: str) -> str:
    """The name of tenant ``tenant``'s schedule ``name`` among all schedules: a tenant's
    names are its own, and never those of a schedule declared in code without a slash."""
    return f"{tenant}/{name}"


def encode_definition(schedule: Schedule) -> str:
    """The text a schedule created at run time is stored as (its tenant and name are columns)."""
    run = schedule.run
    return json.dumps(
        {
            "agent": run.agent,
            "input": run.input,
            "priority": run.priority,
            "max_attempts": run.max_attempts,
            "timeout": run.timeout,
            "start_within": run.start_within,
            "cron": schedule.cron,
            "every": schedule.every,
            "tz": schedule.tz,
            "catch_up": schedule.catch_up,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def decode_definition(
    name: str, tenant: str, definition: str, paused_at: float | None = None
) -> Schedule:
    """The schedule stored as ``definition`` under ``name`` (the inverse of
    ``encode_definition``)."""
    d: dict[str, JSON] = json.loads(definition)
    run = RunSpec(
        agent=str(d["agent"]),
        input=d["input"],
        tenant=tenant,
        priority=int(d["priority"]),
        max_attempts=int(d["max_attempts"]),
        timeout=_seconds(d["timeout"]),
        start_within=_seconds(d["start_within"]),
    )
    return Schedule(
        name,
        run,
        cron=None if d["cron"] is None else str(d["cron"]),
        every=_seconds(d["every"]),
        tz=str(d["tz"]),
        catch_up=float(d["catch_up"]),
        definition=definition,
        paused_at=paused_at,
    )


def _seconds(value: JSON) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A schedule as the store last saw it: its latest tick (None: no worker has seen it
    yet), its latest tick that got a run (None: none yet; below ``last_tick``, that tick was
    skipped) and its next tick."""

    schedule: Schedule
    last_tick: float | None
    last_run_tick: float | None
    next_tick: float


@dataclass(frozen=True, slots=True)
class ScheduledTick:
    """A tick of ``schedule`` as a worker offers it to the store (``Store.submit_ticks``)."""

    schedule: Schedule
    tick: float
    #: False: the tick is too late to make up for; the schedule moves past it unrun
    submit: bool = True


@dataclass(frozen=True, slots=True)
class TickResult:
    """What became of an offered tick: its run, if this caller submitted one, or the error
    that kept the store from taking the tick (it may be offered again)."""

    run_id: str | None = None
    error: Exception | None = None


def _after(moment: datetime) -> datetime:
    """A moment a millisecond past ``moment`` (cron ticks fall on whole minutes)."""
    return datetime.fromtimestamp(moment.timestamp() + 0.001, moment.tzinfo or UTC)
