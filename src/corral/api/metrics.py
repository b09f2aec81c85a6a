"""Prometheus metrics of one service instance, in a registry of its own (no module state).

Two kinds of figures:

* read from the store at each scrape (``refresh``), so they are the same whichever instance is
  scraped: queue depth, oldest queued age, in flight and cap per tenant; runs per status;
  submitted and finished runs; redeliveries; handoffs; lease-expiry dead letters and leases
  expired but not yet reclaimed; the suggested worker count; the workers by state (running,
  draining, lost) with their slots, busy slots and stuck agents; each recurring schedule's latest
  tick and latest tick that got a run (those declared in code: tenants' own schedules, created
  at run time, would be a series each without bound, and are counted instead, running and
  paused); and the queue wait of every run
  first leased since the previous scrape (a histogram fed from the store, so with several API
  replicas each replica observes every run — aggregate with ``max``, not ``sum``, across
  replicas);
* observed by this instance: submit latency, submits and backpressure rejections per tenant.

Contention schedulers (``corral.contention.Scheduler`` or anything with a ``statistics()`` of
the same shape) can be handed to ``create_api``; their holders, waiters, grants and rejections
are exported with a ``scheduler`` label.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from corral.api.settings import ApiSettings
from corral.models import TERMINAL, QueueStats, WorkerPresence, WorkerState
from corral.store import Store
from corral.store.sql_keys import DeliveryCounters

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


class SchedulerStatisticsLike(Protocol):
    @property
    def holders(self) -> int: ...
    @property
    def waiters(self) -> int: ...
    @property
    def grants(self) -> int: ...
    @property
    def rejections(self) -> int: ...


class SchedulerLike(Protocol):
    def statistics(self) -> SchedulerStatisticsLike: ...


@dataclass(frozen=True, slots=True)
class _Snapshot:
    stats: QueueStats
    counters: DeliveryCounters
    suggested: int
    schedulers: dict[str, SchedulerStatisticsLike] = field(default_factory=dict)
    #: per recurring schedule seen by the store: its latest tick, and the latest that got a run
    schedule_ticks: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    #: schedules created at run time: how many run, how many are paused
    stored_schedules: tuple[int, int] = (0, 0)
    #: the workers' latest reports, and the instant (store clock) they were read at
    workers: list[WorkerPresence] = field(default_factory=list)
    read_at: float = 0.0


def suggest(stats: QueueStats, settings: ApiSettings) -> int:
    return stats.suggested_workers(
        age_target=settings.age_target,
        slots_per_worker=settings.slots_per_worker,
        min_workers=settings.min_workers,
        max_workers=settings.max_workers,
    )


class _StoreCollector:
    """Turns the last snapshot into metric families when the registry is collected."""

    def __init__(self) -> None:
        self.snapshot: _Snapshot | None = None

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        if snap is None:
            return []
        s = snap.stats
        depth = GaugeMetricFamily(
            "corral_queue_depth", "Runs queued, per tenant.", labels=["tenant"]
        )
        oldest = GaugeMetricFamily(
            "corral_oldest_queued_age_seconds",
            "Age of the oldest runnable queued run, per tenant.",
            labels=["tenant"],
        )
        in_flight = GaugeMetricFamily(
            "corral_in_flight", "Runs leased by a worker, per tenant.", labels=["tenant"]
        )
        cap = GaugeMetricFamily(
            "corral_tenant_cap",
            "In-flight cap per tenant (absent when unlimited).",
            labels=["tenant"],
        )
        tenant_finished = CounterMetricFamily(
            "corral_tenant_runs_finished",
            "Runs that ended, per tenant and final status.",
            labels=["tenant", "status"],
        )
        for t in s.tenants:
            for status, n in (
                ("succeeded", t.succeeded),
                ("failed", t.failed),
                ("cancelled", t.cancelled),
            ):
                tenant_finished.add_metric([t.tenant, status], n)
            depth.add_metric([t.tenant], t.queued)
            oldest.add_metric([t.tenant], t.oldest_queued_age)
            in_flight.add_metric([t.tenant], t.in_flight)
            if t.cap is not None:
                cap.add_metric([t.tenant], t.cap)
        runs = GaugeMetricFamily(
            "corral_runs",
            "Runs per status (ended statuses: every run that ever ended, purged ones too).",
            labels=["status"],
        )
        for status, n in sorted(s.by_status.items()):
            runs.add_metric([status], n)
        submitted = CounterMetricFamily(
            "corral_runs_submitted",
            "Runs accepted (a retried run once more).",
            value=sum(s.by_status.values()),
        )
        finished = CounterMetricFamily(
            "corral_runs_finished",
            "Runs that ended, per final status.",
            labels=["status"],
        )
        for status in sorted(TERMINAL):
            finished.add_metric([status.value], s.by_status.get(status.value, 0))
        c = snap.counters
        families: list[Metric] = [
            depth,
            oldest,
            in_flight,
            cap,
            runs,
            submitted,
            finished,
            tenant_finished,
            GaugeMetricFamily("corral_waiting_runs", "Runs suspended (ctx.wait).", value=s.waiting),
            CounterMetricFamily(
                "corral_redeliveries",
                "Deliveries beyond a run's first (retries and expired leases).",
                value=c.redeliveries,
            ),
            CounterMetricFamily(
                "corral_lease_expiry_dead_letters",
                "Runs dead-lettered because their last lease expired.",
                value=c.lease_expiry_dead_letters,
            ),
            CounterMetricFamily(
                "corral_handoffs",
                "Runs handed to a waiting worker at submit, started without a lease.",
                value=c.handoffs,
            ),
            GaugeMetricFamily(
                "corral_leases_expired_unreclaimed",
                "Running runs whose lease expired, not yet reclaimed.",
                value=c.expired_unreclaimed,
            ),
            GaugeMetricFamily(
                "corral_suggested_workers",
                "Workers the load needs against the age target (docs/service.md).",
                value=snap.suggested,
            ),
        ]
        if s.global_cap is not None:
            families.append(
                GaugeMetricFamily("corral_global_cap", "Global in-flight cap.", value=s.global_cap)
            )
        stored = GaugeMetricFamily(
            "corral_stored_schedules",
            "Schedules created at run time (POST /v1/schedules), by state.",
            labels=["state"],
        )
        stored.add_metric(["running"], snap.stored_schedules[0])
        stored.add_metric(["paused"], snap.stored_schedules[1])
        families.append(stored)
        families += _worker_families(snap.workers, snap.read_at)
        if snap.schedule_ticks:
            last_tick = GaugeMetricFamily(
                "corral_schedule_last_tick_timestamp_seconds",
                "Latest tick a recurring schedule has reached (Unix time).",
                labels=["schedule"],
            )
            last_run = GaugeMetricFamily(
                "corral_schedule_last_run_tick_timestamp_seconds",
                "Latest tick of a recurring schedule that got its run (Unix time): alert when "
                "time() minus this passes the schedule's period.",
                labels=["schedule"],
            )
            for name, (tick, run_tick) in sorted(snap.schedule_ticks.items()):
                last_tick.add_metric([name], tick)
                if run_tick is not None:
                    last_run.add_metric([name], run_tick)
            families += [last_tick, last_run]
        if snap.schedulers:
            holders = GaugeMetricFamily(
                "corral_scheduler_holders",
                "Acquires holding a shared resource.",
                labels=["scheduler"],
            )
            waiters = GaugeMetricFamily(
                "corral_scheduler_waiters",
                "Acquires waiting for a shared resource.",
                labels=["scheduler"],
            )
            grants = CounterMetricFamily(
                "corral_scheduler_grants", "Acquires granted.", labels=["scheduler"]
            )
            rejections = CounterMetricFamily(
                "corral_scheduler_rejections",
                "Acquires refused by backpressure.",
                labels=["scheduler"],
            )
            reclaims = CounterMetricFamily(
                "corral_scheduler_reclaims",
                "Holds of a shared resource taken back after they expired while in use "
                "(the process's renewals held up past the lease TTL); shared resources only.",
                labels=["scheduler"],
            )
            for name, st in sorted(snap.schedulers.items()):
                holders.add_metric([name], st.holders)
                waiters.add_metric([name], st.waiters)
                grants.add_metric([name], st.grants)
                rejections.add_metric([name], st.rejections)
                reclaimed = getattr(st, "reclaims", None)  # an in-process scheduler has none
                if isinstance(reclaimed, int):
                    reclaims.add_metric([name], reclaimed)
            families += [holders, waiters, grants, rejections]
            if reclaims.samples:
                families.append(reclaims)
        return families


def _worker_families(workers: list[WorkerPresence], now: float) -> list[Metric]:
    """The workers by state, and the slots, busy slots and stuck agents of those not lost."""
    states = collections.Counter(w.state(now) for w in workers)
    by_state = GaugeMetricFamily(
        "corral_workers",
        "Workers by state: running, draining, lost (not heard from for a lease TTL; counted "
        "for an hour).",
        labels=["state"],
    )
    for state in WorkerState:
        by_state.add_metric([state.value], states[state])
    live = [w for w in workers if w.state(now) != WorkerState.LOST]
    return [
        by_state,
        GaugeMetricFamily(
            "corral_worker_slots",
            "Run slots of the workers not lost (express slots included).",
            value=sum(w.slots for w in live),
        ),
        GaugeMetricFamily(
            "corral_worker_busy_slots",
            "Slots taken on the workers not lost, stuck agents' included.",
            value=sum(w.busy for w in live),
        ),
        GaugeMetricFamily(
            "corral_stuck_agents",
            "Agents that ignored a stop past their grace and still run, each in a slot (their "
            "runs were ended without them): alert when above 0.",
            value=sum(w.stuck for w in live),
        ),
    ]


class ServiceMetrics:
    def __init__(
        self,
        store: Store,
        settings: ApiSettings,
        schedulers: Mapping[str, SchedulerLike] | None = None,
        *,
        clock: Callable[[], float] | None = None,
        waits_page: int = 10_000,
    ) -> None:
        self.store = store
        #: queue-wait rows one store read takes at most
        self.waits_page = waits_page
        self.settings = settings
        self.schedulers = dict(schedulers or {})
        self.clock = clock or store.clock
        self.registry = CollectorRegistry()
        self.submit_latency = Histogram(
            "corral_submit_latency_seconds",
            "Time to accept a submit request: one run, or a batch (server side).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "corral_queue_wait_seconds",
            "Time from a run becoming runnable to its first lease.",
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.submits = Counter(
            "corral_api_submits",
            "Runs accepted through this instance.",
            ["tenant"],
            registry=self.registry,
        )
        self.backpressure = Counter(
            "corral_backpressure_rejections",
            "Submits refused with 429 (queue quota full).",
            ["tenant"],
            registry=self.registry,
        )
        self._collector = _StoreCollector()
        self.registry.register(self._collector)
        #: queue waits are observed for runs first leased after this instant (store clock)
        self._waits_since = self.clock()
        # one scrape at a time reads the window: two reading the same (since, until] together
        # observed its runs twice
        self._waits_lock = asyncio.Lock()

    def observe_submit(self, seconds: float, runs: Mapping[str, int]) -> None:
        """One submit call of ``seconds``, which accepted ``runs`` (how many, by tenant)."""
        self.submit_latency.observe(seconds)
        for tenant, n in runs.items():
            self.submits.labels(tenant).inc(n)

    def observe_backpressure(self, tenant: str) -> None:
        self.backpressure.labels(tenant).inc()

    async def refresh(self) -> None:
        stats = await self.store.stats()
        counters = await self.store.delivery_counters()
        await self._observe_queue_waits()
        self._collector.snapshot = _Snapshot(
            stats=stats,
            counters=counters,
            suggested=suggest(stats, self.settings),
            schedulers={name: s.statistics() for name, s in self.schedulers.items()},
            # the schedules in code only: tenants' own would be a series each, without bound
            schedule_ticks=await self.store.schedule_ticks(code_only=True),
            stored_schedules=await self.store.stored_schedule_counts(),
            workers=await self.store.workers(),
            read_at=self.clock(),
        )

    async def _observe_queue_waits(self) -> None:
        async with self._waits_lock:
            until = self.clock() - self.settings.metrics_settle
            while until > self._waits_since:
                rows = await self.store.queue_waits(self._waits_since, until, limit=self.waits_page)
                full = len(rows) >= self.waits_page
                page = rows
                if full:
                    # A full page may end inside a group of runs that started at one instant
                    # (one lease starts many): the cursor goes past that instant, so leave the
                    # whole group to the next read. A page that is all one instant is taken.
                    page = [row for row in rows if row[0] < rows[-1][0]] or rows
                for _started, wait in page:
                    self.queue_wait.observe(wait)
                self._waits_since = page[-1][0] if full else until
                if not full:
                    return

    async def exposition(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)
