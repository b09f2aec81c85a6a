"""What every CLI command shares: finding the app and the database, running a coroutine, and
turning corral's errors into a one-line message and an exit code (never a traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from corral.app import Corral
from corral.errors import CorralError, InvalidInput, StoreUnavailable
from corral.store import DEFAULT_URL
from corral.store.url import parse_database_url
from corral.values import MAX_SECONDS
from corral.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

ENV_DATABASE_URL = "CORRAL_DATABASE_URL"


class FiniteFloat(click.FloatRange):
    """A number within the range that is neither NaN nor infinite: click's FloatRange lets NaN
    through every bound (a --wait of nan submitted the run, then waited for nothing)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _db_option(defaults: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--db", "db", default=None, metavar="URL", help=f"Database URL (default: {defaults})."
    )


db_option = _db_option(f"${ENV_DATABASE_URL}, or {DEFAULT_URL}")
#: --db for the commands that also take --app, whose database is the default before the last
app_db_option = _db_option(f"${ENV_DATABASE_URL}, the app's URL, or {DEFAULT_URL}")
#: --json, for every command that prints a table or a record
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table, for scripts."
)
app_option = click.option(
    "--app",
    "app_path",
    default=None,
    metavar="MODULE:ATTR",
    help="Import the Corral app from here (its agents and database URL).",
)

#: the queueing SLA the suggested worker count is computed against (`status`, `serve`)
age_target_option = click.option(
    "--age-target",
    type=FiniteFloat(min=0, min_open=True),
    default=30.0,
    show_default=True,
    envvar="CORRAL_AGE_TARGET",
    help="Queueing SLA in seconds, for the suggested worker count ($CORRAL_AGE_TARGET).",
)


def worker_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of an embedded or standalone worker: slots, lease TTL, poll, drain."""
    for option in reversed(
        (
            click.option(
                "--concurrency",
                "-c",
                type=click.IntRange(1, 10_000),
                default=10,
                show_default=True,
                help="Runs executed at once by each worker.",
            ),
            click.option(
                "--lease-ttl",
                type=FiniteFloat(min=0.1, max=86_400),
                default=None,
                help="Seconds a lease lasts without a heartbeat (default: the app's).",
            ),
            click.option(
                "--poll-interval",
                type=FiniteFloat(min=0.001, max=3600),
                default=1.0,
                show_default=True,
                help="Longest an idle worker waits before looking again.",
            ),
            click.option(
                "--drain-timeout",
                type=FiniteFloat(min=0, max=86_400),
                default=30.0,
                show_default=True,
                help="On SIGTERM, seconds to let runs finish before releasing them.",
            ),
            click.option(
                "--express-slots",
                type=click.IntRange(0, 10_000),
                default=0,
                show_default=True,
                help="Extra slots only for runs of light tenants (see --express-below).",
            ),
            click.option(
                "--express-below",
                type=click.IntRange(1, 10_000),
                default=1,
                show_default=True,
                help="A light tenant has fewer than this many runs in flight.",
            ),
            click.option(
                "--agent-timeout",
                metavar="DURATION",
                default=None,
                callback=duration,
                help="Stop and fail (retried) an attempt running longer than this, for agents "
                "registered without a timeout of their own (e.g. 10m; default: no limit).",
            ),
            click.option(
                "--stop-grace",
                metavar="DURATION",
                default="5s",
                show_default=True,
                callback=duration,
                help="How long an agent told to stop (cancel, timeout, drain) has to end; past "
                "it the worker ends the run without it and leaves the agent's task running.",
            ),
            click.option(
                "--retain",
                metavar="DURATION",
                default=None,
                callback=duration,
                help="Delete runs that ended longer ago than this (e.g. 7d; default: keep all).",
            ),
            click.option(
                "--handoffs/--no-handoffs",
                default=True,
                show_default=True,
                help="PostgreSQL: offer free slots, so runs submitted meanwhile come already "
                "leased (see docs/architecture.md, Handoff).",
            ),
        )
    ):
        fn = option(fn)
    return fn


def exit_past_stuck_agents(workers: Iterable[Worker]) -> None:
    """End the process now if agents that ignored their stop are still running. Their runs
    ended without them already; asyncio.run would cancel their tasks once more and then wait
    for them without a bound, so a stop (SIGTERM) would never finish."""
    stuck = [run_id for w in workers for run_id in w.stuck]
    if not stuck:
        return
    shown = ", ".join(stuck[:10]) + (", ..." if len(stuck) > 10 else "")
    click.echo(
        f"corral: exiting with {len(stuck)} agent(s) still running that ignored their stop "
        f"(runs {shown}); their runs were ended without them",
        err=True,
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class CliError(click.ClickException):
    """A message for the user and an exit code: 2 bad input, 3 database unreachable,
    4 timed out waiting, 1 anything else."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self.code


def load_app(path: str) -> Corral:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"app must be given as MODULE:ATTR, e.g. myapp:app (got {path!r})", 2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a missing module, a relative name, the module's own failure
        raise CliError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}", 2
        ) from exc
    app = getattr(module, attr, None)
    if not isinstance(app, Corral):
        raise CliError(f"{path} is not a corral.Corral app (found {type(app).__name__})", 2)
    return app


def resolve_app(
    app_path: str | None, db: str | None, *, existing: bool = False, in_process: bool = False
) -> Corral:
    """The app to act through: an imported one (with --db overriding its database) or a bare
    client for the database URL. ``existing``: a command that only reads or changes what is
    there refuses a SQLite file that does not exist, instead of creating an empty database
    (and its directories) at a mistyped path and reporting an empty queue. ``in_process``: a
    command that runs for as long as its database is used (a worker, the service) may be
    given an in-memory SQLite database; every other command refuses one, since what it
    wrote or read would vanish with it as the command exits."""
    url = _given_url(db)
    if url is not None and not in_process and _in_memory(url):
        raise CliError(
            "an in-memory SQLite database lives only as long as one process: this command "
            "would lose what it does as it exits (give a file, or a PostgreSQL URL)",
            2,
        )
    if app_path:
        app = load_app(app_path)
        if url and url != app.url:
            return app.with_database(url)
        return app
    app = Corral(url or DEFAULT_URL)
    if existing:
        target = parse_database_url(app.url)
        if (
            target.dialect == "sqlite"
            and target.target != ":memory:"
            and not Path(target.target).exists()
        ):
            raise CliError(
                f"no corral database at {target.target} (a worker, submit or serve "
                "creates one; check --db or $CORRAL_DATABASE_URL)",
                3,
            )
    return app


def _given_url(db: str | None) -> str | None:
    """The URL given by --db, else by $CORRAL_DATABASE_URL; None if neither was. An empty one
    is refused: falling back to ./corral.db would run a deployment whose URL was templated
    to nothing against a local file, and look as if it worked."""
    for url, source in ((db, "--db"), (os.environ.get(ENV_DATABASE_URL), f"${ENV_DATABASE_URL}")):
        if url is None:
            continue
        if not url.strip():
            raise CliError(f"{source} is empty: give a database URL, or leave it unset", 2)
        return url
    return None


def _in_memory(url: str) -> bool:
    try:
        target = parse_database_url(url)
    except InvalidInput:
        return False  # refused with its own message when the app opens it
    return target.dialect == "sqlite" and target.target == ":memory:"


def run_async(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """Run an async command body, mapping corral's errors to messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except InvalidInput as exc:
            raise CliError(str(exc), 2) from exc
        except StoreUnavailable as exc:
            raise CliError(str(exc), 3) from exc
        except CorralError as exc:
            raise CliError(f"{exc.code}: {exc}", 1) from exc

    return wrapper


def on_fast_loop(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a command on uvloop's event loop when it is installed (see ``_fast_event_loop``)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _fast_event_loop():
            return fn(*args, **kwargs)

    return wrapper


def _fast_event_loop() -> contextlib.AbstractContextManager[None]:
    """uvloop's event loop when it is installed, the standard one otherwise: it costs the
    worker and the service less CPU per task, callback and socket read (a worker of no-op
    runs did ~14% more runs/s on it here)."""
    try:
        import uvloop
    except ImportError:
        return contextlib.nullcontext()
    return _event_loop_policy(uvloop.EventLoopPolicy())


@contextlib.contextmanager
def _event_loop_policy(policy: asyncio.AbstractEventLoopPolicy) -> Iterator[None]:
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(policy)
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # bad text, an integer of 4,300+ digits, depth
        raise CliError(f"{what} is not valid JSON: {exc}", 2) from exc


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An option callback: a length of time, in seconds or with a unit (90s, 30m, 12h, 7d)."""
    if value is None:
        return None
    text = value.strip().lower()
    scale = _DURATION_UNITS.get(text[-1:])
    try:
        seconds = float(text[:-1] if scale else text) * (scale or 1.0)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a duration (e.g. 3600, 90s, 30m, 12h, 7d)"
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise click.BadParameter(f"{value!r} is not a duration of zero or more")
    if seconds > MAX_SECONDS:
        raise click.BadParameter(f"{value!r} is longer than {MAX_SECONDS:g} seconds (31 years)")
    return seconds


def limit_text(value: int | None) -> str:
    """A cap or quota for a table: None (unlimited) shows as ∞."""
    return "∞" if value is None else str(value)


def age(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86_400:.1f}d"


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError):  # beyond the platform's calendar
        return f"{ts:g} (Unix time)"
