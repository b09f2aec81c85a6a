"""Per-agent budgets: reserve the expected cost at grant, settle the actual usage at release.

Pure bookkeeping (no I/O, no asyncio). For every agent the ledger keeps ``spent`` (settled
usage) and ``reserved`` (expected cost of calls granted and not yet released). A call is
over budget when its expected cost does not fit in ``limit - spent - reserved`` (or nothing
is left at all). Because the reservation happens at grant time, concurrent calls cannot
together overshoot a limit on their expected costs; a call that then uses more than it
reserved is recorded as what it used, and the next call sees the overdraft.

What happens to an over-budget call depends on the mode:

* ``reject``: the acquire fails with :class:`corral.errors.BudgetExceeded`, takes no slot.
* ``alert``: the call goes ahead; an alert is recorded and ``on_alert`` is called.
* ``downgrade``: the call goes ahead with ``handle.downgrade`` set: use the cheaper option.

Unlike the scheduler's per-agent state, the ledger is kept for every agent that spent
something, until :meth:`Budget.reset`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from corral.errors import BudgetExceeded, InvalidInput


class BudgetMode(StrEnum):
    REJECT = "reject"
    ALERT = "alert"
    DOWNGRADE = "downgrade"


class Verdict(StrEnum):
    """Outcome of :meth:`Budget.reserve`."""

    OK = "ok"
    REJECTED = "rejected"  #: nothing reserved
    ALERTED = "alerted"  #: reserved, over budget, alert recorded
    DOWNGRADED = "downgraded"  #: reserved, over budget, caller told to downgrade


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    agent_id: str
    requested: float
    spent: float
    reserved: float
    limit: float
    mode: BudgetMode


def _check_amount(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0.0:
        raise InvalidInput(f"{what} must be a number >= 0, got {value!r}")
    return float(value)


class Budget:
    """Spend limits per agent, with reserve-at-grant / settle-at-release accounting."""

    def __init__(
        self,
        limits: Mapping[str, float] | None = None,
        *,
        default_limit: float | None = None,
        mode: BudgetMode | str = BudgetMode.REJECT,
        on_alert: Callable[[BudgetAlert], None] | None = None,
    ) -> None:
        try:
            self.mode = BudgetMode(mode)
        except ValueError:
            raise InvalidInput(
                f"budget mode must be one of reject/alert/downgrade, got {mode!r}"
            ) from None
        self.default_limit = (
            None if default_limit is None else _check_amount("default_limit", default_limit)
        )
        self._limits: dict[str, float] = {}
        for agent_id, limit in (limits or {}).items():
            self.set_limit(agent_id, limit)
        self._spent: dict[str, float] = {}
        self._reserved: dict[str, float] = {}
        self.on_alert = on_alert
        self.alerts: list[BudgetAlert] = []

    # -- limits and reading ----------------------------------------------------------------

    def set_limit(self, agent_id: str, limit: float | None) -> None:
        """Set (or with ``None`` remove) an agent's limit."""
        if limit is None:
            self._limits.pop(agent_id, None)
        else:
            self._limits[agent_id] = _check_amount("limit", limit)

    def limit(self, agent_id: str) -> float | None:
        return self._limits.get(agent_id, self.default_limit)

    def spent(self, agent_id: str) -> float:
        return self._spent.get(agent_id, 0.0)

    def reserved(self, agent_id: str) -> float:
        return self._reserved.get(agent_id, 0.0)

    def remaining(self, agent_id: str) -> float | None:
        """What is left after spend and reservations (may be negative); ``None``: no limit."""
        limit = self.limit(agent_id)
        if limit is None:
            return None
        return limit - self.spent(agent_id) - self.reserved(agent_id)

    def spend(self) -> dict[str, float]:
        """Settled spend of every agent that has spent anything."""
        return dict(self._spent)

    def exceeds(self, agent_id: str, cost: float) -> bool:
        """Would a call expected to cost ``cost`` be over this agent's budget now?"""
        remaining = self.remaining(agent_id)
        return remaining is not None and (remaining <= 0.0 or cost > remaining)

    # -- reserve and settle ----------------------------------------------------------------

    def reserve(self, agent_id: str, cost: float) -> Verdict:
        """At grant: reserve ``cost`` unless rejected (then nothing is reserved)."""
        over = self.exceeds(agent_id, cost)
        if over:
            if self.mode is BudgetMode.REJECT:
                return Verdict.REJECTED
            limit = self.limit(agent_id)
            assert limit is not None
            alert = BudgetAlert(
                agent_id, cost, self.spent(agent_id), self.reserved(agent_id), limit, self.mode
            )
            self.alerts.append(alert)
            if self.on_alert is not None:
                self.on_alert(alert)
        if cost:
            self._reserved[agent_id] = self._reserved.get(agent_id, 0.0) + cost
        if not over:
            return Verdict.OK
        return Verdict.ALERTED if self.mode is BudgetMode.ALERT else Verdict.DOWNGRADED

    def settle(self, agent_id: str, reserved: float, actual: float) -> None:
        """At release: drop the reservation, record what the call actually used."""
        if reserved:
            left = self._reserved.get(agent_id, 0.0) - reserved
            if left > 1e-9:
                self._reserved[agent_id] = left
            else:
                self._reserved.pop(agent_id, None)
        if actual:
            self._spent[agent_id] = self._spent.get(agent_id, 0.0) + actual

    def reset(self, agent_id: str | None = None) -> None:
        """Forget settled spend (of one agent, or of all); reservations in flight stay."""
        if agent_id is None:
            self._spent.clear()
        else:
            self._spent.pop(agent_id, None)


def check_cost(cost: float) -> float:
    """An expected cost is a number >= 0."""
    return _check_amount("cost", cost)


def over_budget_error(budget: Budget, agent_id: str, cost: float) -> BudgetExceeded:
    remaining = budget.remaining(agent_id)
    return BudgetExceeded(
        f"agent {agent_id!r} is over budget: expected cost {cost}, remaining {remaining}",
        requested=cost,
        remaining=remaining if remaining is not None else 0.0,
    )
