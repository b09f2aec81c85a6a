"""A read transaction never holds up the same store's writes (each backend).

On SQLite a read once took the store's only connection, so a scan (stats over a deep backlog,
a listing, retention's search) stalled every submit, lease and ack of its process for as long
as it ran. Reads now have a connection of their own there, as they have the pool on PostgreSQL.
The read is held open here from inside, through the store's read path, to make the overlap
certain rather than a matter of timing.
"""

from __future__ import annotations

import asyncio

from corral.models import RunSpec
from corral.store import Store
from corral.store.sql_base import SqlBase
from corral.store.transaction import Row, Transaction


async def test_a_read_in_progress_does_not_hold_up_a_write(store: Store) -> None:
    assert isinstance(store, SqlBase)
    (first,) = await store.submit([RunSpec("echo", tenant="acme")])
    reading = asyncio.Event()
    release = asyncio.Event()

    async def held_read(tx: Transaction) -> Row | None:
        row = await tx.fetchone(store.q["get_run"], {"id": first})
        reading.set()
        await release.wait()
        return row

    read = asyncio.create_task(store._read(held_read))
    await asyncio.wait_for(reading.wait(), timeout=5)
    try:
        (second,) = await asyncio.wait_for(
            store.submit([RunSpec("echo", tenant="acme")]), timeout=5
        )
        leases = await asyncio.wait_for(store.lease("w1", 10.0, 2), timeout=5)
    finally:
        release.set()
    row = await read
    assert row is not None and row[0] == first
    assert {lease.run_id for lease in leases} == {first, second}
    run = await store.get(second)
    assert run is not None and run.status == "running"
