"""Which submits wake PostgreSQL's waiting workers. Every waiting worker listens to the work
channel, and each notification wakes all of them to a lease: a submit notifies only when a
lease could take its run now, so a tenant at its cap or a run due later costs the waiting
workers nothing (bench/scale: 32 idle workers spent 5.8 ms of server CPU per such submit
before). The same holds for children spawned while their parent holds the tenant's last
slot. The run is still found: the ack, or the parent's suspend, that frees its tenant a slot
notifies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from corral.models import Ack, LeaseRef, RunSpec
from corral.store import Store, create_store
from tests.support.postgres import fresh_schema

pytestmark = pytest.mark.timeout(60)

TTL = 30.0


@contextmanager
def _work_channel(dsn: str) -> Iterator[psycopg.Connection]:
    """A connection LISTENing to the schema's work channel, as a waiting worker's does."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT 'corral_work_' || md5(current_schema())").fetchone()
        assert row is not None
        conn.execute(f'LISTEN "{row[0]}"')
        yield conn


def _heard(conn: psycopg.Connection, wait: float = 0.3) -> list[str]:
    """The payloads of the work notifications that arrive within ``wait`` seconds."""
    payloads = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        for notify in conn.notifies(timeout=left, stop_after=1):
            payloads.append(notify.payload)
    return payloads


async def _store(dsn: str) -> Store:
    store = create_store(dsn)
    await store.open()
    for tenant in ("capped", "free"):
        await store.set_tenant(tenant, cap=1 if tenant == "capped" else None)
    return store


async def test_a_submit_no_lease_could_take_now_wakes_nobody(pg_dsn: str) -> None:
    with fresh_schema(pg_dsn) as dsn:
        store = await _store(dsn)
        try:
            with _work_channel(dsn) as listener:
                (first,) = await store.submit([RunSpec("echo", tenant="capped")])
                assert _heard(listener) == ["0"]  # leasable: the tenant's in-flight count
                (lease,) = await store.lease("w", TTL, 10)
                assert lease.run_id == first

                # at its cap: nothing a lease could take, nobody woken
                (waiting,) = await store.submit([RunSpec("echo", tenant="capped")])
                # due in an hour: the same
                await store.submit([RunSpec("echo", tenant="free", not_before=time.time() + 3600)])
                # and through the general path (several runs in one transaction, an
                # idempotency key), which takes the same care
                await store.submit([RunSpec("echo", tenant="capped")] * 2)
                await store.submit([RunSpec("echo", tenant="capped", idempotency_key="k")])
                later = time.time() + 3600
                await store.submit([RunSpec("echo", tenant="free", not_before=later)] * 2)
                assert _heard(listener) == []
                assert await store.lease("w", TTL, 10) == []

                # the ack that frees the capped tenant's slot wakes the workers for its run
                await store.ack_many([Ack(lease.run_id, lease.epoch, None)])
                assert _heard(listener) != []
                (next_lease,) = await store.lease("w", TTL, 10)
                assert next_lease.run_id == waiting

                # a tenant below its cap, due now: woken as before, by either path
                await store.submit([RunSpec("echo", tenant="free")])
                assert _heard(listener) == ["0"]
                await store.submit([RunSpec("echo", tenant="free")] * 2)
                assert _heard(listener) == [""]
        finally:
            await store.close()


async def test_children_of_a_parent_holding_its_tenants_last_slot_wake_nobody_until_it_waits(
    pg_dsn: str,
) -> None:
    with fresh_schema(pg_dsn) as dsn:
        store = await _store(dsn)
        try:
            (parent_id,) = await store.submit([RunSpec("plan", tenant="capped")])
            (parent,) = await store.lease("w", TTL, 10)
            ref = LeaseRef(parent.run_id, parent.epoch)
            with _work_channel(dsn) as listener:
                (child_id,) = await store.spawn(
                    ref,
                    [RunSpec("step", tenant="capped")],
                    max_children=4,
                    max_depth=2,
                    entry=("spawned", "step", None),
                )
                assert _heard(listener) == []  # the parent holds the tenant's one slot
                assert await store.suspend(ref, children=[child_id], entry=("waiting", None, None))
                assert _heard(listener) != []  # its slot is free: the child can go
                (child,) = await store.lease("w", TTL, 10)
                assert child.run_id == child_id and child.parent_id == parent_id
        finally:
            await store.close()
