"""What a PostgreSQL store knows of its workers' handoff offers (see offer_slots).

A worker waiting for work offers its free slots; a submit that finds a live offer stores its
run already leased to that worker and notifies the worker's own channel with the lease
(``submit_one`` in sql/postgres/queries.sql). This holds, per worker of this process, the
advisory-lock key its offer names, the channel it is heard on, and the leases heard of and
not yet taken.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from corral.models import Lease
from corral.store.sql_lease import lease_from_row

#: where the input goes among lease_from_row's columns (the notification carries it apart)
INPUT_COLUMN = 4


class Handoffs:
    def __init__(self) -> None:
        #: worker id -> the advisory-lock key its listening session holds
        self._keys: dict[str, int] = {}
        #: channel -> worker id, for the channels the current listening session LISTENs to
        self._channels: dict[str, str] = {}
        self._handed: dict[str, list[Lease]] = {}
        #: what to call when runs are handed to a worker (it takes them)
        self._callbacks: dict[str, Callable[[], object]] = {}

    def key(self, owner: str) -> int:
        """``owner``'s lock key (made on first use: a worker's offers all name the same)."""
        if owner not in self._keys:
            self._keys[owner] = secrets.randbits(63)
        return self._keys[owner]

    def owners(self) -> list[str]:
        return list(self._keys)

    def knows(self, owner: str) -> bool:
        return owner in self._keys

    def listening(self, channel: str, owner: str) -> None:
        self._channels[channel] = owner

    def is_listening(self, owner: str) -> bool:
        return owner in self._channels.values()

    def forget(self, owner: str) -> tuple[str | None, int | None]:
        """Drop ``owner``: its channel (if the session listens to it) and its lock key (if
        it has one), for the listening session to let go of."""
        channel = next((c for c, o in self._channels.items() if o == owner), None)
        if channel is not None:
            del self._channels[channel]
        self._handed.pop(owner, None)
        self._callbacks.pop(owner, None)
        return channel, self._keys.pop(owner, None)

    def disconnected(self) -> None:
        """The listening session ended: its channels and locks went with it."""
        self._channels.clear()

    def owner_of(self, channel: str) -> str | None:
        return self._channels.get(channel)

    def hand(self, owner: str, payload: str) -> bool:
        """Keep the lease a handoff notification carries: a JSON array of lease_from_row's
        columns without the input, a newline, then the input's JSON text. True when the
        worker's callback took it (nobody then needs waking for it)."""
        header, _, input_text = payload.partition("\n")
        row = json.loads(header)
        row.insert(INPUT_COLUMN, input_text)
        self._handed.setdefault(owner, []).append(lease_from_row(tuple(row)))
        callback = self._callbacks.get(owner)
        if callback is None:
            return False
        callback()
        return True

    def take(self, owner: str) -> list[Lease]:
        return self._handed.pop(owner, [])

    def on_handed(self, owner: str, callback: Callable[[], object] | None) -> None:
        if callback is None:
            self._callbacks.pop(owner, None)
        else:
            self._callbacks[owner] = callback
