"""The Python API refuses bad input with a named error before anything is written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from corral import Corral, InvalidInput, RunNotFound, UnknownAgent
from corral.config import PlanSpec, StoreConfig
from corral.errors import InvalidDatabaseURL


@pytest.fixture
async def app(tmp_path: Path) -> Any:
    app = Corral(f"sqlite:///{tmp_path / 'v.db'}")

    @app.agent("echo")
    async def echo(ctx: Any, input: Any) -> Any:
        return input

    async with app:
        yield app


def _nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"agent": "nosuch"}, "no agent named 'nosuch'"),
        ({"agent": ""}, "agent must be a non-empty string"),
        ({"agent": "echo", "input": {1, 2}}, "not a JSON value"),
        ({"agent": "echo", "input": math.nan}, "not a JSON value"),
        ({"agent": "echo", "input": _nested(101)}, "input nests deeper than 100 levels"),
        ({"agent": "echo", "tenant": ""}, "tenant must be"),
        ({"agent": "echo", "priority": 1.5}, "priority must be an integer"),
        ({"agent": "echo", "priority": True}, "priority must be an integer"),
        ({"agent": "echo", "max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"agent": "echo", "budget": -1}, "budget must be a finite number >= 0"),
        ({"agent": "echo", "delay": math.inf}, "delay must be a finite number"),
        ({"agent": "echo", "delay": 5, "not_before": 1e9}, "delay or not_before, not both"),
        ({"agent": "echo", "timeout": 0}, "timeout must be"),
        ({"agent": "echo", "idempotency_key": "x" * 500}, "idempotency_key must be"),
        # text no reader decodes: a lone surrogate, in a value or a key, however deep
        ({"agent": "echo", "input": "\ud800"}, "input holds text that is not valid Unicode"),
        ({"agent": "echo", "input": {"a": [{"\udcff": 1}]}}, "not valid Unicode"),
        # keys json.dumps would turn into strings: {1: "a", "1": "b"} had one key twice
        (
            {"agent": "echo", "input": {"a": [{"x": 0, 1: "a"}]}},
            r"input is not a JSON value: the key 1 at \['a'\]\[0\]\[1\] is not a string \(int\)"
            r"; JSON object keys are strings, and it would come back as \"1\"",
        ),
        ({"agent": "echo", "input": {1: "a", "1": "b"}}, r"the key 1 at \[1\] is not a string"),
        ({"agent": "echo", "input": [{None: 1}]}, r"the key None at \[0\]\[None\]"),
        ({"agent": "echo", "input": {(1, 2): 1}}, "not a JSON value: keys must be str"),
        # numbers past any float, and past what every edge takes (the HTTP API's bounds)
        ({"agent": "echo", "budget": 10**400}, "budget must be a finite number"),
        ({"agent": "echo", "budget": 1e16}, r"budget must be at most 1e\+15"),
        ({"agent": "echo", "delay": 10**400}, "delay must be a finite number"),
        ({"agent": "echo", "delay": 1e300}, r"delay must be at most 1e\+09"),
        ({"agent": "echo", "timeout": 1e300}, "timeout must be at most"),
        ({"agent": "echo", "start_within": 1e10}, "start_within must be at most"),
        ({"agent": "echo", "not_before": -1.79e308}, r"not_before must be at most 1e\+11"),
    ],
)
async def test_submit_refuses_bad_input_and_writes_nothing(
    app: Corral, kwargs: dict[str, Any], message: str
) -> None:
    agent = kwargs.pop("agent")
    with pytest.raises(InvalidInput, match=message):
        await app.submit(agent, **kwargs)
    assert (await app.stats()).queued == 0


async def test_input_nested_as_deep_as_allowed_is_taken(app: Corral) -> None:
    run_id = await app.submit("echo", _nested(100))
    assert (await app.get(run_id)).input == _nested(100)


async def test_text_outside_the_basic_plane_is_taken(app: Corral) -> None:
    """A surrogate pair (an emoji) is escaped like a lone surrogate by the encoder: only the
    lone one is refused."""
    run_id = await app.submit("echo", {"\U0001f600": "\U0001f4a9 ok"})
    assert (await app.get(run_id)).input == {"\U0001f600": "\U0001f4a9 ok"}


@pytest.mark.parametrize("weight", [1e-320, 0.0009, 1e7, math.nan, 10**400])
async def test_weights_that_would_make_charges_infinite_are_refused(
    app: Corral, weight: Any
) -> None:
    """A weight of 1e-320 made a tenant's virtual time inf, which every tenant that queued
    after it inherited (fair choice ended for all of them)."""
    with pytest.raises(InvalidInput, match=r"weight must be a number from 0\.001 to 1e\+06"):
        await app.set_tenant("tiny", weight=weight)
    with pytest.raises(InvalidInput, match="weight must be a number from"):
        await app.set_plan("tiny", weight=weight)
    with pytest.raises(InvalidInput, match="weight must be a number from"):
        StoreConfig(plans=(PlanSpec("tiny", weight=weight),))
    await app.set_tenant("light", weight=0.001)


async def test_submit_many_is_all_or_nothing(app: Corral) -> None:
    with pytest.raises(InvalidInput, match="item 1"):
        await app.submit_many([{"agent": "echo"}, {"agent": "echo", "colour": "red"}])
    with pytest.raises(UnknownAgent):
        await app.submit_many([{"agent": "echo"}, {"agent": "other"}])
    with pytest.raises(InvalidInput, match="item 1: a run is a RunSpec or a mapping, not str"):
        await app.submit_many([{"agent": "echo"}, "echo"])
    with pytest.raises(InvalidInput, match=r"item 0: .* not NoneType"):
        await app.submit_many([None])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="a list of runs"):
        await app.submit_many({"agent": "echo"})  # type: ignore[arg-type]
    assert (await app.stats()).queued == 0


async def test_lookups_and_settings(app: Corral) -> None:
    with pytest.raises(RunNotFound):
        await app.get("nope")
    with pytest.raises(InvalidInput, match="unknown status"):
        await app.list_runs(status="lost")
    with pytest.raises(InvalidInput, match="limit"):
        await app.list_runs(limit=0)
    with pytest.raises(InvalidInput, match="cap"):
        await app.set_tenant("acme", cap=0)
    with pytest.raises(InvalidInput, match="no plan named"):
        await app.set_tenant("acme", plan="platinum")
    with pytest.raises(InvalidInput, match="concurrency"):
        app.worker(concurrency=0)
    # seconds past the bound every other duration has (1e9 s, as over HTTP)
    for option in ("poll_interval", "retry_base", "retry_cap", "retention_interval"):
        with pytest.raises(InvalidInput, match=f"{option} must be at most"):
            app.worker(**{option: 1e300})


async def test_values_one_backend_cannot_store_are_refused_on_both(app: Corral) -> None:
    """Refused before the store: PostgreSQL failed with driver errors on these (integer out
    of range, NUL in text) where SQLite took them."""
    cases: list[tuple[Any, str]] = [
        (app.submit("echo", tenant="a\x00b"), "tenant must not contain NUL"),
        (app.submit("echo", tenant="\udcff"), "tenant must be valid Unicode"),
        (app.submit("echo", max_attempts=2**31), "max_attempts must be at most 2,000,000,000"),
        (app.set_plan("big", cap=3_000_000_000), "cap must be at most"),
        (app.set_tenant("acme", max_queued=2**40), "max_queued must be at most"),
        (app.set_global_cap(10**20), "global cap must be at most"),
        (app.purge_finished(0, limit=2**63), "limit must be at most"),
        (app.get("run\x00id"), "run id must not contain NUL"),
        (app.list_runs(before=5), "before must be a non-empty string"),  # type: ignore[arg-type]
        (app.list_runs(limit=True), "limit must be an integer"),
        (app.list_runs(tenant="\udcff"), "tenant must be valid Unicode"),
        (app.journal("x", limit=-1), "limit must be an integer >= 1"),
        (app.journal("x", after=10**20), "after must be at most"),
    ]
    for call, message in cases:
        with pytest.raises(InvalidInput, match=message):
            await call
    with pytest.raises(InvalidInput, match="capacity must be at most"):
        app.shared_resource("llm", capacity=2**40)
    with pytest.raises(InvalidInput, match="rpm must be at most"):
        app.shared_resource("llm", capacity=1, rpm=2**40)
    # as for the in-process Scheduler; a limit of 0 used to refuse even an acquire that found
    # a free slot (BackpressureError), and a NaN lease reached the database
    with pytest.raises(InvalidInput, match="max_waiters must be an integer >= 1"):
        app.shared_resource("llm", capacity=1, max_waiters=0)
    with pytest.raises(InvalidInput, match="max_waiters_per_agent must be an integer >= 1"):
        app.shared_resource("llm", capacity=1, max_waiters_per_agent=0)
    with pytest.raises(InvalidInput, match="lease_ttl and poll_interval must be > 0"):
        app.shared_resource("llm", capacity=1, lease_ttl=float("nan"))
    assert (await app.stats()).queued == 0


def test_constructor_and_registry() -> None:
    with pytest.raises(InvalidDatabaseURL):
        Corral("mysql://x")
    with pytest.raises(InvalidInput):
        Corral(lease_ttl=0)
    app = Corral("sqlite:///unused.db")

    async def agent(ctx: Any, input: Any) -> None:
        return None

    app.agent("a")(agent)
    with pytest.raises(ValueError, match="already registered"):
        app.agent("a")(agent)
    with pytest.raises(TypeError, match="async def"):
        app.agent("b")(lambda ctx, input: None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("offer_lifetime", 0),
        ("offer_lifetime", math.inf),
        ("priority_aging", -1.0),
        ("reap_batch", 0),
        ("pool_size", 2.5),
        ("busy_timeout", math.nan),
        ("checkpoint_interval", -0.1),
    ],
)
def test_store_config_refuses_numbers_it_cannot_use(field: str, value: Any) -> None:
    with pytest.raises(InvalidInput, match=field):
        StoreConfig(**{field: value})
    StoreConfig(checkpoint_interval=0, busy_timeout=0)  # zero means "off" / "do not wait"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"fairness": "bogus"}, "fairness must be 'tenant' or 'fifo'"),
        ({"synchronous": "OFF; DROP TABLE x"}, "synchronous must be 'NORMAL' or 'FULL'"),
        ({"plans": "abc"}, "plans must be a sequence of PlanSpec"),
        ({"plans": (PlanSpec("x", weight=math.nan),)}, "plan 'x' weight"),
        ({"plans": (PlanSpec("x", cap=0),)}, "plan 'x' cap"),
        ({"default_plan": ""}, "default_plan must be"),
    ],
)
def test_store_config_refuses_what_it_cannot_use(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        StoreConfig(**config)


def test_the_app_takes_a_store_config_only() -> None:
    with pytest.raises(InvalidInput, match="config must be a StoreConfig, not str"):
        Corral("sqlite:///unused.db", config="x")  # type: ignore[arg-type]
