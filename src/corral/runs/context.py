"""The context an agent is called with: who this run is, and its durable journal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.models import JSON, JournalEntry, Lease, LeaseRef

if TYPE_CHECKING:
    from corral.store import Store


class RunContext:
    """Passed to every agent as ``ctx``. Writes through it are fenced by the lease epoch: once
    another worker owns the run, they raise ``LeaseLost``."""

    def __init__(self, lease: Lease, store: Store) -> None:
        self._lease = lease
        self._store = store
        self.ref = LeaseRef(lease.run_id, lease.epoch)

    @property
    def run_id(self) -> str:
        return self._lease.run_id

    @property
    def tenant(self) -> str:
        return self._lease.tenant

    @property
    def agent(self) -> str:
        return self._lease.agent

    @property
    def attempt(self) -> int:
        """1 on the first delivery, higher on retries and redeliveries."""
        return self._lease.attempt

    @property
    def epoch(self) -> int:
        return self._lease.epoch

    @property
    def root_id(self) -> str:
        return self._lease.root_id

    @property
    def parent_id(self) -> str | None:
        return self._lease.parent_id

    @property
    def depth(self) -> int:
        return self._lease.depth

    async def emit(self, kind: str, data: JSON = None) -> int:
        """Append a user event to the run's journal; returns its sequence number."""
        if not isinstance(kind, str) or not kind:
            raise ValueError("event kind must be a non-empty string")
        (seq,) = await self._store.append(self.ref, [("event", kind, data)])
        return seq

    async def journal(self, after: int = 0) -> list[JournalEntry]:
        return await self._store.journal(self.run_id, after=after)
