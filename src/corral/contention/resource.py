"""SharedResource: a named capacity that a scheduler hands out, changeable at run time."""

from __future__ import annotations

from collections.abc import Callable

from corral.errors import InvalidInput


def check_capacity(capacity: object) -> int:
    """A capacity is an ``int`` (not a bool) of at least 1; anything else is ``InvalidInput``."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise InvalidInput(f"capacity must be an integer >= 1, got {capacity!r}")
    return capacity


def check_count(what: str, value: int) -> int:
    """A count limit (max_waiters...) is an ``int`` (not a bool) of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{what} must be an integer >= 1, got {value!r}")
    return value


class SharedResource:
    """At most ``capacity`` holders at once (an LLM API's concurrency limit, a GPU, a tool).

    Raising ``capacity`` lets the owning scheduler grant waiters up to the new capacity at
    once; lowering it grants nothing while ``holders >= capacity`` (current holders finish
    normally). A resource belongs to at most one scheduler, which keeps ``holders`` exact.
    """

    __slots__ = ("_capacity", "_holders", "_listener", "name")

    def __init__(self, name: str, capacity: int = 1) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"resource name must be a non-empty string, got {name!r}")
        self.name = name
        self._capacity = check_capacity(capacity)
        self._holders = 0
        self._listener: Callable[[SharedResource], None] | None = None

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = check_capacity(value)
        if self._listener is not None:
            self._listener(self)

    @property
    def holders(self) -> int:
        """Slots currently granted (may exceed ``capacity`` right after it was lowered)."""
        return self._holders

    @property
    def available(self) -> int:
        """Free slots (0 when full or over capacity)."""
        return max(self._capacity - self._holders, 0)

    def _bind(self, listener: Callable[[SharedResource], None]) -> None:
        if self._listener is not None:
            raise InvalidInput(f"resource {self.name!r} already belongs to a scheduler")
        self._listener = listener

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, capacity={self._capacity}, "
            f"holders={self._holders})"
        )
