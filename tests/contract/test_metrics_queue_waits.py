"""/metrics observes each run's queue wait once: across pages of the store read (runs one lease
started share a start time) and across scrapes that overlap."""

from __future__ import annotations

import asyncio

import pytest

from corral.api.metrics import ServiceMetrics
from corral.api.settings import ApiSettings
from corral.clock import FakeClock
from corral.models import Ack, RunSpec
from corral.store import Store

pytestmark = pytest.mark.timeout(60)


def _count(metrics: ServiceMetrics) -> float:
    value = metrics.registry.get_sample_value("corral_queue_wait_seconds_count")
    assert value is not None
    return value


async def test_every_first_lease_is_observed_once(store: Store, clock: FakeClock) -> None:
    metrics = ServiceMetrics(store, ApiSettings(metrics_settle=1.0), waits_page=5)
    await store.submit([RunSpec("a") for _ in range(12)])
    for _ in range(3):  # 3 leases of 4: each lease's 4 runs share one start time
        clock.advance(0.5)
        leases = await store.lease("w", 30.0, 4)
        await store.ack_many([Ack(x.run_id, x.epoch, None) for x in leases])
    clock.advance(2.0)
    # scrapes that overlap (two Prometheus servers on one replica) read one window
    await asyncio.gather(*(metrics.exposition() for _ in range(5)))
    assert _count(metrics) == 12  # pages of 5 end inside a lease's group of 4
    await metrics.exposition()
    assert _count(metrics) == 12
