"""A process hears of every shared-resource grant (PostgreSQL NOTIFY carries them all) but
takes only its own: the grants nobody here waits for are forgotten after GRANT_MEMORY seconds,
so a long-running worker's memory does not grow with the cluster's traffic."""

from __future__ import annotations

from corral.clock import FakeClock
from corral.store import Store
from corral.store.sql_base import GRANT_MEMORY, SqlBase


async def test_grants_for_other_processes_are_forgotten(store: Store, clock: FakeClock) -> None:
    assert isinstance(store, SqlBase)
    for batch in range(100):  # what the listener does with each notification
        store._note_grants([f"other-{batch}-{i}" for i in range(10)])
        clock.advance(0.1)
    assert len(store.granted_requests) == 1000  # recent: a local waiter may still take one
    clock.advance(GRANT_MEMORY)
    store._note_grants(["mine"])
    assert store.granted_requests == {"mine"}
