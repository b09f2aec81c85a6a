"""Settings of the HTTP service: a frozen dataclass, built by the caller (the CLI reads the
environment; nothing here does)."""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import InvalidInput
from corral.values import check_amount, check_positive


@dataclass(frozen=True, slots=True)
class ApiSettings:
    #: largest request body accepted; larger ones get 413 before any parsing
    max_body_bytes: int = 1_048_576
    #: the queueing SLA: how long the oldest queued run may wait (seconds). Drives the
    #: suggested worker count of ``/v1/queues`` and ``corral_suggested_workers``.
    age_target: float = 30.0
    #: run slots of one worker (``--concurrency`` of the workers being scaled)
    slots_per_worker: int = 10
    min_workers: int = 0
    max_workers: int | None = None
    #: how often the event streams look for new journal entries (seconds; one query per
    #: interval for all open streams of a service instance)
    stream_poll_interval: float = 0.1
    #: an idle event stream sends a comment this often, so proxies keep it open (seconds)
    stream_keepalive: float = 15.0
    #: how long a resolved API key is remembered; a revoked key stops working within this
    key_cache_ttl: float = 5.0
    #: serve /metrics without a key (otherwise it needs an admin key)
    public_metrics: bool = False
    #: /metrics observes the queue wait of runs leased at least this long ago, so a lease
    #: committed late is not skipped by the scrape cursor (seconds)
    metrics_settle: float = 2.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_body_bytes, bool)
            or not isinstance(self.max_body_bytes, int)
            or self.max_body_bytes < 1
        ):
            raise InvalidInput("max_body_bytes must be an integer >= 1")
        for name in ("age_target", "stream_poll_interval", "stream_keepalive"):
            check_positive(name, getattr(self, name))
        for name in ("key_cache_ttl", "metrics_settle"):
            check_amount(name, getattr(self, name))
        if not isinstance(self.slots_per_worker, int) or self.slots_per_worker < 1:
            raise InvalidInput("slots_per_worker must be an integer >= 1")
        if not isinstance(self.min_workers, int) or self.min_workers < 0:
            raise InvalidInput("min_workers must be an integer >= 0")
        if self.max_workers is not None and (
            not isinstance(self.max_workers, int) or self.max_workers < max(1, self.min_workers)
        ):
            raise InvalidInput("max_workers must be an integer >= max(1, min_workers)")
