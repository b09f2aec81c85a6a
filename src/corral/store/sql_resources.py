"""Shared contention resources: one capacity, request rate and token rate for every process.

Each acquire is a row in ``corral_resource_requests`` (``waiting`` or ``holding``) with an
expiry that its process renews while it waits or holds; a killed process's rows expire and
their slots come back. Every change runs the grant step under the resource row's lock: expired
rows are dropped (an expired holder counts as a release: the tick advances), then, while a slot
is free and the rolling one-minute request and token windows allow, the waiting agent with the
highest load score L(i) (``corral.contention.score.choose``, the same pure function the
in-process scheduler is checked against) gets its oldest request granted. Tokens are reserved
at grant (the request's expected tokens) and settled to the actual usage at release.

**The lock is held only while the server executes.** Every process's hand-off of a slot
queues on that lock, so a request or a release is a single round trip: the lock, its writes,
the grant step (``grant_next``, in SQL: the order of ``choose``, checked against it by
``tests/contract/test_shared_grant_order.py``) and the COMMIT go out together (pipeline mode,
PostgreSQL) and none of them waits for a result. The granted requests are announced by the
NOTIFY (PostgreSQL, to this process too) or read in the transaction (SQLite, where a
statement costs no round trip). A request learns its own state with a read after the commit,
outside the lock. A poll that finds nothing to grant and nothing to renew takes no lock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from corral.errors import BackpressureError, InvalidInput
from corral.store.sql_base import SqlBase
from corral.store.transaction import Row, Transaction

WINDOW = 60.0  #: seconds of the request-per-minute and token-per-minute windows
#: a poll renews its requests once this fraction of their TTL has passed since the last
#: renewal (SharedScheduler polls at least every ttl/3, so it renews at least that often)
RENEW_AFTER = 0.25
#: one release in this many also deletes the usage rows older than two windows
PRUNE_EVERY = 64


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    name: str
    capacity: int
    rpm: int | None = None
    tpm: int | None = None
    alpha: float = 0.25


@dataclass(frozen=True, slots=True)
class ResourceSnapshot:
    name: str
    capacity: int
    holders: int
    waiting: dict[str, int]
    tick: int
    requests_in_window: int
    tokens_in_window: int
    paused_until: float


class ResourcesMixin(SqlBase):
    _releases = 0  #: releases by this store (this process): every PRUNE_EVERY-th prunes usage

    async def define_resource(self, limits: ResourceLimits) -> None:
        async def body(tx: Transaction) -> None:
            await tx.execute(
                self.q["define_resource"],
                {
                    "name": limits.name,
                    "capacity": limits.capacity,
                    "rpm": limits.rpm,
                    "tpm": limits.tpm,
                    "alpha": limits.alpha,
                },
            )

        await self._tx(body)

    async def resource_request(
        self,
        name: str,
        request_id: str,
        agent_id: str,
        *,
        weight: float,
        tokens: int,
        ttl: float,
        max_waiters: int,
        max_waiters_per_agent: int | None,
    ) -> str:
        """Join the resource's queue; returns ``holding`` if granted at once, else ``waiting``.
        A full queue raises BackpressureError and takes nothing."""
        now = self.clock()

        async def body(tx: Transaction) -> list[str]:
            await tx.execute(self.q["lock_resource"], {"name": name})
            await tx.execute(
                self.q["insert_request"],
                {
                    "name": name,
                    "request_id": request_id,
                    "agent_id": agent_id,
                    "weight": weight,
                    "tokens": tokens,
                    "now": now,
                    "expires_at": now + ttl,
                    "max_waiters": max_waiters,
                    "max_waiters_per_agent": max_waiters_per_agent,
                },
            )
            return await self._grant(tx, name, now, ttl)

        granted = await self._tx(body)
        if granted:
            self._note_grants(granted)
        if request_id in granted:
            return "holding"

        async def look(tx: Transaction) -> str | None:
            row = await tx.fetchone(
                self.q["request_state"], {"name": name, "request_id": request_id}
            )
            return None if row is None else str(row[0])

        state = await self._read(look)
        if state is None:  # not inserted: the queue was full (or there is no such resource)
            snapshot = await self.resource_snapshot(name)
            if sum(snapshot.waiting.values()) >= max_waiters:
                raise BackpressureError(f"{name}: {max_waiters} requests already waiting")
            raise BackpressureError(
                f"{name}: agent {agent_id!r} already has {max_waiters_per_agent} waiting"
            )
        return state

    async def resource_poll(
        self, name: str, request_ids: Sequence[str], ttl: float
    ) -> dict[str, str]:
        """Renew these requests, run the grant step, and return each one's state
        (``waiting``, ``holding``, or ``gone`` if it expired).

        A first look takes no lock: when nothing could be granted (no expired row, and no
        free slot with waiters outside a pause) and no request is due for renewal, that look
        is the answer. Otherwise the poll locks the resource row and grants what it can."""
        now = self.clock()

        async def look(tx: Transaction) -> list[Row]:
            return await tx.fetchall(
                self.q["probe_requests"],
                {"name": name, "ids": json.dumps(list(request_ids)), "now": now},
            )

        rows = await self._read(look)
        if not rows:
            raise InvalidInput(f"no shared resource named {name!r}")
        seen = {str(r[0]): (str(r[1]), float(r[2])) for r in rows if r[0] is not None}
        paused_until, capacity, holding, waiting, expired = (
            float(rows[0][3]),
            *(int(v) for v in rows[0][4:8]),
        )
        free = capacity - holding + expired  # at most: the expired rows may be waiters
        could_grant = waiting > 0 and (expired > 0 or (paused_until <= now and free > 0))
        renew_before = now + ttl * (1.0 - RENEW_AFTER)
        due = any(expires_at < renew_before for _, expires_at in seen.values())
        if not (could_grant or due or expired):
            return {r: seen[r][0] if r in seen else "gone" for r in request_ids}

        async def body(tx: Transaction) -> tuple[dict[str, str], list[str]]:
            await tx.execute(self.q["lock_resource"], {"name": name})
            # expired rows count for nothing in the grant step; here they are dropped, an
            # expired holder counting as a release (the tick advances)
            await tx.execute(self.q["expire_holders"], {"name": name, "now": now})
            await tx.execute(self.q["drop_expired"], {"name": name, "now": now})
            await tx.execute(self.q["forget_usage"], {"name": name, "before": now - 2 * WINDOW})
            granted = await self._grant(tx, name, now, ttl, grants=max(1, min(free, waiting)))
            states = await tx.fetch_each(
                self.q["renew_request"],
                [{"name": name, "request_id": r, "expires_at": now + ttl} for r in request_ids],
            )
            found = {
                r: (str(s[0][0]) if s else "gone") for r, s in zip(request_ids, states, strict=True)
            }
            return found, granted

        found, granted = await self._tx(body)
        if granted:
            self._note_grants(granted)
        return found

    async def resource_reclaim(
        self, name: str, request_id: str, agent_id: str, *, weight: float, tokens: int, ttl: float
    ) -> None:
        """A holder whose request expired (its process was held up past ``ttl``) but which
        still uses its slot: record it as holding again, over capacity if another request
        was granted the slot meanwhile, so that nothing more is granted until one releases."""
        now = self.clock()

        async def body(tx: Transaction) -> None:
            await tx.execute(self.q["lock_resource"], {"name": name})
            await tx.execute(
                self.q["reclaim_request"],
                {
                    "name": name,
                    "request_id": request_id,
                    "agent_id": agent_id,
                    "weight": weight,
                    "tokens": tokens,
                    "expires_at": now + ttl,
                    "now": now,
                },
            )

        await self._tx(body)

    async def resource_release(
        self, name: str, request_id: str, *, tokens_used: int | None, ttl: float
    ) -> None:
        """Remove a request: a holder's release advances the tick and grants the next waiter;
        a waiter just leaves the queue."""
        now = self.clock()
        self._releases += 1
        prune = self._releases % PRUNE_EVERY == 0

        async def body(tx: Transaction) -> list[str]:
            await tx.execute(self.q["lock_resource"], {"name": name})
            ids = {"name": name, "request_id": request_id}
            await tx.execute(self.q["release_tick"], ids)
            if tokens_used is not None:
                await tx.execute(self.q["settle_usage"], {**ids, "tokens": tokens_used})
            await tx.execute(self.q["remove_request"], ids)
            if prune:  # the usage window's old rows, now and then rather than every time
                await tx.execute(self.q["forget_usage"], {"name": name, "before": now - 2 * WINDOW})
            return await self._grant(tx, name, now, ttl)

        granted = await self._tx(body)
        if granted:
            self._note_grants(granted)

    async def resource_pause(self, name: str, until: float) -> None:
        """Grant nothing before ``until`` (the provider answered 429: everyone backs off)."""

        async def body(tx: Transaction) -> None:
            await tx.execute(self.q["pause_resource"], {"name": name, "until": until})

        await self._tx(body)

    async def resource_snapshot(self, name: str) -> ResourceSnapshot:
        now = self.clock()

        async def body(tx: Transaction) -> ResourceSnapshot:
            row = await tx.fetchone(self.q["lock_resource"], {"name": name})
            if row is None:
                raise InvalidInput(f"no shared resource named {name!r}")
            rows = await tx.fetchall(self.q["resource_requests"], {"name": name})
            window = await tx.fetchone(
                self.q["usage_window"], {"name": name, "since": now - WINDOW}
            )
            assert window is not None
            return ResourceSnapshot(
                name=name,
                capacity=int(row[0]),
                holders=sum(int(r[2]) for r in rows if r[1] == "holding"),
                waiting={str(r[0]): int(r[2]) for r in rows if r[1] == "waiting"},
                tick=int(row[4]),
                requests_in_window=int(window[0]),
                tokens_in_window=int(window[1]),
                paused_until=float(row[6]),
            )

        return await self._tx(body)

    # -- the grant step -----------------------------------------------------------------------

    async def _grant(
        self, tx: Transaction, name: str, now: float, ttl: float, *, grants: int = 1
    ) -> list[str]:
        """Run the grant step up to ``grants`` times (each grants at most one request) and
        reserve the grants' tokens. Returns the granted requests where the backend has no
        notifications (SQLite); on PostgreSQL nothing is awaited (the NOTIFY tells every
        process, this one included, at COMMIT) and the list is empty.

        A request or a release grants once: the one slot it could free. Where more slots are
        free (expired holders, a raised capacity, a window that rolled), the next poll of any
        waiting process grants them."""
        params = {"name": name, "now": now, "since": now - WINDOW, "expires_at": now + ttl}
        for _ in range(grants):  # each grant in the window before the next is decided
            await tx.execute(self.q["grant_next"], params)
            await tx.execute(self.q["record_grants"], {"name": name, "now": now})
        if self.dialect == "postgres":
            await tx.execute(self.q["grants_made"], {"name": name, "now": now})
            return []
        return [
            str(r[0]) for r in await tx.fetchall(self.q["grants_made"], {"name": name, "now": now})
        ]
