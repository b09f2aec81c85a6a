"""The command line at its edges: every bad input gets one clear line and a non-zero exit
code, never a traceback; and the happy path works end to end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from corral import Corral
from tests.contract.test_worker_presence import report

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.workload:app"


def corral(
    *args: str, db: str | None = None, timeout: float = 60, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("CORRAL_DATABASE_URL", None)
    argv = [sys.executable, "-m", "corral.cli.main", *args]
    if db is not None:
        argv += ["--db", db]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


async def submit_many(url: str, specs: list[dict[str, Any]]) -> None:
    async with Corral(url) as app:
        await app.submit_many(specs)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["submit", "work", "{not json", "--app", APP], 2, "not valid JSON"),
        (["submit", "nosuch", "{}", "--app", APP], 2, "no agent named 'nosuch'"),
        (["submit", "work", "{}", "--priority", "high"], 2, "not a valid integer"),
        (["submit", "work", "{}", "--max-attempts", "0"], 2, "0 is not in the range"),
        (["submit", "work", "{}", "--delay", "-1"], 2, "-1"),
        (["submit", "work", "{}", "--timeout", "soon"], 2, "'soon' is not a duration"),
        (["submit", "work", "{}", "--timeout", "0"], 2, "timeout must be"),
        (["submit", "work", "{}", "--start-within", "soon"], 2, "'soon' is not a duration"),
        (["worker", APP, "--concurrency", "0"], 2, "0 is not in the range"),
        (["status", "--age-target", "0"], 2, "0 is not in the range"),
        (["status", "--concurrency", "many"], 2, "not a valid integer"),
        (["worker", APP, "--lease-ttl", "soon"], 2, "not a valid float"),
        (["worker", "no_such_module:app"], 2, "cannot import module"),
        (["worker", "tests.integration.workload"], 2, "MODULE:ATTR"),
        (["worker", "tests.integration.workload:record"], 2, "not a corral.Corral app"),
        (["runs", "show", "0000"], 1, "run_not_found"),
        (["runs", "list", "--status", "lost"], 2, "'lost' is not one of"),
        (["tenants", "set", "acme", "--plan", "platinum"], 2, "no plan named 'platinum'"),
        (["tenants", "set", "acme", "--cap", "-3"], 2, "-3 is not in the range"),
        (["runs", "purge", "--older-than", "a week"], 2, "'a week' is not a duration"),
        (["runs", "purge", "--older-than", "-2d"], 2, "is not a duration of zero or more"),
        (["runs", "purge"], 2, "Missing option '--older-than'"),
        (["worker", APP, "--retain", "forever"], 2, "'forever' is not a duration"),
        (["worker", APP, "--stop-grace", "-1s"], 2, "is not a duration of zero or more"),
        (["serve", "--app", APP, "--stop-grace", "later"], 2, "'later' is not a duration"),
        # what one backend cannot store is refused on both, before the store
        (["tenants", "set", "acme", "--cap", "3000000000"], 2, "cap must be at most"),
        (["plans", "global-cap", "99999999999999999999"], 2, "must be at most"),
        (["runs", "show", "\udcff"], 2, "run id must be valid Unicode"),  # argv bytes b"\xff"
        (["keys", "create", "--tenant", "\udcff"], 2, "tenant must be valid Unicode"),
        (["keys", "revoke", "\udcff"], 2, "key id must be valid Unicode"),
        (["tenants", "set", "acme", "--plan", "\udcff"], 2, "plan must be valid Unicode"),
        # JSON no reader could serve, or Python's parser gives up on
        (["submit", "work", '"\\ud800"', "--app", APP], 2, "not valid Unicode"),
        (["submit", "work", "[" * 5000 + "]" * 5000, "--app", APP], 2, "not valid JSON"),
        (["submit", "work", "1" + "0" * 5000, "--app", APP], 2, "not valid JSON"),
        # NaN passed click's ranges; numbers past what any edge takes
        (["submit", "work", "{}", "--wait", "nan"], 2, "'nan' is not a finite number"),
        (["status", "--age-target", "nan"], 2, "'nan' is not a finite number"),
        (["submit", "work", "{}", "--delay", "1e308"], 2, "delay must be at most"),
        (["tenants", "set", "acme", "--weight", "1e-320"], 2, "weight must be a number from"),
        (["schedules", "create", "s", "work", "--every", "1e300"], 2, "longer than 1e+09"),
        (["schedules", "create", "s", "work", "--cron", "* * * * * *"], 2, "five-field cron"),
        (["schedules", "create", "..", "work", "--every", "60"], 2, "schedule may not be '..'"),
        (
            ["schedules", "create", "s", "work", "--cron", "0 9 * * *", "--tz", "localtime"],
            2,
            "time zone 'localtime' is the zone of whichever machine runs the schedule",
        ),
        (["serve", "--host", ""], 2, "--host must name an interface"),
        (["worker", ".workload:app"], 2, "cannot import module '.workload'"),
        # durations past the API's bound (the worker printed its banner, then failed)
        (["worker", APP, "--agent-timeout", "1e300"], 2, "longer than 1e+09 seconds"),
        (["runs", "purge", "--older-than", "40000000000"], 2, "longer than 1e+09 seconds"),
    ],
)
def test_bad_input_gives_one_clear_line(
    sqlite_url: str, args: list[str], code: int, message: str
) -> None:
    asyncio.run(submit_many(sqlite_url, [{"agent": "work"}]))  # the database exists
    result = corral(*args, db=sqlite_url)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_app_module_that_fails_to_import_gives_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('no API key configured')\n")
    (tmp_path / "typo_app.py").write_text("def f(:\n")
    for module, message in (
        ("broken_app", "RuntimeError: no API key configured"),
        ("typo_app", "SyntaxError"),
    ):
        result = corral("worker", f"{module}:app", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert f"cannot import module '{module}'" in result.stderr and message in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("mysql://localhost/x", 2, "unsupported database scheme 'mysql'"),
        ("sqlite://", 2, "SQLite URL needs a path"),
        ("corral.db", 2, "not a database URL"),
        ("postgresql://127.0.0.1:notaport/x", 2, "malformed PostgreSQL URL"),
        ("postgresql://postgres@127.0.0.1:1/x", 3, "cannot reach PostgreSQL"),
        ("sqlite:////proc/corral/forbidden.db", 3, "cannot open SQLite database"),
        # reading a database that is not there does not create one at a mistyped path
        ("sqlite:///no/such/dir/c.db", 3, "no corral database at no/such/dir/c.db"),
        # an empty URL was taken as unset: ./corral.db, silently
        ("", 2, "--db is empty"),
        # a run submitted into a database that vanishes as the command exits
        ("sqlite:///:memory:", 2, "in-memory SQLite database lives only as long as"),
        # SQLite opened the device, then failed its first write with a rollback error
        ("sqlite:////dev/null", 3, "it is not a regular file"),
        # the probe's own connect_timeout hid this one until the pool's 10 s timeout
        ("postgresql://postgres@127.0.0.1:1/x?connect_timeout=abc", 3, "bad value for connect_"),
    ],
)
def test_bad_database_urls(url: str, code: int, message: str, tmp_path: Path) -> None:
    # submit creates a database; status only reads one
    args = ["status"] if "no/such" in url else ["submit", "work", "{}"]
    result = corral(*args, db=url, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_empty_database_url_in_the_environment_is_refused(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CORRAL_DATABASE_URL="")
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "submit", "work", "{}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "$CORRAL_DATABASE_URL is empty" in result.stderr
    assert not (tmp_path / "corral.db").exists()


def test_submit_show_list_status_and_journal(sqlite_url: str) -> None:
    submitted = corral(
        "submit",
        "work",
        '{"i": 7}',
        "--tenant",
        "acme",
        "--timeout",
        "10m",
        "--start-within",
        "1h",
        "--app",
        APP,
        db=sqlite_url,
    )
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    shown = corral("runs", "show", run_id, "--json", db=sqlite_url)
    assert json.loads(shown.stdout)["status"] == "queued"
    assert json.loads(shown.stdout)["timeout"] == 600
    shown_run = json.loads(shown.stdout)
    assert shown_run["start_by"] == shown_run["available_at"] + 3600
    assert "timeout: 600 s per attempt" in corral("runs", "show", run_id, db=sqlite_url).stdout
    listed = corral("runs", "list", "--tenant", "acme", "--json", db=sqlite_url)
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]
    status = corral("status", "--json", db=sqlite_url)
    stats = json.loads(status.stdout)
    assert stats["queued"] == 1 and stats["tenants"][0]["tenant"] == "acme"
    # one fresh queued run, nothing in flight: a queue never scales to zero
    assert (stats["suggested_workers"], stats["age_target"], stats["slots_per_worker"]) == (
        1,
        30.0,
        10,
    )
    table = corral("status", "--age-target", "0.001", "-c", "4", db=sqlite_url)
    assert "suggested workers: 1 (age target 0.001 s, 4 slots per worker)" in table.stdout
    asyncio.run(submit_many(sqlite_url, [{"agent": "work", "tenant": "acme"}] * 24))
    # 25 runs queued past a 1 ms target ask for a slot each: 25 slots, 4 per worker
    deep = corral("status", "--json", "--age-target", "0.001", "-c", "4", db=sqlite_url)
    assert json.loads(deep.stdout)["suggested_workers"] == 7
    journal = corral("runs", "journal", run_id, db=sqlite_url)
    assert "submitted" in journal.stdout
    cancelled = corral("runs", "cancel", run_id, db=sqlite_url)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    kept = corral("runs", "purge", "--older-than", "1h", db=sqlite_url)
    assert kept.returncode == 0 and "deleted 0 runs" in kept.stdout, kept.stderr
    purged = corral("runs", "purge", "--older-than", "0", db=sqlite_url)
    assert purged.returncode == 0 and "deleted 1 runs" in purged.stdout, purged.stderr
    assert corral("runs", "show", run_id, db=sqlite_url).returncode == 1


def test_plans_and_tenants(sqlite_url: str) -> None:
    assert (
        corral("plans", "set", "gold", "--cap", "7", "--weight", "2", db=sqlite_url).returncode == 0
    )
    assert corral("tenants", "set", "acme", "--plan", "gold", db=sqlite_url).returncode == 0
    listed = corral("tenants", "list", db=sqlite_url)
    assert "acme" in listed.stdout and "gold" in listed.stdout and " 7 " in listed.stdout
    # piped, the table keeps whole cells (rich would cut it to 80 columns)
    header = listed.stdout.splitlines()[0].split()
    assert header[-4:] == ["oldest", "succeeded", "failed", "cancelled"], header
    plans = corral("plans", "list", db=sqlite_url)
    assert "gold" in plans.stdout and "free" in plans.stdout and "pro" in plans.stdout


APP_ON_ANOTHER_DATABASE = """
from corral import Corral

app = Corral("sqlite:///{default}", max_children=1)
app.shared_resource("llm", capacity=1)


@app.agent("call")
async def call(ctx, input):
    async with ctx.acquire("llm"):
        return "called"


@app.agent("fan")
async def fan(ctx, input):
    return [await ctx.spawn("call", {{}}) for _ in range(2)]
"""


def test_a_worker_given_another_database_keeps_the_apps_resources_and_limits(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The usual deployment: the app module names a default database and the worker is
    pointed at the real one with --db (or $CORRAL_DATABASE_URL)."""
    (tmp_path / "other_db_app.py").write_text(
        APP_ON_ANOTHER_DATABASE.format(default=tmp_path / "default.db")
    )

    async def scenario() -> dict[str, Any]:
        async with Corral(sqlite_url) as client:
            call_id = await client.submit("call", {})
            fan_id = await client.submit("fan", {})
            return {
                "call": await client.wait(call_id, timeout=30),
                "fan": await client.wait(fan_id, timeout=30),
            }

    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}")
    env["CORRAL_DATABASE_URL"] = sqlite_url
    worker = subprocess.Popen(
        [sys.executable, "-m", "corral.cli.main", "worker", "other_db_app:app"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = asyncio.run(scenario())
    finally:
        worker.terminate()
        _, out_stderr = worker.communicate(timeout=30)
    out["stderr"] = out_stderr
    assert out["call"].status.value == "succeeded", (out["call"].error, out["stderr"])
    assert out["call"].result == "called"
    assert out["fan"].status.value == "failed"  # a second child is over max_children=1
    assert out["fan"].error["type"] == "FanoutLimitError", out["fan"].error


def test_runs_retry_queues_a_dead_lettered_run_again(sqlite_url: str) -> None:
    (run_id,) = asyncio.run(_dead_letter(sqlite_url, ["default"]))
    bad = corral("runs", "retry", run_id, "--attempts", "0", db=sqlite_url)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    retried = corral("runs", "retry", run_id, "--attempts", "2", db=sqlite_url)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == f"{run_id} queued (up to 3 attempts in all)"
    again = corral("runs", "retry", run_id, db=sqlite_url)
    assert again.returncode == 1
    assert "run_not_retryable" in again.stderr and "it is queued, not failed" in again.stderr
    missing = corral("runs", "retry", "no-such-run", db=sqlite_url)
    assert missing.returncode == 1 and "run_not_found" in missing.stderr


def test_worker_refuses_an_agent_timeout_that_is_not_positive(sqlite_url: str) -> None:
    for bad, message in (("0", "agent_timeout must be a finite number > 0"), ("soon", "duration")):
        r = corral("worker", APP, "--agent-timeout", bad, db=sqlite_url)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and "Traceback" not in r.stderr


async def _dead_letter(url: str, tenants: list[str]) -> list[str]:
    app = Corral(url)

    @app.agent("breaks")
    async def breaks(ctx: Any, input: Any) -> None:
        raise RuntimeError("broken")

    async with app:
        ids = await app.submit_many(
            [{"agent": "breaks", "tenant": t, "max_attempts": 1} for t in tenants]
        )
        worker = app.worker(concurrency=4, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        try:
            for run_id in ids:
                await app.wait(run_id, timeout=20)
        finally:
            worker.stop()
            await running
    return ids


async def _statuses(url: str, ids: list[str]) -> list[str]:
    async with Corral(url) as app:
        return [(await app.get(i)).status.value for i in ids]  # type: ignore[union-attr]


def test_runs_retry_all_failed_of_a_tenant_and_several_ids(sqlite_url: str) -> None:
    ids = asyncio.run(_dead_letter(sqlite_url, ["acme", "acme", "acme", "globex", "globex"]))
    both = corral("runs", "retry", ids[0], "--all-failed", db=sqlite_url)
    assert both.returncode == 2 and "not both" in both.stderr
    narrowed = corral("runs", "retry", ids[0], "--tenant", "acme", db=sqlite_url)
    assert narrowed.returncode == 2 and "narrow --all-failed" in narrowed.stderr
    acme = corral("runs", "retry", "--all-failed", "--tenant", "acme", db=sqlite_url)
    assert acme.returncode == 0, acme.stderr
    assert acme.stdout.strip() == "retried 3 failed runs"
    assert asyncio.run(_statuses(sqlite_url, ids)) == ["queued"] * 3 + ["failed"] * 2
    # several ids: each retried or reported, and a non-zero exit if any was refused
    several = corral("runs", "retry", ids[3], ids[0], ids[4], db=sqlite_url)
    assert several.returncode == 1
    assert f"{ids[0]} not retried: run_not_retryable" in several.stderr
    assert "1 runs not retried" in several.stderr
    assert asyncio.run(_statuses(sqlite_url, ids)) == ["queued"] * 5


SCHEDULED_APP = """
from corral import Corral

app = Corral("sqlite:///{default}")


@app.agent("tick")
async def tick(ctx, input):
    return input


app.schedule("each-second", "tick", {{"n": 1}}, every=1, tenant="acme")
app.schedule("weekday-mornings", "tick", cron="0 9 * * 1-5", tz="Europe/Berlin")
"""


def test_a_worker_process_submits_scheduled_runs_and_schedules_lists_them(
    tmp_path: Path, sqlite_url: str
) -> None:
    (tmp_path / "scheduled_app.py").write_text(
        SCHEDULED_APP.format(default=tmp_path / "default.db")
    )
    # the app module is found in the working directory, as `corral worker` finds one
    listed = corral(
        "schedules", "list", "--app", "scheduled_app:app", "--json", db=sqlite_url, cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    before = {s["name"]: s for s in json.loads(listed.stdout)}
    assert before["each-second"]["when"] == "every 1 s"
    assert before["weekday-mornings"]["when"] == "cron '0 9 * * 1-5' (Europe/Berlin)"
    assert before["each-second"]["last_run_tick"] is None
    argv = [sys.executable, "-m", "corral.cli.main", "worker", "scheduled_app:app"]
    worker = subprocess.Popen(
        [*argv, "--db", sqlite_url],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stderr=subprocess.PIPE,
        text=True,
    )

    async def ticked() -> list[Any]:
        async with Corral(sqlite_url) as client:
            for _ in range(200):
                done = await client.list_runs(tenant="acme", status="succeeded")
                if len(done) >= 2:
                    return done
                await asyncio.sleep(0.05)
        raise AssertionError("no scheduled runs succeeded")

    try:
        done = asyncio.run(ticked())
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert all(r.agent == "tick" and r.result == {"n": 1} for r in done)
    table = corral("schedules", "list", "--app", "scheduled_app:app", db=sqlite_url, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "every 1 s" in rows["each-second"] and "acme" in rows["each-second"]
    assert rows["each-second"].count("-") >= 4  # the last run's date is there, not "-"
    missing = corral("schedules", "list", "--app", "no_such_module:app", db=sqlite_url)
    assert missing.returncode == 2 and "cannot import module" in missing.stderr


def test_schedules_are_created_listed_and_deleted_from_the_command_line(
    tmp_path: Path, sqlite_url: str
) -> None:
    made = corral(
        "schedules", "create", "nightly", "digest", '{"k": 1}', "--tenant", "acme",
        "--cron", "0 3 * * *", "--tz", "Europe/Berlin", "--timeout", "10m", db=sqlite_url,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("acme/nightly\tcron '0 3 * * *' (Europe/Berlin)\tnext ")
    again = corral(
        "schedules", "create", "nightly", "digest", "--tenant", "acme", "--every", "1h",
        db=sqlite_url,
    )  # fmt: skip
    assert again.returncode == 1 and "schedule_exists" in again.stderr
    both = corral("schedules", "create", "x", "digest", "--cron", "0 * * * *", "--every", "1h",
                  db=sqlite_url)  # fmt: skip
    assert both.returncode == 2 and "cron or every" in both.stderr
    bad = corral("schedules", "create", "x", "digest", "--cron", "0 25 * * *", db=sqlite_url)
    assert bad.returncode == 2 and "not a cron expression" in bad.stderr
    listed = corral("schedules", "list", "--json", db=sqlite_url)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["name"], row["stored"], row["agent"], row["tenant"]) == (
        "acme/nightly", True, "digest", "acme",
    )  # fmt: skip
    assert corral("schedules", "list", "--tenant", "globex", db=sqlite_url).stdout.startswith(
        "no schedules"
    )
    paused = corral("schedules", "pause", "nightly", "--tenant", "acme", db=sqlite_url)
    assert paused.returncode == 0 and "paused acme/nightly" in paused.stdout
    table = corral("schedules", "list", db=sqlite_url)
    assert table.returncode == 0 and "paused" in table.stdout.splitlines()[1]
    resumed = corral("schedules", "resume", "nightly", "--tenant", "acme", db=sqlite_url)
    assert resumed.returncode == 0 and "resumed acme/nightly" in resumed.stdout
    gone = corral("schedules", "delete", "nightly", "--tenant", "acme", db=sqlite_url)
    assert gone.returncode == 0 and "deleted acme/nightly" in gone.stdout
    twice = corral("schedules", "delete", "nightly", "--tenant", "acme", db=sqlite_url)
    assert twice.returncode == 1 and "schedule_not_found" in twice.stderr
    nowhere = corral("schedules", "list", db=f"sqlite:///{tmp_path / 'missing.db'}")
    assert nowhere.returncode == 3 and "no corral database" in nowhere.stderr


async def _report_workers(url: str, *agent_sets: tuple[str, ...]) -> None:
    async with Corral(url) as app:
        for n, agents in enumerate(agent_sets):
            name = f"w{n}-{os.urandom(4).hex()}"
            await app.store.report_worker(report(name, time.time(), agents=agents))


def test_a_bare_submit_warns_when_no_running_worker_executes_its_agent(sqlite_url: str) -> None:
    def submit(agent: str) -> subprocess.CompletedProcess[str]:
        result = corral("submit", agent, "{}", db=sqlite_url)
        assert result.returncode == 0, result.stderr  # a warning: the run is kept
        return result

    assert "warning" not in submit("echo").stderr  # no workers report: nothing to check
    asyncio.run(_report_workers(sqlite_url, ("echo", "summarise"), ("echo",)))
    assert "warning" not in submit("echo").stderr
    typo = submit("ecoh")
    assert (
        "none of the 2 running worker(s) executes agent 'ecoh' (they execute: echo, summarise)"
        in typo.stderr
    )
    assert corral("runs", "show", typo.stdout.strip(), db=sqlite_url).returncode == 0
    # a worker reporting no agents predates that report: it may execute any of them
    asyncio.run(_report_workers(sqlite_url, ("echo",), ()))
    assert "warning" not in submit("ecoh").stderr


def test_tables_print_names_as_they_are_not_as_markup(sqlite_url: str) -> None:
    """Tenant, agent and label names are users' text: rich read "[red]evil" as a style (the
    brackets vanished) and "acme[/x]" as a closing tag with no opening one (MarkupError, a
    traceback)."""
    odd = ["acme[/x]", "[red]evil", "[bold]"]
    asyncio.run(submit_many(sqlite_url, [{"agent": f"a[/{t}]", "tenant": t} for t in odd]))
    made = corral("keys", "create", "--tenant", odd[0], "--label", "[prod]", db=sqlite_url)
    assert made.returncode == 0, made.stderr
    for args, shown in (
        (["tenants", "list"], odd),
        (["status"], odd),
        (["runs", "list"], [f"a[/{t}]" for t in odd]),
        (["keys", "list"], ["acme[/x]", "[prod]"]),
    ):
        result = corral(*args, db=sqlite_url)
        assert result.returncode == 0, (args, result.stderr)
        for name in shown:
            assert name in result.stdout, (args, result.stdout)


async def _run_with_steps(url: str, steps: int) -> str:
    app = Corral(url)

    @app.agent("many")
    async def many(ctx: Any, input: Any) -> int:
        for i in range(steps):
            await ctx.step(f"s{i}", lambda i=i: i)
        return steps

    async with app:
        run_id = await app.submit("many", {})
        worker = app.worker(concurrency=1, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        try:
            await app.wait(run_id, timeout=60)
        finally:
            worker.stop()
            await running
    return run_id


def test_runs_journal_prints_a_journal_longer_than_one_page(sqlite_url: str) -> None:
    """It printed the first 1,000 entries (one page of the store's read) and stopped."""
    run_id = asyncio.run(_run_with_steps(sqlite_url, 1200))

    async def length() -> int:
        async with Corral(sqlite_url) as app:
            return len(await app.journal(run_id, limit=10_000))

    entries = asyncio.run(length())
    assert entries > 1200
    for args in ([], ["--json"]):
        printed = corral("runs", "journal", run_id, *args, db=sqlite_url)
        assert printed.returncode == 0, printed.stderr
        assert len(printed.stdout.splitlines()) == entries
    after = corral("runs", "journal", run_id, "--after", "100", db=sqlite_url)
    assert len(after.stdout.splitlines()) == entries - 100


async def _purge_while_runs_end(url: str) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """``corral runs purge --older-than 0`` while a worker ends runs without a pause: how long
    the purge took, and its outcome."""
    app = Corral(url)

    @app.agent("noop")
    async def noop(ctx: Any, input: Any) -> None:
        return None

    @app.agent("sleeper")
    async def sleeper(ctx: Any, input: Any) -> None:
        await ctx.sleep(3600)

    @app.agent("spawner")
    async def spawner(ctx: Any, input: Any) -> None:
        await ctx.spawn("sleeper")  # not waited for: the tree stays while its child sleeps

    async with app:
        # trees every purge step reads and keeps (their child has not ended), so that each
        # step takes a while, as a step over a large table does
        held = await app.submit_many([{"agent": "spawner", "tenant": "held"}] * 1000)
        worker = app.worker(concurrency=20, poll_interval=0.01)
        running = asyncio.create_task(worker.run())

        async def feed() -> None:
            while True:
                await app.submit_many([{"agent": "noop"}] * 20)
                await asyncio.sleep(0.01)

        for run_id in held:
            await app.wait(run_id, timeout=60)
        feeding = asyncio.create_task(feed())
        await asyncio.sleep(1)  # runs end all the while
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("CORRAL_DATABASE_URL", None)
        started = time.monotonic()
        purge = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corral.cli.main", "runs", "purge", "--older-than", "0",
            "--db", url, cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(30):
                out, err = await purge.communicate()
        except TimeoutError:
            purge.kill()
            out, err = await purge.communicate()
        took = time.monotonic() - started
        feeding.cancel()
        worker.stop()
        await running
    assert purge.returncode is not None
    return took, subprocess.CompletedProcess([], purge.returncode, out, err)


def test_runs_purge_ends_while_runs_keep_ending(db_url: str) -> None:
    """The purge's cutoff moved on with the clock at each step, so every step found the runs
    that had ended since the one before: on a busy deployment the command never ended."""
    took, purged = asyncio.run(_purge_while_runs_end(db_url))
    assert purged.returncode == 0, purged.stderr
    assert took < 20, purged.stdout
    assert purged.stdout.decode().startswith("deleted ")
