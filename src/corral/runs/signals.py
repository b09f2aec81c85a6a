"""Control flow between a run's context and its worker. These derive from BaseException so an
agent's ``except Exception`` cannot swallow them."""

from __future__ import annotations


class Suspended(BaseException):
    """The run was suspended in the store (lease and tenant slot given back): stop executing."""


class CancelRequested(BaseException):
    """Cancellation of the run was requested: stop executing and record it cancelled."""
