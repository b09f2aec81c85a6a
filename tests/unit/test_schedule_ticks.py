"""When a schedule's ticks fall (dispatch/schedule.py), and what ``app.schedule`` refuses."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from corral import Corral, InvalidInput, RunContext, UnknownAgent
from corral.dispatch.schedule import Schedule
from corral.models import RunSpec

RUN = RunSpec("a")


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_every_ticks_on_multiples_of_its_period_since_the_epoch() -> None:
    s = Schedule("s", RUN, every=300)
    assert s.latest_tick(ts(2026, 11, 24, 16, 7, 30)) == ts(2026, 11, 24, 16, 5)
    assert s.next_tick(ts(2026, 11, 24, 16, 7, 30)) == ts(2026, 11, 24, 16, 10)
    # a tick at exactly now is the latest, and the next is a period on
    assert s.latest_tick(ts(2026, 11, 24, 16, 10)) == ts(2026, 11, 24, 16, 10)
    assert s.next_tick(ts(2026, 11, 24, 16, 10)) == ts(2026, 11, 24, 16, 15)


def test_cron_ticks_including_one_at_exactly_now() -> None:
    s = Schedule("s", RUN, cron="0 9 * * 1-5")  # weekdays at 09:00 UTC
    friday_noon = ts(2026, 11, 27, 12)
    assert s.latest_tick(friday_noon) == ts(2026, 11, 27, 9)
    assert s.next_tick(friday_noon) == ts(2026, 11, 30, 9)  # Monday
    assert s.latest_tick(ts(2026, 11, 27, 9)) == ts(2026, 11, 27, 9)
    assert s.next_tick(ts(2026, 11, 27, 9)) == ts(2026, 11, 30, 9)


def test_cron_in_a_time_zone_follows_daylight_saving_time() -> None:
    s = Schedule("s", RUN, cron="0 9 * * *", tz="Europe/Berlin")
    assert s.next_tick(ts(2026, 1, 15)) == ts(2026, 1, 15, 8)  # CET: UTC+1
    assert s.next_tick(ts(2026, 7, 15)) == ts(2026, 7, 15, 7)  # CEST: UTC+2
    assert s.when == "cron '0 9 * * *' (Europe/Berlin)"
    assert Schedule("e", RUN, every=90).when == "every 90 s"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give cron or every"),
        ({"cron": "* * * * *", "every": 60}, "give cron or every"),
        ({"cron": "every day"}, "not a cron expression"),
        ({"cron": "61 * * * *"}, "not a cron expression"),
        ({"every": 0.5}, "every must be a number of seconds from 1 to"),
        ({"every": math.inf}, "every must be"),
        ({"every": True}, "every must be"),
        ({"every": 60, "tz": "Mars/Olympus"}, "no time zone named 'Mars/Olympus'"),
        ({"every": 1e300}, "every must be a number of seconds from 1 to"),
        ({"every": 10**400}, "every must be a number of seconds from 1 to"),
        ({"cron": "* * * * * *"}, "not a five-field cron expression"),
        ({"every": 60, "catch_up": 1e10}, "catch_up must be"),
        ({"every": 60, "catch_up": -1}, "catch_up must be seconds from 0 to"),
    ],
)
def test_a_schedule_that_cannot_tick_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Schedule("s", RUN, **kwargs)


def test_app_schedule_checks_the_run_it_will_submit() -> None:
    app = Corral("sqlite:///:memory:")

    @app.agent("digest")
    async def digest(ctx: RunContext, input: Any) -> None:
        return None

    made = app.schedule("nightly", "digest", {"day": "today"}, cron="0 2 * * *", tenant="acme")
    assert app.schedules == {"nightly": made}
    assert made.run == RunSpec("digest", {"day": "today"}, tenant="acme")
    with pytest.raises(ValueError, match="already registered"):
        app.schedule("nightly", "digest", every=60)
    with pytest.raises(UnknownAgent):
        app.schedule("other", "nosuch", every=60)
    with pytest.raises(InvalidInput, match="not a JSON value"):
        app.schedule("other", "digest", {1, 2}, every=60)
    with pytest.raises(InvalidInput, match="timeout"):
        app.schedule("other", "digest", every=60, timeout=0)
    with pytest.raises(InvalidInput, match="start_within"):
        app.schedule("other", "digest", every=60, start_within=-5)
    bounded = app.schedule("bounded", "digest", every=60, timeout=30, start_within=50)
    assert (bounded.run.timeout, bounded.run.start_within) == (30, 50)
    with pytest.raises(InvalidInput, match="not a cron expression"):
        app.schedule("other", "digest", cron="nightly")
    # a tenant's stored schedules are named "tenant/name", and share the table of ticks
    with pytest.raises(InvalidInput, match="may not contain '/'"):
        app.schedule("acme/nightly", "digest", every=60)
    assert list(app.schedules) == ["nightly", "bounded"]
    assert app.with_database("sqlite:///:memory:").schedules == app.schedules


@pytest.mark.parametrize(
    ("tz", "message"),
    [
        # loaded from /etc/localtime where the zone directory links it: each machine's own
        ("localtime", "time zone 'localtime' is the zone of whichever machine runs"),
        ("posixrules", "no IANA time zone named 'posixrules'"),
        ("posix/Europe/Berlin", "no IANA time zone named 'posix/Europe/Berlin'"),
        ("right/UTC", "no IANA time zone named 'right/UTC'"),
        ("/etc/localtime", "no IANA time zone named '/etc/localtime'"),
        ("../../etc/localtime", "no IANA time zone named"),
        ("Mars/Olympus", "no IANA time zone named 'Mars/Olympus'"),
        ("", "no IANA time zone named ''"),
        (7, "tz must be a string, not 7"),
    ],
)
def test_a_time_zone_that_is_no_iana_name_is_refused(tz: Any, message: str) -> None:
    app = Corral("sqlite:///:memory:")
    with pytest.raises(InvalidInput, match=f"schedule 'nightly': {message}"):
        app.schedule("nightly", "digest", cron="0 2 * * *", tz=tz)
    assert app.schedules == {}
    for zone in ("UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "US/Pacific"):
        name = zone.replace("/", "-")
        assert app.schedule(name, "digest", cron="0 2 * * *", tz=zone).tz == zone


def test_in_the_hour_a_fall_back_repeats_the_ticks_of_its_first_pass_are_past() -> None:
    """New York's clocks go back from 02:00 EDT to 01:00 EST on 3 November 2024, so 01:00 to
    02:00 passes twice; "30 1 * * *" ticks once that night, at 01:30 EDT (05:30 UTC). In the
    second pass before 01:30 (06:00 to 06:30 UTC), the latest tick was the day before's (a
    worker back then did not make up that night's tick, and a schedule created then started
    a day back, so its first run was for a tick before it existed), and the next tick was
    01:30 EDT, behind now: every worker's loop, sleeping until it, spun for half an hour."""
    s = Schedule("s", RUN, cron="30 1 * * *", tz="America/New_York")
    edt_0130 = ts(2024, 11, 3, 5, 30)
    assert s.next_tick(ts(2024, 11, 3, 5)) == edt_0130
    for minute in (0, 10, 29):
        est = ts(2024, 11, 3, 6, minute)  # 01:xx EST, the second pass
        assert s.latest_tick(est) == edt_0130
        assert s.next_tick(est) == ts(2024, 11, 4, 6, 30)  # 01:30 EST the next day
    assert s.latest_tick(ts(2024, 11, 3, 6, 30)) == edt_0130
