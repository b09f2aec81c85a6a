"""The store logic both SQL backends share: one implementation of every verb of the contract,
assembled from mixins of one job each.

A backend supplies a ``Transaction`` (see ``transaction.py``) and its dialect's named queries;
everything that decides what a verb does lives here once. Every verb is one transaction, run
through ``_tx``, which a backend may retry whole on a deadlock or a busy database: bodies are
written to be re-runnable.

Tenant counters (``queued``, ``in_flight`` on ``corral_tenants``) are moved in the same
transaction as the run rows they count; caps and quotas are checked against them, so they hold
with any number of workers. Tenant rows are always locked in sorted order (no lock cycles;
see sql_lease).
"""

from __future__ import annotations

from corral.store.sql_ack_lease import AckLeaseMixin
from corral.store.sql_base import SqlBase, dumps, loads, run_from_row
from corral.store.sql_durable import DurableMixin
from corral.store.sql_expiry import ExpiryMixin
from corral.store.sql_keys import ApiKeysMixin, ServiceReadsMixin
from corral.store.sql_lease import LeaseMixin
from corral.store.sql_queue import QueueMixin
from corral.store.sql_resources import ResourcesMixin
from corral.store.sql_retention import RetentionMixin
from corral.store.sql_schedules import SchedulesMixin
from corral.store.sql_tenancy import TenancyMixin
from corral.store.sql_workers import WorkersMixin


class SqlStore(
    AckLeaseMixin,
    SchedulesMixin,
    QueueMixin,
    LeaseMixin,
    DurableMixin,
    TenancyMixin,
    ResourcesMixin,
    RetentionMixin,
    ExpiryMixin,
    ApiKeysMixin,
    ServiceReadsMixin,
    WorkersMixin,
):
    """A backend subclasses this and implements the hooks declared on ``SqlBase``."""


__all__ = ["SqlBase", "SqlStore", "dumps", "loads", "run_from_row"]
