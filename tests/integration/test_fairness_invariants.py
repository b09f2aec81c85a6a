"""Fairness invariants on both backends.

Invariant 4 with real worker processes: four ``corral worker`` processes drain thousands of
short runs of ten tenants with caps 1-5 under a global cap, while a sampler reads the runs
and tenants tables directly (sqlite3 / psycopg, one snapshot per sample) and checks that no
tenant ever has more running rows, or a bigger in-flight counter, than its cap, and that the
total never exceeds the global cap. Then, on a fake clock: queue quotas, low priority under
a stream of higher priority, and that spreading a backlog over agents and priorities buys a
tenant nothing. The last section pins lease defects found while writing these tests (fixed
since, so they guard against a return).
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from corral import Corral
from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.errors import BackpressureError, FanoutLimitError
from corral.models import Ack, LeaseRef, RunSpec, RunStatus
from corral.store import Store, create_store, parse_database_url
from tests.support.postgres import fresh_schema
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.timeout(180)

TTL = 30.0
CAPS = {f"t{i}": 1 + i % 5 for i in range(10)}  # t0..t9: caps 1,2,3,4,5,1,2,3,4,5
GLOBAL_CAP = 20  # below the sum of the caps (30) and the worker slots (4 x 8 = 32)


# --------------------------------------------------------------------- sampling the store


@dataclass
class Sample:
    running: dict[str, int]  # status = 'running' rows per tenant
    counters: dict[str, int]  # corral_tenants.in_flight per tenant
    caps: dict[str, int]
    global_cap: int | None


@dataclass
class Sampler:
    """Reads the store from its own connection as fast as it can, one consistent snapshot
    per sample (a read transaction on SQLite/WAL, REPEATABLE READ on PostgreSQL)."""

    url: str
    samples: list[Sample] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    QUERIES = (
        "SELECT tenant, COUNT(*) FROM corral_runs WHERE status = 'running' GROUP BY tenant",
        "SELECT tenant, in_flight, cap FROM corral_tenants",
        "SELECT value FROM corral_settings WHERE key = 'global_cap'",
    )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fairness-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            target = parse_database_url(self.url)
            if target.dialect == "sqlite":
                self._sample_sqlite(target.target)
            else:
                self._sample_postgres(target.target)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _record(self, rows: list[list[tuple[Any, ...]]]) -> None:
        running, tenants, cap = rows
        self.samples.append(
            Sample(
                running={str(t): int(n) for t, n in running},
                counters={str(t): int(f) for t, f, _ in tenants},
                caps={str(t): int(c) for t, _, c in tenants},
                global_cap=None if not cap or cap[0][0] is None else int(cap[0][0]),
            )
        )

    def _sample_sqlite(self, path: str) -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            while not self._stop.is_set():
                conn.execute("BEGIN")
                rows = [conn.execute(q).fetchall() for q in self.QUERIES]
                conn.execute("COMMIT")
                self._record(rows)
        finally:
            conn.close()

    def _sample_postgres(self, dsn: str) -> None:
        with psycopg.connect(dsn) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            while not self._stop.is_set():
                with conn.transaction():
                    rows = [conn.execute(q).fetchall() for q in self.QUERIES]
                self._record(rows)


async def wait_until_drained(app: Corral, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = await app.stats()
        if stats.queued == 0 and stats.in_flight == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"runs not done in {timeout}s: {await app.stats()}")


async def test_caps_and_global_cap_hold_across_worker_processes(
    db_url: str, tmp_path: Path
) -> None:
    rng = random.Random(4)
    log = tmp_path / "completions.log"
    async with Corral(db_url) as app:
        for tenant, cap in CAPS.items():
            await app.set_tenant(tenant, cap=cap)
        await app.set_global_cap(GLOBAL_CAP)
        # uneven backlogs, so that late in the drain only a few tenants are backlogged and
        # their own caps (not the global cap) are what binds
        volume = {t: 50 + 50 * i for i, t in enumerate(CAPS)}  # 50 .. 500: 2,750 runs
        specs = [
            {
                "agent": "work",
                "tenant": t,
                "input": {"sleep": rng.uniform(0.01, 0.08)},
                "max_attempts": 10,
            }
            for t, n in volume.items()
            for _ in range(n)
        ]
        rng.shuffle(specs)
        ids = await app.submit_many(specs)
        sampler = Sampler(db_url)
        sampler.start()
        workers = [WorkerProcess(db_url, log, ttl=TTL, poll_interval=0.2) for _ in range(4)]
        try:
            await wait_until_drained(app, timeout=120)
        finally:
            for w in workers:
                w.signal(signal.SIGTERM)
            for w in workers:
                w.wait(30)
            sampler.stop()
        stats = await app.stats()

    assert stats.by_status == {RunStatus.SUCCEEDED: len(ids)}, stats.by_status
    done = Counter(line.split()[1] for line in log.read_text().splitlines())
    assert set(done) == set(ids)

    samples = sampler.samples
    assert len(samples) >= 200, f"only {len(samples)} samples"
    for s in samples:
        assert s.global_cap == GLOBAL_CAP
        assert s.caps == CAPS
        for tenant, cap in CAPS.items():
            assert s.running.get(tenant, 0) <= cap, (tenant, s)
            assert s.counters[tenant] <= cap, (tenant, s)
            # counters and rows move in the same transactions: a snapshot sees them agree
            assert s.counters[tenant] == s.running.get(tenant, 0), (tenant, s)
        assert sum(s.running.values()) <= GLOBAL_CAP, s
    # the limits were actually reached, so the checks above had something to catch
    assert max(sum(s.running.values()) for s in samples) == GLOBAL_CAP
    at_cap = {t for s in samples for t, cap in CAPS.items() if s.running.get(t, 0) == cap}
    assert len(at_cap) >= 5, at_cap


# ---------------------------------------------------------------- quotas (fake clock)


@pytest.fixture
async def app(store: Store) -> AsyncIterator[Corral]:
    """An app over the fake-clock ``store`` fixture (which closes the store)."""
    yield Corral(store=store)


async def test_submit_beyond_the_plan_quota_raises_and_keeps_the_others(
    app: Corral, store: Store
) -> None:
    await app.set_plan("small", max_queued=3)
    await app.set_tenant("acme", plan="small")
    kept = [await app.submit("echo", i, tenant="acme") for i in range(3)]
    with pytest.raises(BackpressureError):
        await app.submit("echo", 3, tenant="acme")
    with pytest.raises(BackpressureError):
        await app.submit_many([{"agent": "echo", "tenant": "acme"}])
    runs = await app.list_runs(tenant="acme")
    assert sorted(r.id for r in runs) == sorted(kept)
    assert all(r.status == RunStatus.QUEUED for r in runs)
    stats = await app.stats()
    assert stats.tenant("acme").queued == 3  # type: ignore[union-attr]
    # another tenant on the default plan is not limited by acme's quota
    assert len(await app.submit_many([{"agent": "echo", "tenant": "beta"}] * 10)) == 10
    with pytest.raises(BackpressureError):  # a new key is a new run: refused too
        await app.submit("echo", tenant="acme", idempotency_key="k")
    # the quota counts queued runs: one leased (two slots: one per tenant) frees a place
    (lease,) = [x for x in await store.lease("w", TTL, 2) if x.tenant == "acme"]
    fourth = await app.submit("echo", 4, tenant="acme", idempotency_key="k")
    # a retried submit (same idempotency key) at the limit returns the original run
    assert await app.submit("echo", 4, tenant="acme", idempotency_key="k") == fourth
    with pytest.raises(BackpressureError):
        await app.submit("echo", 5, tenant="acme")
    await store.ack(LeaseRef(lease.run_id, lease.epoch))
    assert (await app.stats()).tenant("acme").queued == 3  # type: ignore[union-attr]
    assert len(await app.list_runs(tenant="acme")) == 4


async def test_tenant_max_queued_overrides_its_plan(app: Corral) -> None:
    await app.set_plan("small", max_queued=5)
    await app.set_tenant("acme", plan="small", max_queued=2)
    await app.set_tenant("beta", plan="small")
    await app.submit_many([{"agent": "echo", "tenant": "acme"}] * 2)
    with pytest.raises(BackpressureError):
        await app.submit("echo", tenant="acme")
    assert len(await app.submit_many([{"agent": "echo", "tenant": "beta"}] * 5)) == 5
    with pytest.raises(BackpressureError):
        await app.submit("echo", tenant="beta")
    # raising the plan's quota leaves acme's own override in force
    await app.set_plan("small", max_queued=50)
    with pytest.raises(BackpressureError):
        await app.submit("echo", tenant="acme")
    await app.submit("echo", tenant="beta")
    assert [t.queued for t in (await app.stats()).tenants] == [2, 6]


async def test_fanout_limits_can_be_set_for_a_tenant_past_its_lowered_quota(
    app: Corral, store: Store
) -> None:
    """A quota lowered below what a tenant has queued refuses its submits, not an operator's
    change of its fan-out limits (once: BackpressureError, and the limits not set)."""
    await app.set_tenant("acme", max_queued=5)
    await app.submit_many([{"agent": "echo", "tenant": "acme"}] * 5)
    await app.set_tenant("acme", max_queued=2)
    await app.set_tenant_fanout("acme", max_children=3)
    with pytest.raises(BackpressureError):  # the quota itself still holds
        await app.submit("echo", tenant="acme")
    (parent,) = await store.lease("w", TTL, 1)
    with pytest.raises(FanoutLimitError, match="at most 3 children"):  # the tenant's limit
        await store.spawn(
            LeaseRef(parent.run_id, parent.epoch),
            [RunSpec("echo", tenant="acme")] * 4,
            max_children=100,
            max_depth=5,
            entry=("spawn", "echo", {}),
        )


async def test_spawned_children_count_against_the_queued_quota(app: Corral, store: Store) -> None:
    """Children are queued runs of the parent's tenant: a spawn that would take the tenant
    over its quota raises BackpressureError and creates none of its children."""
    await app.set_plan("small", max_queued=3)
    await app.set_tenant("acme", plan="small")
    await app.submit_many([{"agent": "echo", "tenant": "acme"}] * 2)
    (parent,) = await store.lease("w", TTL, 1)  # queued: 1
    ref = LeaseRef(parent.run_id, parent.epoch)
    limits = {"max_children": 100, "max_depth": 5}
    kids = await store.spawn(
        ref, [RunSpec("echo", tenant="acme")] * 2, entry=("spawn", "echo", {}), **limits
    )
    with pytest.raises(BackpressureError):
        await store.spawn(
            ref, [RunSpec("echo", tenant="acme")], entry=("spawn", "echo", {}), **limits
        )
    assert sorted(r.id for r in await store.children(parent.run_id)) == sorted(kids)
    assert (await app.stats()).tenant("acme").queued == 3  # type: ignore[union-attr]
    with pytest.raises(BackpressureError):
        await app.submit("echo", tenant="acme")


# ------------------------------------------------------ priority aging (fake clock)


@pytest.mark.parametrize("aging", [10.0, 1e9])
async def test_low_priority_is_not_starved_by_a_stream_of_higher_priority(
    db_url: str, aging: float
) -> None:
    """One tenant, capacity for one run a second, two runs of priority 3 arriving every
    second: the high-priority stream alone overloads the tenant. A run of priority 0 has
    ``sort_key = t0``, a high run submitted at ``t0 + s`` has ``t0 + s - 3 * aging``: with
    aging=10 only the 58 high runs of the first 29 s go before it (two more tie with it),
    so it starts 59-61 s after submission, ahead of every high run still queued. With aging
    so slow it is effectively off (1e9 s per level) the stream starves it."""
    clock = FakeClock()
    store = create_store(db_url, StoreConfig(priority_aging=aging), clock)
    await store.open()
    try:
        (low,) = await store.submit([RunSpec("echo", tenant="acme", priority=0)])
        submitted_at = clock.now
        started_at: float | None = None
        for _ in range(150):
            clock.advance(1)
            await store.submit([RunSpec("echo", tenant="acme", priority=3)] * 2)
            (lease,) = await store.lease("w", TTL, 1)
            await store.ack(LeaseRef(lease.run_id, lease.epoch))
            if lease.run_id == low:
                started_at = clock.now
                break
        queued = (await store.stats()).tenant("acme").queued  # type: ignore[union-attr]
    finally:
        await store.close()
    if aging == 10.0:
        assert started_at is not None, "the low-priority run starved"
        assert 59 <= started_at - submitted_at <= 61
        assert queued >= 56  # high runs it overtook
    else:
        assert started_at is None, "aging is off: the stream should have starved it"
        assert queued == 1 + 2 * 150 - 150


# ------------------------------------ spreading over agents and priorities (fake clock)


QUIET = ("quiet1", "quiet2")
QUIET_ARRIVALS = (15, 25, 35)


async def lease_sequence(url: str, fairness: str, *, spread: bool) -> list[tuple[int, str]]:
    """A simulated worker with 4 slots on a fake clock: every second the run leased longest
    ago finishes and the free slots are leased again. At second 0 each quiet tenant submits
    3 runs, then ``noisy`` submits 200, on one agent at priority 0 or (``spread``) over 100
    agents at priorities drawn from -1e6..1e6; each quiet tenant submits one more run at
    seconds 15, 25 and 35. Returns (second, tenant) of every lease, in order."""
    clock = FakeClock()
    store = create_store(url, StoreConfig(fairness=fairness), clock)  # type: ignore[arg-type]
    rng = random.Random(11)
    await store.open()
    try:
        await store.submit([RunSpec("agent0", tenant=t) for t in QUIET for _ in range(3)])
        if spread:
            noisy = [
                RunSpec(
                    f"agent{i % 100}", tenant="noisy", priority=rng.randint(-1_000_000, 1_000_000)
                )
                for i in range(200)
            ]
        else:
            noisy = [RunSpec("agent0", tenant="noisy") for _ in range(200)]
        await store.submit(noisy)
        running: list[LeaseRef] = []
        order: list[tuple[int, str]] = []
        for second in range(80):
            if second in QUIET_ARRIVALS:
                await store.submit([RunSpec("agent0", tenant=t) for t in QUIET])
            if running:
                await store.ack(running.pop(0))
            for lease in await store.lease("w", TTL, 4 - len(running)):
                running.append(LeaseRef(lease.run_id, lease.epoch))
                order.append((second, lease.tenant))
            clock.advance(1)
        return order
    finally:
        await store.close()


async def test_spreading_over_agents_and_priorities_gains_a_tenant_nothing(
    db_url: str, second_db_url: str
) -> None:
    plain = await lease_sequence(db_url, "tenant", spread=False)
    spread = await lease_sequence(second_db_url, "tenant", spread=True)
    assert spread == plain
    for quiet in QUIET:
        seconds = [s for s, t in plain if t == quiet]
        assert len(seconds) == 6
        # a quiet run that arrives while noisy holds every slot takes the next free one
        # (one frees a second; the two quiet tenants arrive together)
        for arrival, leased in zip(QUIET_ARRIVALS, seconds[3:], strict=True):
            assert arrival <= leased <= arrival + 1, seconds


async def test_under_fifo_spreading_over_priorities_buys_a_tenant_the_queue(
    db_url: str, second_db_url: str
) -> None:
    """The same scenario without tenant fairness: spread to high priorities, the noisy
    tenant's later runs go before the quiet tenants' older ones. The test above shows the
    fair policy gives it nothing for the same trick."""
    plain = await lease_sequence(db_url, "fifo", spread=False)
    spread = await lease_sequence(second_db_url, "fifo", spread=True)
    assert Counter(t for _, t in plain[:6]) == {"quiet1": 3, "quiet2": 3}
    assert Counter(t for _, t in spread[:50]) == {"noisy": 50}


# -------------------------------------------------------- virtual time, through the store


async def serve_one_slot(
    store: Store, clock: FakeClock, duration: dict[str, float], leases: int
) -> Counter[str]:
    """One slot, always busy: lease a run, hold it its tenant's ``duration`` seconds on the
    fake clock, ack it, repeat. Returns the leases per tenant."""
    served: Counter[str] = Counter()
    for _ in range(leases):
        (lease,) = await store.lease("w", TTL, 1)
        served[lease.tenant] += 1
        clock.advance(duration[lease.tenant])
        await store.ack(LeaseRef(lease.run_id, lease.epoch))
    return served


async def test_weights_hold_when_one_slot_is_shared(store: Store, clock: FakeClock) -> None:
    """Weights 1 and 3 on a single slot: 3 leases to 1 (an in-flight count, always 0 at the
    moment of choice, would alternate them)."""
    await store.set_tenant("light", weight=1.0)
    await store.set_tenant("heavy", weight=3.0)
    await store.submit([RunSpec("echo", tenant=t) for t in ("light", "heavy") for _ in range(200)])
    served = await serve_one_slot(store, clock, {"light": 1.0, "heavy": 1.0}, 200)
    assert served["heavy"] / served["light"] == pytest.approx(3.0, rel=0.1), served


async def test_a_tenant_is_charged_for_the_slot_time_its_runs_take(
    store: Store, clock: FakeClock
) -> None:
    """Equal weights, one tenant's runs hold the slot 4 s, the other's 1 s: once the run
    costs are learnt, the short-run tenant gets about four leases for each long one, so both
    hold the slot about half the time."""
    await store.submit([RunSpec("echo", tenant=t) for t in ("long", "short") for _ in range(400)])
    durations = {"long": 4.0, "short": 1.0}
    await serve_one_slot(store, clock, durations, 100)  # learn the costs
    served = await serve_one_slot(store, clock, durations, 250)
    held = {t: served[t] * durations[t] for t in durations}
    assert held["long"] / held["short"] == pytest.approx(1.0, rel=0.15), served


async def test_idle_time_banks_no_credit(store: Store, clock: FakeClock) -> None:
    """``busy`` runs alone for a while; ``late`` then arrives with a backlog as deep. Had
    ``late`` kept its old (zero) virtual time it would take every slot until it caught up;
    lifted to ``busy``'s, the two share the slots from the start."""
    await store.submit([RunSpec("echo", tenant="busy") for _ in range(300)])
    await serve_one_slot(store, clock, {"busy": 1.0}, 100)
    await store.submit([RunSpec("echo", tenant="late") for _ in range(100)])
    served = await serve_one_slot(store, clock, {"busy": 1.0, "late": 1.0}, 40)
    assert served == {"busy": 20, "late": 20}


async def test_waiting_for_runs_due_later_banks_no_credit(store: Store, clock: FakeClock) -> None:
    """``busy`` runs alone for 100 s, as ``sched`` waits for its one run due later; then
    ``sched`` and ``fresh`` queue backlogs as deep. A tenant whose runs were all due later
    was counted as backlogged: ``sched`` kept its old virtual time, and held down the floor
    that ``fresh`` was lifted to, so the two took every slot until they caught up with
    ``busy`` (30, 30 and 0 of 60). Now ``sched`` is lifted every UNDUE_LIFT_INTERVAL (5 s):
    it banks at most that much, and the three share the slots about equally (20 each)."""
    await store.submit([RunSpec("echo", tenant="busy") for _ in range(300)])
    await store.submit([RunSpec("echo", tenant="sched", not_before=clock.now + 100)])
    await serve_one_slot(store, clock, {"busy": 1.0}, 100)
    await store.submit([RunSpec("echo", tenant=t) for t in ("sched", "fresh") for _ in range(100)])
    served = await serve_one_slot(store, clock, {"busy": 1.0, "sched": 1.0, "fresh": 1.0}, 60)
    assert served["busy"] >= 15 and max(served.values()) <= 25, served


async def keep_slots_busy(
    store: Store, clock: FakeClock, slots: int, seconds: int, *, beside: LeaseRef | None = None
) -> Counter[str]:
    """``slots`` slots kept busy for ``seconds`` on the fake clock, every run taking 1 s;
    returns the leases per tenant. ``beside``: a lease held all along (heartbeated, not acked)."""
    served: Counter[str] = Counter()
    for _ in range(seconds):
        leases = await store.lease("w", TTL, slots)
        served.update(lease.tenant for lease in leases)
        clock.advance(1)
        for lease in leases:
            await store.ack(LeaseRef(lease.run_id, lease.epoch))
        if beside is not None:
            await store.heartbeat(beside, TTL)  # LeaseLost if it had been taken away
    return served


async def test_time_at_the_cap_banks_no_credit(store: Store, clock: FakeClock) -> None:
    """``capped`` (cap 1) sits at its cap beside ``open`` on 4 slots, far below its share; when
    its cap is raised it gets its share, not every slot until its vtime catches up."""
    await store.set_tenant("capped", cap=1)
    await store.submit([RunSpec("echo", tenant=t) for t in ("capped", "open") for _ in range(400)])
    await keep_slots_busy(store, clock, 4, 60)
    await store.set_tenant("capped", cap=100)
    served = await keep_slots_busy(store, clock, 4, 10)
    assert served["capped"] <= 24, served  # its share is 20 of 40; all 40 would be credit


async def test_a_cap_raised_while_at_the_cap_banks_no_credit(
    store: Store, clock: FakeClock
) -> None:
    """``capped`` (cap 1) holds one long run while ``open`` takes the other 3 slots, so its
    virtual time stands still. Its cap is raised while that run is still going: from then on
    it gets its share of the free slots, not every one until its vtime catches up."""
    await store.set_tenant("capped", cap=1)
    await store.submit([RunSpec("echo", tenant=t) for t in ("capped", "open") for _ in range(400)])
    (long_run,) = await store.lease("w", TTL, 1)
    assert long_run.tenant == "capped"  # the tie goes to the name that sorts first
    held = LeaseRef(long_run.run_id, long_run.epoch)
    assert set(await keep_slots_busy(store, clock, 3, 60, beside=held)) == {"open"}
    await store.set_tenant("capped", cap=100)
    served = await keep_slots_busy(store, clock, 3, 10, beside=held)
    # its share is about half of the 30 (the held run counts against it); all 30 is credit
    assert served["capped"] <= 18, served


async def test_a_reclaimed_lease_does_not_put_its_tenant_ahead_of_one_further_behind(
    store: Store, clock: FakeClock
) -> None:
    """The lease that reclaims an expired lease ranks the run's tenant on its own virtual
    time. (Once: on a placeholder of vtime 0, so it took the slot from a tenant behind it.)"""
    await store.set_tenant("b", weight=2.0)
    await store.submit([RunSpec("echo", tenant="a") for _ in range(5)])
    (a1,) = await store.lease("w", TTL, 1)  # a: vtime 1
    await store.submit([RunSpec("echo", tenant="b") for _ in range(5)])  # b: lifted to 1
    (b1,) = await store.lease("w", TTL, 1)  # the tie to b (none in flight): b at 1.5
    (a2,) = await store.lease("w", TTL, 1)  # a at 2
    assert [x.tenant for x in (a1, b1, a2)] == ["a", "b", "a"]
    for lease in (a1, b1):
        await store.ack(LeaseRef(lease.run_id, lease.epoch))
    clock.advance(TTL + 1)  # a2's lease expires: its run is queued again by the next lease
    assert [x.tenant for x in await store.lease("w", TTL, 1)] == ["b"]
    assert (await store.get(a2.run_id)).status == RunStatus.QUEUED  # type: ignore[union-attr]


# -------------------------------------------------------------- lease defects


async def test_lease_fills_every_slot_it_can_when_a_tenant_has_delayed_runs(
    store: Store, clock: FakeClock
) -> None:
    """Delayed runs count as queued; a tenant granted more slots than it has runnable runs
    must hand the rest to others (once: lease returned 6 of 10 here)."""
    await store.submit(
        [RunSpec("echo", tenant="later")]
        + [RunSpec("echo", tenant="later", not_before=clock.now + 100) for _ in range(20)]
    )
    await store.submit([RunSpec("echo", tenant="now") for _ in range(20)])
    leases = await store.lease("w", TTL, 10)  # 21 runnable runs: 1 of later, 20 of now
    assert len(leases) == 10, Counter(x.tenant for x in leases)


async def test_postgres_lease_does_not_skip_a_tenant_whose_row_is_busy(pg_dsn: str) -> None:
    """A tenant row held by a concurrent lease or ack must be waited for, not skipped (once:
    SKIP LOCKED gave the slot to a tenant above its share; weights 1:2:3 under 4 workers
    got Jain 0.92)."""
    clock = FakeClock()
    with fresh_schema(pg_dsn) as dsn:
        store = create_store(dsn, StoreConfig(), clock)
        await store.open()
        try:
            await store.set_tenant("heavy", weight=3.0)
            await store.submit([RunSpec("echo", tenant="light") for _ in range(5)])
            assert len(await store.lease("w", TTL, 2)) == 2  # light: 2 in flight, share 2
            clock.advance(1)
            await store.submit([RunSpec("echo", tenant="heavy") for _ in range(5)])
            # another worker's ack (or lease) of a heavy run is holding heavy's tenant row
            async with await psycopg.AsyncConnection.connect(dsn) as other:
                await other.execute(
                    "SELECT * FROM corral_tenants WHERE tenant = 'heavy' FOR UPDATE"
                )
                lease = asyncio.ensure_future(store.lease("w", TTL, 1))
                await asyncio.sleep(0.5)
                await other.commit()
                (got,) = await asyncio.wait_for(lease, 10)
            assert got.tenant == "heavy"  # share 0/3 against light's 2/1
        finally:
            await store.close()


async def test_fifo_lease_skips_a_capped_tenant(db_url: str) -> None:
    """fairness="fifo" must look past a tenant at its cap (once: lease returned [] while
    another tenant had a runnable run)."""
    clock = FakeClock()
    store = create_store(db_url, StoreConfig(fairness="fifo"), clock)
    await store.open()
    try:
        await store.set_tenant("a", cap=1)
        await store.submit([RunSpec("echo", tenant="a") for _ in range(10)])
        clock.advance(1)
        await store.submit([RunSpec("echo", tenant="b")])
        assert [x.tenant for x in await store.lease("w", TTL, 1)] == ["a"]
        assert [x.tenant for x in await store.lease("w", TTL, 5)] == ["b"]
    finally:
        await store.close()


async def test_fifo_lease_takes_runs_in_submission_order_across_tenants(db_url: str) -> None:
    """fairness="fifo" merges the tenants' own queues (no index of every queued run): the
    runs come out in the order they were submitted, across tenants, also where a batch gives
    several tenants' runs the same sort key (ties go in the order the runs were stored)."""
    clock = FakeClock()
    rng = random.Random(5)
    store = create_store(db_url, StoreConfig(fairness="fifo"), clock)
    await store.open()
    try:
        submitted: list[str] = []
        for _ in range(12):
            batch = [
                RunSpec("echo", tenant=f"t{rng.randrange(6)}") for _ in range(rng.randint(1, 9))
            ]
            submitted += await store.submit(batch)
            clock.advance(rng.choice([0.0, 1.0]))
        leased: list[str] = []
        while batch_ := await store.lease("w", TTL, rng.randint(1, 5)):
            leased += [lease.run_id for lease in batch_]
            await store.ack_many([Ack(x.run_id, x.epoch, None) for x in batch_])
        assert leased == submitted
    finally:
        await store.close()


async def test_sqlite_lease_query_cost_does_not_grow_with_finished_runs(tmp_path: Path) -> None:
    async def median_candidate_query(history: int) -> float:
        clock = FakeClock()
        path = tmp_path / f"history-{history}.db"
        store = create_store(f"sqlite:///{path}", StoreConfig(), clock)
        await store.open()
        try:
            if history:
                await store.submit([RunSpec("echo", tenant="acme")] * history)
                conn = sqlite3.connect(path)
                with conn:  # history: these runs ended long ago
                    conn.execute("UPDATE corral_runs SET status = 'succeeded'")
                    conn.execute("UPDATE corral_tenants SET queued = 0")
                conn.close()
                clock.advance(60)
            await store.submit([RunSpec("echo", tenant="acme")])
            query = store.q["candidate_tenants"]  # type: ignore[attr-defined]
        finally:
            await store.close()
        conn = sqlite3.connect(path)
        try:
            args = {"now": clock.now, "limit": 8, "light_below": 2_000_000_000}
            assert [r[0] for r in conn.execute(query, args)] == ["acme"]
            times = []
            for _ in range(30):
                started = time.perf_counter()
                conn.execute(query, args).fetchall()
                times.append(time.perf_counter() - started)
        finally:
            conn.close()
        return sorted(times)[len(times) // 2]

    fresh = await median_candidate_query(0)
    old = await median_candidate_query(30_000)
    assert old < 10 * fresh, f"{old * 1000:.3f} ms with 30k finished runs, {fresh * 1000:.3f} ms"


async def test_fifo_lease_fills_the_slots_a_nearly_capped_tenant_cannot_take(db_url: str) -> None:
    """pick_oldest_runs took the ``limit`` oldest runs of tenants below their cap and dropped
    those beyond a tenant's headroom without looking further: tenant a, one run below its
    cap, took 1 slot of 4 and tenant b's runnable runs got none (was a strict xfail)."""
    clock = FakeClock()
    store = create_store(db_url, StoreConfig(fairness="fifo"), clock)
    await store.open()
    try:
        await store.set_tenant("a", cap=2)
        await store.submit([RunSpec("echo", tenant="a") for _ in range(10)])
        clock.advance(1)
        await store.submit([RunSpec("echo", tenant="b") for _ in range(10)])
        assert [x.tenant for x in await store.lease("w", TTL, 1)] == ["a"]
        assert Counter(x.tenant for x in await store.lease("w", TTL, 4)) == {"a": 1, "b": 3}
    finally:
        await store.close()
