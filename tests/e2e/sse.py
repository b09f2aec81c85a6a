"""A small Server-Sent Events parser for the tests (the text/event-stream format)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    event: str
    data: Any
    id: str | None


@dataclass
class Parser:
    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None

    def feed(self, line: str) -> Event | None:
        """One line (without its newline); returns an event when a blank line ends one."""
        if line == "":
            done = (
                Event(self.event, json.loads("\n".join(self.data)), self.id) if self.data else None
            )
            self.event, self.data, self.id = "message", [], None
            return done
        if line.startswith(":"):  # a comment (keepalive)
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None


def parse(text: str) -> list[Event]:
    parser = Parser()
    events = [parser.feed(line) for line in text.split("\n")]
    return [e for e in events if e is not None]


async def aiter_events(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """Events from a live response's ``aiter_lines()``."""
    parser = Parser()
    async for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event
