"""Replaying a run's journal.

Every call an agent makes through its context that must not happen twice — a step, an event,
a spawn, a wait, a sleep, a charge — is recorded in the journal in call order. On a later
delivery the agent runs again from the top; each such call then takes the next recorded entry
instead of acting, so completed work is never redone. An agent that asks for something other
than what the journal holds at that position has changed its path: ``NonDeterminismError``.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.errors import NonDeterminismError
from corral.models import JournalEntry

#: journal kinds written by context calls, replayed in order; all other kinds are bookkeeping
REPLAYED_KINDS = frozenset({"step", "event", "spawn", "wait", "sleep", "charge"})


class Replay:
    def __init__(self, run_id: str, history: Sequence[JournalEntry]) -> None:
        self.run_id = run_id
        self._entries = [e for e in history if e.kind in REPLAYED_KINDS]
        self._position = 0

    @property
    def replaying(self) -> bool:
        return self._position < len(self._entries)

    def next(self, kind: str, name: str | None) -> JournalEntry | None:
        """The recorded entry for this call, or None once the journal is exhausted (the call
        is new and must act, then record itself)."""
        if self._position >= len(self._entries):
            return None
        entry = self._entries[self._position]
        if entry.kind != kind or entry.name != name:
            raise NonDeterminismError(
                f"run {self.run_id} is not deterministic: call #{self._position + 1} asked for "
                f"{kind} {name!r}, but the journal recorded {entry.kind} {entry.name!r} there "
                f"(seq {entry.seq}). Agents must make the same context calls in the same order "
                f"on every delivery; keep non-deterministic work inside ctx.step()."
            )
        self._position += 1
        return entry
