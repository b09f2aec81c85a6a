"""Shared contention resources: one capacity, request rate and token rate for every process.

Each acquire is a row in ``corral_resource_requests`` (``waiting`` or ``holding``) with an
expiry that its process renews while it waits or holds; a killed process's rows expire and
their slots come back. Every change runs the grant step under the resource row's lock: expired
rows are dropped (an expired holder counts as a release: the tick advances), then, while a slot
is free and the rolling one-minute request and token windows allow, the waiting agent with the
highest load score L(i) (``corral.contention.score.choose``, the same pure function the
in-process scheduler is checked against) gets its oldest request granted. Tokens are reserved
at grant (the request's expected tokens) and settled to the actual usage at release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.contention.score import AgentLoad, choose
from corral.errors import BackpressureError, InvalidInput
from corral.store.sql_base import SqlBase
from corral.store.transaction import Row, Transaction

WINDOW = 60.0  #: seconds of the request-per-minute and token-per-minute windows


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

        async def body(tx: Transaction) -> tuple[str, list[str]]:
            row = await self._lock_resource(tx, name, now)
            counts = await self._counts(tx, name)
            if counts.get("waiting", 0) >= max_waiters:
                raise BackpressureError(f"{name}: {max_waiters} requests already waiting")
            if max_waiters_per_agent is not None:
                mine = await tx.fetchone(
                    self.q["count_agent_waiting"], {"name": name, "agent_id": agent_id}
                )
                if mine is not None and mine[0] >= max_waiters_per_agent:
                    raise BackpressureError(
                        f"{name}: agent {agent_id!r} already has {max_waiters_per_agent} waiting"
                    )
            seq = await tx.fetchone(self.q["bump_seq"], {"name": name})
            assert seq is not None
            await tx.execute(
                self.q["insert_request"],
                {
                    "name": name,
                    "request_id": request_id,
                    "agent_id": agent_id,
                    "weight": weight,
                    "tokens": tokens,
                    "tick": row[4],
                    "seq": seq[0],
                    "expires_at": now + ttl,
                },
            )
            granted = await self._grant(tx, name, row, now, ttl)
            state = await tx.fetchone(
                self.q["request_states"], {"name": name, "request_id": request_id}
            )
            return (str(state[1]) if state else "gone"), granted

        state, granted = await self._tx(body)
        if granted:
            self._note_grants(granted)
        return state

    async def resource_poll(
        self, name: str, request_ids: Sequence[str], ttl: float
    ) -> dict[str, str]:
        """Renew these requests, run the grant step, and return each one's state
        (``waiting``, ``holding``, or ``gone`` if it expired)."""
        now = self.clock()

        async def body(tx: Transaction) -> tuple[dict[str, str], list[str]]:
            row = await self._lock_resource(tx, name, now)
            granted = await self._grant(tx, name, row, now, ttl)
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

    async def resource_release(
        self, name: str, request_id: str, *, tokens_used: int | None, ttl: float
    ) -> bool:
        """Remove a request: a holder's release advances the tick and grants the next waiter;
        a waiter just leaves the queue. True if it was holding."""
        now = self.clock()

        async def body(tx: Transaction) -> tuple[bool, list[str]]:
            row = await self._lock_resource(tx, name, now)
            removed = await tx.fetchone(
                self.q["remove_request"], {"name": name, "request_id": request_id}
            )
            held = removed is not None and removed[0] == "holding"
            if held:
                await tx.execute(self.q["advance_tick"], {"name": name, "n": 1})
                if tokens_used is not None:
                    await tx.execute(
                        self.q["settle_usage"],
                        {
                            "name": name,
                            "request_id": request_id,
                            "tokens": tokens_used,
                        },
                    )
            if held:  # the tick the grant step scores with has just advanced
                row = (*row[:4], row[4] + 1, *row[5:])
            return held, await self._grant(tx, name, row, now, ttl)

        held, granted = await self._tx(body)
        if granted:
            self._note_grants(granted)
        return held

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

    async def _lock_resource(self, tx: Transaction, name: str, now: float) -> Row:
        """Lock the resource row and drop expired requests (an expired holder is a release)."""
        row = await tx.fetchone(self.q["lock_resource"], {"name": name})
        if row is None:
            raise InvalidInput(f"no shared resource named {name!r}")
        expired = await tx.fetchall(self.q["expired_requests"], {"name": name, "now": now})
        released = sum(1 for (state,) in expired if state == "holding")
        if released:
            await tx.execute(self.q["advance_tick"], {"name": name, "n": released})
            row = await tx.fetchone(self.q["lock_resource"], {"name": name})
            assert row is not None
        return row

    async def _counts(self, tx: Transaction, name: str) -> dict[str, int]:
        return {
            str(s): int(n) for s, n in await tx.fetchall(self.q["count_requests"], {"name": name})
        }

    async def _grant(
        self, tx: Transaction, name: str, row: Row, now: float, ttl: float
    ) -> list[str]:
        capacity, rpm, tpm, alpha, tick, _seq, paused_until = row
        if paused_until > now:
            return []
        holding = (await self._counts(tx, name)).get("holding", 0)
        window = await tx.fetchone(self.q["usage_window"], {"name": name, "since": now - WINDOW})
        assert window is not None
        requests, tokens = int(window[0]), int(window[1])
        granted: list[str] = []
        while holding < capacity and (rpm is None or requests < rpm):
            agents = [
                AgentLoad(str(a), float(q), int(oldest), int(seq))
                for a, q, oldest, seq in await tx.fetchall(self.q["waiting_agents"], {"name": name})
            ]
            winner = choose(agents, int(tick), float(alpha))
            if winner is None:
                break
            request = await tx.fetchone(
                self.q["oldest_request_of"], {"name": name, "agent_id": winner}
            )
            assert request is not None
            request_id, expected = request
            if tpm is not None and tokens + int(expected) > tpm:
                break  # the winner waits for the window to roll; nobody overtakes it
            await tx.execute(
                self.q["grant_request"],
                {
                    "name": name,
                    "request_id": request_id,
                    "now": now,
                    "expires_at": now + ttl,
                },
            )
            await tx.execute(
                self.q["record_usage"],
                {
                    "name": name,
                    "request_id": request_id,
                    "now": now,
                    "tokens": int(expected),
                },
            )
            holding += 1
            requests += 1
            tokens += int(expected)
            granted.append(str(request_id))
        if granted:
            if int(tick) % 64 == 0:  # prune the usage window now and then, not per grant
                await tx.execute(self.q["forget_usage"], {"name": name, "before": now - 2 * WINDOW})
            await tx.execute(self.q["notify_grants"], {"payload": ",".join([name, *granted])})
        return granted
