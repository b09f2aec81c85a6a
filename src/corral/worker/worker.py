"""A worker: bounded slots, a lease loop, batched heartbeats and acks, graceful drain.

It leases only when a slot is free, as many runs as it has free slots; before it waits for work
it offers its free slots, and on PostgreSQL a run submitted meanwhile is handed to it already
leased (``store.offer_slots``: no lease stands between the submit and the run's start). The
acks of runs that ended while every slot was busy go with the lease of the slot they free
(``store.ack_and_lease``), a few at a time, others to the ack batcher. One heartbeat task
renews every lease it holds at about ttl/3; a lease the store reports lost has its task
cancelled without writing anything (fencing), and a run whose cancellation was requested is
stopped and recorded ``cancelled``. On stop (SIGTERM/SIGINT) it withdraws its offer, leases
nothing more, lets in-flight runs finish for up to ``drain_timeout`` seconds, then releases the
rest so another worker picks them up at once, without counting an attempt.

An agent told to stop (its run cancelled, its timeout passed, the worker draining, its lease
lost) has ``stop_grace`` seconds to do so. One that ignores the cancellation is given up on:
its run is ended as the stop meant (cancelled, failed with AgentTimeout, released) by the
worker instead, its heartbeats stop and the store refuses its writes from then on. Its task,
which cannot be stopped from outside, keeps its slot until it ends, so the worker never runs
more agents at once than it has slots; ``Worker.stuck`` names those runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from corral.contention.shared import SharedScheduler
from corral.dispatch import retry_delay
from corral.dispatch.schedule import Schedule
from corral.errors import (
    AgentTimeout,
    BudgetExceeded,
    ChildRunFailed,
    FanoutLimitError,
    InvalidInput,
    LeaseLost,
    NonDeterminismError,
    NonRetryableError,
    RunExpired,
    StepFailed,
    StoreUnavailable,
)
from corral.models import JSON, Ack, JournalEntry, Lease, LeaseRef, WorkerPresence
from corral.runs.context import FanoutLimits, RunContext
from corral.runs.signals import CancelRequested, Suspended
from corral.store import Store
from corral.values import check_json
from corral.worker.acker import AckBatcher
from corral.worker.expiry import expiry_loop
from corral.worker.presence import presence_loop
from corral.worker.retention import RETENTION_INTERVAL, retention_loop
from corral.worker.schedules import schedule_loop

log = logging.getLogger(__name__)

AgentFn = Callable[[RunContext, Any], Awaitable[JSON]]

#: failures that a retry would only repeat: replay answers the same calls the same way
DETERMINISTIC_FAILURES: tuple[type[Exception], ...] = (
    NonRetryableError,
    InvalidInput,
    NonDeterminismError,
    StepFailed,
    FanoutLimitError,
    BudgetExceeded,
    ChildRunFailed,
    RunExpired,
)


#: at most this many acks go with a lease (store.ack_and_lease). Measured in process on
#: PostgreSQL, no-op runs: one call instead of two is 10-50% more runs/s at concurrency 1-4
#: (one durable commit per run ended instead of two), no different at 8-16, and 25% fewer at
#: 32, where 32 acks at once are faster beside the lease, on a second connection
CARRY_MAX = 8

#: seconds before a run that came to a worker without its agent is offered again
AGENT_MISSING_RETRY = 30.0

#: seconds a stopping worker waits for the notifications of runs handed to it just before it
#: withdrew its offer (it gives them back before draining); they are a round trip away, or lost
#: with a dead listening session, when its last step (_give_back_leftovers) releases them
HANDOFF_GRACE = 0.5


def _where_awaiting(task: asyncio.Task[Any]) -> str:
    """Where a suspended task is, as a traceback: the chain of coroutines it awaits, down to
    the innermost (Task.get_stack gives only the outermost frame of a suspended task)."""
    frames = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "Awaiting (most recent call last):\n" + "".join(
        traceback.StackSummary.extract(frames).format()
    )


class AgentNotOnWorker(Exception):
    """The run's agent is not registered on this worker. During a rolling deploy another
    worker may have it, so this is retried like any failure, but no sooner than
    ``AGENT_MISSING_RETRY`` seconds: the run's attempts then span a deploy, instead of being
    dead-lettered by the first old worker that leased it."""


#: step threads beyond one per slot: for agents that run a few blocking steps at once
SPARE_STEP_THREADS = 4


class _Stop(Enum):
    LEASE_LOST = "lease_lost"
    CANCELLED = "cancelled"
    DRAIN = "drain"
    TIMEOUT = "timeout"


#: what the worker writes for a run whose agent it gave up on, by the stop it ignored
_GIVEN_UP_AS = {
    _Stop.LEASE_LOST: "left to the worker that owns it now",
    _Stop.CANCELLED: "recorded cancelled",
    _Stop.DRAIN: "released to another worker",
    _Stop.TIMEOUT: "failed with AgentTimeout",
}


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    concurrency: int = 10
    lease_ttl: float = 30.0
    drain_timeout: float = 30.0
    #: longest an idle worker waits before asking again (notifications usually wake it sooner)
    poll_interval: float = 1.0
    retry_base: float = 1.0
    retry_cap: float = 300.0
    limits: FanoutLimits = field(default_factory=FanoutLimits)
    #: shared resources agents reach with ctx.acquire(name)
    resources: Mapping[str, SharedScheduler] = field(default_factory=dict)
    #: seconds one attempt of an agent may run, by agent name (absent: no limit)
    timeouts: Mapping[str, float] = field(default_factory=dict)
    #: seconds an agent told to stop (cancel, timeout, drain, lost lease) has to end before
    #: the worker ends its run without it (see the module's docstring)
    stop_grace: float = 5.0
    #: slots beyond ``concurrency`` that only runs of light tenants take (fewer than
    #: ``express_below`` runs in flight anywhere): a quiet tenant's run starts at once even
    #: while a backlogged tenant holds every regular slot. 0: none.
    express_slots: int = 0
    express_below: int = 1
    #: delete run trees that ended more than this many seconds ago (see retention.py);
    #: None: keep every run
    retain: float | None = None
    #: seconds between two retention passes of this worker
    retention_interval: float = RETENTION_INTERVAL
    #: offer free slots while waiting, so that submits hand runs over already leased
    #: (PostgreSQL; store.offer_slots). Off: this worker only leases.
    handoffs: bool = True
    #: recurring runs this worker submits as their ticks come (see schedules.py)
    schedules: tuple[Schedule, ...] = ()
    #: also submit the runs of the schedules created at run time (Corral.create_schedule)
    stored_schedules: bool = False


class _Slot:
    __slots__ = ("abandoned", "express", "lease", "ref", "stop_reason", "task", "timeout")

    def __init__(self, lease: Lease, express: bool) -> None:
        self.lease = lease
        self.express = express
        self.ref = LeaseRef(lease.run_id, lease.epoch)
        self.task: asyncio.Task[None] | None = None
        self.stop_reason: _Stop | None = None
        #: the attempt's time limit, once its agent has started (None: no limit)
        self.timeout: float | None = None
        #: the agent ignored its stop past the grace: the worker ended the run without it and
        #: its task's outcome is no longer written anywhere
        self.abandoned = False


class Worker:
    def __init__(
        self,
        store: Store,
        agents: Mapping[str, AgentFn],
        options: WorkerOptions | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.agents = agents
        self.options = options or WorkerOptions()
        if self.options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.options.lease_ttl <= 0:
            raise ValueError("lease_ttl must be positive")
        if self.options.express_slots < 0:
            raise ValueError("express_slots must not be negative")
        if self.options.express_below < 1:
            raise ValueError("express_below must be at least 1")
        if self.options.retain is not None and self.options.retain < 0:
            raise ValueError("retain must not be negative")
        if self.options.retention_interval <= 0:
            raise ValueError("retention_interval must be positive")
        if self.options.stop_grace < 0:
            raise ValueError("stop_grace must not be negative")
        # Leases, handoff offers and the runs a stopping worker gives back are all found by
        # this id, so two live workers sharing one would act on each other's runs (give back
        # a run the other is executing, both take a run handed to the id). A name given by
        # the caller is reused by mistake easily (every replica configured alike), so the id
        # is always that name plus a random part of this worker's own.
        name = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.worker_id = f"{name}:{secrets.token_hex(4)}"
        self._started_at = store.clock()
        #: report this worker to the store now (see presence.py)
        self._presence_due = asyncio.Event()
        self._slots: dict[str, _Slot] = {}
        #: executions this worker no longer heartbeats or writes for: stopped because it
        #: leased their run again (see _start), or given up on (_give_up). Each holds its slot
        #: until its task ends.
        self._detached: set[_Slot] = set()
        #: the writes that end the runs of agents given up on
        self._endings: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._acker = AckBatcher(store, retry_for=self.options.lease_ttl)
        #: the threads steps of plain (blocking) functions run on: one per slot and a few
        #: more. On the event loop's default pool (min(32, CPUs + 4) threads, 6 on 2 cores)
        #: a worker of 12 slots ran 6 such steps at once, and the others' step timeouts
        #: counted their wait for a thread.
        slots = self.options.concurrency + self.options.express_slots
        self._step_threads = ThreadPoolExecutor(
            max_workers=slots + SPARE_STEP_THREADS, thread_name_prefix="corral-step"
        )
        #: True while the lease loop waits for a slot: the acks of runs that end then are
        #: carried by the freed slot's lease (store.ack_and_lease: one commit for both);
        #: otherwise acks go to the batcher at once
        self._carrying = False
        #: acks carried, for the next lease
        self._carried: list[Ack] = []
        #: free slots this worker's standing offer holds, as far as it knows: submits hand
        #: runs straight to a waiting worker (store.offer_slots), and each run handed, or
        #: leased, takes one
        self._offered = 0
        #: when (monotonic) the standing offer was last made or renewed (store.renew_offer)
        self._offer_renewed = 0.0
        #: the lease loop has ended: runs handed now are given back
        self._done_leasing = False
        #: handed runs being given back (no free slot, or stopping)
        self._giving_back: set[asyncio.Task[None]] = set()
        #: a lease call is under way (runs handed meanwhile wait for its runs)
        self._lease_under_way = False
        self.completed = 0
        #: runs this worker's retention passes deleted
        self.purged = 0

    @property
    def in_flight(self) -> int:
        return len(self._slots) + len(self._detached)

    def _holds_runs(self) -> bool:
        """Whether a run this worker executes has yet to end: agents given up on do not count
        (their runs were ended without them), so ``until_idle`` is not held by one forever."""
        return bool(self._slots) or any(not s.abandoned for s in self._detached)

    @property
    def stuck(self) -> list[str]:
        """The runs whose agents ignored a stop and were given up on, and are still running
        (their slots stay taken until they end)."""
        return sorted(
            s.lease.run_id
            for s in self._detached
            if s.abandoned and s.task is not None and not s.task.done()
        )

    def presence(self) -> WorkerPresence:
        """This worker's report of itself, as of now (``Store.report_worker``)."""
        return WorkerPresence(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            seen_at=self.store.clock(),
            lease_ttl=self.options.lease_ttl,
            concurrency=self.options.concurrency,
            express_slots=self.options.express_slots,
            busy=self.in_flight,
            stuck=len(self.stuck),
            completed=self.completed,
            draining=self._stopping.is_set(),
            agents=tuple(sorted(self.agents)),
        )

    def _regular_in_flight(self) -> int:
        regular = sum(not s.express for s in self._slots.values())
        if self._detached:
            regular += sum(not s.express for s in self._detached)
        return regular

    def stop(self) -> None:
        """Stop leasing and drain (what SIGTERM and SIGINT do)."""
        self._stopping.set()
        self._presence_due.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self, *, until_idle: bool = False) -> None:
        """Lease and execute until ``stop()``; with ``until_idle``, also stop once nothing is
        queued, running or waiting anywhere in the store."""
        self._acker.start()
        self.store.on_handed(self.worker_id, self._on_handed)
        background = [asyncio.create_task(self._heartbeat_loop(), name="corral-heartbeat")]
        report = presence_loop(
            self.store, self.presence, self.options.lease_ttl / 3, self._presence_due
        )
        background.append(asyncio.create_task(report, name="corral-presence"))
        if self.options.retain is not None:
            background.append(
                asyncio.create_task(
                    retention_loop(
                        self.store,
                        self.options.retain,
                        self.options.retention_interval,
                        on_purged=self._count_purged,
                    ),
                    name="corral-retention",
                )
            )
        background.append(asyncio.create_task(expiry_loop(self.store), name="corral-expiry"))
        if self.options.schedules or self.options.stored_schedules:
            loop = schedule_loop(
                self.store, self.options.schedules, stored=self.options.stored_schedules
            )
            background.append(asyncio.create_task(loop, name="corral-schedules"))
        try:
            await self._lease_loop(until_idle)
        finally:
            await self._drain()
            self.store.on_handed(self.worker_id, None)
            self._start_handed()  # late notifications of runs handed before the withdrawal
            if self._giving_back:
                await asyncio.gather(*self._giving_back, return_exceptions=True)
            for task in background:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*background)
            await self._acker.close()
            # (threads of agents given up on run on: nothing waits for them)
            self._step_threads.shutdown(wait=False)
            await self._give_back_leftovers()
            try:
                await self.store.forget_worker(self.worker_id)
            except Exception as exc:  # a stop must end; the store's close drops them too
                log.warning("could not drop this worker's handoff channel: %s", exc)
            try:
                await self.store.remove_worker(self.worker_id)
            except Exception as exc:  # a stop must end: the row reads as lost after a TTL
                log.warning("could not remove this worker's report from the store: %s", exc)

    async def _give_back_leftovers(self) -> None:
        """Give back the runs the store still holds as leased to this worker once every run it
        started has ended and every ack is written: a lease call abandoned after its commit
        (the worker torn down while the call ran), a run handed after the offer was withdrawn.
        Left alone, they would wait out their lease TTL before another worker could take them.
        After a failed ack write the run is among them and is given back too: it runs again
        now instead of after the TTL, which is what its expiry would have led to."""
        try:
            leftovers = await self.store.leased_to(self.worker_id)
            if leftovers:
                await self.store.release_many(leftovers)
                log.info("gave back %d runs leased to this worker but not run", len(leftovers))
        except Exception as exc:  # a stop must end: they come back after their lease TTL
            log.warning("could not give back runs leased to this worker: %s", exc)

    def _count_purged(self, n: int) -> None:
        self.purged += n

    async def _lease_loop(self, until_idle: bool) -> None:
        try:
            await self._leasing(until_idle)
        finally:
            self._done_leasing = True
            # the loop stopped before the lease they waited for: the batcher writes them
            for ack in self._carried:
                self._acker.ack(ack)
            self._carried = []
            await self._withdraw_offer()

    async def _leasing(self, until_idle: bool) -> None:
        options = self.options
        while not self._stopping.is_set():
            regular = self._regular_in_flight()
            regular_free = options.concurrency - regular
            express_free = options.express_slots - (self.in_flight - regular)
            express = regular_free <= 0
            free = express_free if express else regular_free
            if free <= 0:
                self._slot_freed.clear()
                self._carrying = True
                try:
                    await self._until(self._slot_freed.wait())
                finally:
                    self._carrying = False
                continue
            try:
                # runs handed meanwhile wait for this call's runs: both may not fit
                self._lease_under_way = True
                try:
                    leases = await self._lease(free, express)
                finally:
                    self._lease_under_way = False
            except StoreUnavailable as exc:
                log.warning("lease failed, retrying: %s", exc)
                self._start_handed()
                await self._until(asyncio.sleep(options.poll_interval))
                continue
            # every lease takes its runs from this worker's offer first (the store's side:
            # lease_fast's offered, offer_taken)
            self._offered = max(0, self._offered - len(leases))
            for lease in leases:
                self._start(lease, express)
            self._start_handed()
            if leases:
                if len(leases) < free:
                    # the queue ran dry (the next lease will likely find little): let the runs
                    # just leased start before that call, whose client work delays them
                    # ~0.5 ms. With a full lease, going on at once measured faster: the acks
                    # of the runs about to end go out ahead of the next lease.
                    await asyncio.sleep(0)
                continue
            if express:
                # every regular slot is busy: wait for one to free, or for a light tenant's work
                if self._regular_in_flight() < options.concurrency:
                    continue  # one freed while the lease ran
                self._slot_freed.clear()
                await self._until(
                    self._slot_freed.wait(),
                    self.store.wait_for_work(
                        options.poll_interval, light_below=options.express_below
                    ),
                )
                continue
            if until_idle and not self._holds_runs() and await self._store_idle():
                return
            # (an ack of this worker's wakes it too, and the slot it freed goes back on offer)
            await self._offer_free_slots()
            wait = options.poll_interval
            if self._offered:
                wait = min(wait, self._offer_renew_interval())
            await self._until(self.store.wait_for_work(wait), timeout=wait)

    async def _lease(self, free: int, express: bool) -> list[Lease]:
        """Lease up to ``free`` runs, writing the carried acks in the same call. Acks the
        call may not have written go back to the batcher (it writes them again; an ack that
        did land is then refused as a lost lease, which changes nothing)."""
        acks, self._carried = self._carried, []
        light_below = self.options.express_below if express else None
        if len(acks) > CARRY_MAX:
            # many runs ended at once: their acks (a separate call) and this lease run side
            # by side on the database, faster than one statement doing both
            for ack in acks:
                self._acker.ack(ack)
            acks = []
        if not acks:
            return await self.store.lease(
                self.worker_id, self.options.lease_ttl, free, light_below=light_below
            )
        try:
            done = await self.store.ack_and_lease(
                acks, self.worker_id, self.options.lease_ttl, free, light_below=light_below
            )
        except BaseException:
            for ack in acks:
                self._acker.ack(ack)
            raise
        for ack in done.unwritten:
            self._acker.ack(ack)
        if done.lost:
            log.info(
                "%d acks refused, their leases lost to other workers: %s",
                len(done.lost),
                ", ".join(sorted(done.lost)[:10]),
            )
        return done.leases

    async def _offer_free_slots(self) -> None:
        """Before waiting: offer the free regular slots to submits (store.offer_slots), so a
        run submitted while this worker waits starts without a lease of its own."""
        if not (self.store.hands_off and self.options.handoffs):
            return
        self._start_handed()
        free = self.options.concurrency - self._regular_in_flight()
        try:
            if free == self._offered:
                # the offer stands only while renewed: a worker that stops running (its
                # process frozen, its loop blocked) is soon handed nothing
                due = time.monotonic() - self._offer_renewed >= self._offer_renew_interval()
                if not free or not due:
                    return
                if await self.store.renew_offer(self.worker_id):
                    self._offer_renewed = time.monotonic()
                    return
                # no offer stands (dropped while the listening session was away): offer again
            if await self.store.offer_slots(self.worker_id, self.options.lease_ttl, free):
                self._offered = max(free, 0)
                self._offer_renewed = time.monotonic()
        except StoreUnavailable as exc:
            log.warning("offering free slots failed (runs are leased as usual): %s", exc)

    def _offer_renew_interval(self) -> float:
        return self.store.config.offer_lifetime / 3

    async def _withdraw_offer(self) -> None:
        """End the offer, and give back the runs handed before it ended."""
        if not self.store.hands_off or not self._offered:
            return
        try:
            left = await self.store.withdraw_offer(self.worker_id)
        except Exception as exc:
            # the offer's lock goes with this process's listening session, and with it the
            # offer: submits hand nothing to an offer whose lock is free
            log.warning("withdrawing the offer of free slots failed: %s", exc)
            left = self._offered
        expected = self._offered - left
        self._offered = 0
        deadline = time.monotonic() + HANDOFF_GRACE
        while expected > 0 and time.monotonic() < deadline:
            expected -= self._start_handed()
            if expected > 0:
                await asyncio.sleep(0.005)

    def _on_handed(self) -> None:
        """The store's call as handed runs arrive: start them now, unless a lease call is
        under way (they are started, or given back, when it returns and its runs are in)."""
        if not self._lease_under_way:
            self._start_handed()

    def _start_handed(self) -> int:
        """Start the runs submits handed to this worker; give back those it has no slot for
        (a handoff that crossed one of its own leases: they are not held unheartbeaten) or
        that come after it stopped leasing. Returns how many came."""
        handed = self.store.take_handed(self.worker_id)
        for lease in handed:
            self._offered = max(0, self._offered - 1)
            full = self._regular_in_flight() >= self.options.concurrency
            if full or self._done_leasing or self._stopping.is_set():
                task = asyncio.create_task(self._give_back(lease), name="corral-give-back")
                self._giving_back.add(task)
                task.add_done_callback(self._giving_back.discard)
            else:
                self._start(lease)
        return len(handed)

    async def _give_back(self, lease: Lease) -> None:
        try:
            # its agent was never called: the run's start_within still holds
            await self.store.release(LeaseRef(lease.run_id, lease.epoch), unstarted=True)
        except LeaseLost:
            pass
        except Exception as exc:  # its lease expires, and the run comes back then
            log.warning("giving back handed run %s failed: %s", lease.run_id, exc)

    async def _store_idle(self) -> bool:
        stats = await self.store.stats()
        return stats.queued == 0 and stats.in_flight == 0 and stats.waiting == 0

    async def _until(self, *awaitables: Awaitable[Any], timeout: float | None = None) -> None:
        """Wait for the first of ``awaitables`` (at most ``timeout``), returning early when
        the worker is asked to stop; the others are cancelled."""
        futures = [asyncio.ensure_future(a) for a in awaitables]
        futures.append(asyncio.ensure_future(self._stopping.wait()))
        try:
            await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in futures:
                if not f.done():
                    f.cancel()
            await asyncio.gather(*futures, return_exceptions=True)

    def _start(self, lease: Lease, express: bool = False) -> None:
        slot = _Slot(lease, express)
        earlier = self._slots.get(lease.run_id)
        if earlier is not None:
            # This worker's own lease on the run expired (its event loop was held up past the
            # TTL, so no heartbeat went out) and the store has just handed the run to it again.
            # The earlier execution is now a zombie whose writes the store refuses: stop it,
            # and let it keep its slot until its task has ended.
            self._interrupt(earlier, _Stop.LEASE_LOST)
            self._detached.add(earlier)
        self._slots[lease.run_id] = slot
        slot.task = asyncio.create_task(self._execute(slot), name=f"corral-run-{lease.run_id}")

    async def _execute(self, slot: _Slot) -> None:
        lease = slot.lease
        try:
            try:
                result = await self._call_agent(slot)
            except (Exception, asyncio.CancelledError, CancelRequested, Suspended) as exc:
                if slot.abandoned:
                    self._log_late_end(slot)
                else:
                    await self._after_raise(slot, exc)
                return
            if slot.abandoned:
                self._log_late_end(slot)
                return
            if slot.stop_reason is _Stop.CANCELLED or slot.stop_reason is _Stop.TIMEOUT:
                # the agent swallowed its stop and finished: the stop is what was asked
                await self._end_as_stopped(slot, slot.stop_reason)
                return
            try:
                check_json(result, "the agent's result")
            except InvalidInput as exc:
                # fail this run alone: an ack the store cannot encode would sink its batch
                await self._fail(slot, exc)
                return
            ack = Ack(lease.run_id, lease.epoch, result)
            # a child's ack wakes its parent, which the one-statement ack_and_lease leaves to
            # a second transaction after its lease: it goes to the batcher at once instead
            if self._carrying and lease.parent_id is None:
                self._carried.append(ack)
            else:
                self._acker.ack(ack)
            self.completed += 1
        except LeaseLost:
            log.info("lease on %s lost; another worker owns it now", lease.run_id)
        except Exception:  # never let one run's bookkeeping take the worker down
            log.exception("bookkeeping for run %s failed", lease.run_id)
        finally:
            if self._slots.get(lease.run_id) is slot:
                del self._slots[lease.run_id]
            else:
                self._detached.discard(slot)
            self._slot_freed.set()

    async def _after_raise(self, slot: _Slot, exc: BaseException) -> None:
        """Record how an agent's call ended when it did not return."""
        if isinstance(exc, Suspended):
            return  # the store already holds the run as waiting; its lease is gone
        if isinstance(exc, CancelRequested):
            await self.store.finish_cancelled(slot.ref)
        elif isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if slot.stop_reason is None and task is not None and not task.cancelling():
                # Nobody cancelled this task: the agent let a CancelledError of its own out
                # (a helper task it cancelled, a library's). That is a failure of the run,
                # retried and dead-lettered as any other, not a stop to give the run back
                # for: released, it came straight back, without end and without attempts.
                await self._fail(slot, exc)
            else:
                await self._after_cancel(slot, exc)
        elif slot.stop_reason is not None:
            # Told to stop, the agent raised an error of its own in place of the cancellation
            # (a client library that wraps it): the stop is what was asked, as when it returns
            # a value anyway. Recorded as a failure, a drain cost the run an attempt (or
            # dead-lettered it) instead of releasing it.
            await self._after_cancel(slot, exc)
        else:
            await self._fail(slot, exc)

    async def _call_agent(self, slot: _Slot) -> JSON:
        lease = slot.lease
        # expiry first: a late run ends whether or not this worker has its agent (a worker
        # without it would fail the first attempt otherwise, and the next is never expired)
        if lease.start_by is not None:  # given with the lease that starts the run only
            late = self.store.clock() - lease.start_by
            if late > 0:
                raise RunExpired(lease.run_id, late)
        agent = self.agents.get(lease.agent)
        if agent is None:
            raise AgentNotOnWorker(
                f"no agent named {lease.agent!r} is registered on worker {self.worker_id} "
                f"(it has: {', '.join(sorted(self.agents)) or 'none'})"
            )
        history = await self._history(lease) if lease.journal_seq > 1 else []
        ctx = RunContext(
            lease,
            self.store,
            history=history,
            limits=self.options.limits,
            resources=self.options.resources,
            threads=self._step_threads,
        )
        # the run's own limit (set at submit) before its agent's and the worker's default
        seconds = (
            lease.timeout if lease.timeout is not None else self.options.timeouts.get(lease.agent)
        )
        if seconds is None:
            return await agent(ctx, lease.input)
        # a stop like a cancel or a drain (not asyncio.timeout inside the task), so that an
        # agent ignoring it is given up on after the same grace
        slot.timeout = seconds
        timer = asyncio.get_running_loop().call_later(seconds, self._interrupt, slot, _Stop.TIMEOUT)
        try:
            return await agent(ctx, lease.input)
        finally:
            timer.cancel()

    @staticmethod
    def _timeout_error(slot: _Slot) -> AgentTimeout:
        assert slot.timeout is not None  # only a slot with a limit is stopped by it
        return AgentTimeout(slot.lease.agent, slot.timeout)

    async def _history(self, lease: Lease) -> list[JournalEntry]:
        """The journal of earlier deliveries, read once per delivery, for replay."""
        entries: list[JournalEntry] = []
        while True:
            page = await self.store.journal(
                lease.run_id, after=entries[-1].seq if entries else 0, limit=5000
            )
            entries.extend(page)
            if len(page) < 5000:
                return entries

    async def _after_cancel(self, slot: _Slot, exc: BaseException) -> None:
        reason = slot.stop_reason
        if reason is not None:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # this worker's own stop, handled here
        # chained to the cancellation: a timeout's recorded traceback then shows where the
        # agent was stuck
        await self._end_as_stopped(slot, reason, cause=exc)

    async def _end_as_stopped(
        self,
        slot: _Slot,
        reason: _Stop | None,
        *,
        cause: BaseException | None = None,
        where: str | None = None,
    ) -> None:
        """Write the end a stop means for its run, whether the agent stopped or was given up
        on (``where`` it was then awaiting): cancelled, failed with AgentTimeout, or released.
        A lost lease writes nothing (the run is another worker's); no reason at all (the task
        was cancelled from outside: the worker itself is being torn down) releases the run,
        so it is not stuck until its lease expires."""
        if reason is _Stop.CANCELLED:
            await self.store.finish_cancelled(slot.ref)
        elif reason is _Stop.TIMEOUT:
            error = self._timeout_error(slot)
            error.__cause__ = cause
            trace = None
            if where is not None:
                trace = f"{type(error).__name__}: {error}; the agent, not stopping, was at:\n"
                trace += where
            await self._fail(slot, error, trace=trace)
        elif reason is _Stop.DRAIN or reason is None:
            await self.store.release(slot.ref)

    async def _fail(self, slot: _Slot, exc: BaseException, *, trace: str | None = None) -> None:
        lease = slot.lease
        retryable = not isinstance(exc, DETERMINISTIC_FAILURES)
        delay = retry_delay(lease.attempt, base=self.options.retry_base, cap=self.options.retry_cap)
        if isinstance(exc, AgentNotOnWorker):
            delay = max(delay, AGENT_MISSING_RETRY)
            log.warning("run %s: %s; offered again in %.0f s", lease.run_id, exc, delay)
        error = {
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": (trace or "".join(traceback.format_exception(exc)))[-4000:],
            "attempt": lease.attempt,
        }
        await self.store.fail(
            slot.ref, error, retryable=retryable, retry_at=self.store.clock() + delay
        )

    def _give_up(self, slot: _Slot) -> None:
        """End the run of an agent that did not stop within the grace, without it: stop
        heartbeating it, write the end its stop meant, and let its task run on detached."""
        task = slot.task
        reason = slot.stop_reason
        if task is None or task.done() or slot.abandoned or reason is None:
            return
        slot.abandoned = True
        self._presence_due.set()  # the stuck agent shows in `corral workers` at once
        run_id = slot.lease.run_id
        if self._slots.get(run_id) is slot:
            del self._slots[run_id]
            self._detached.add(slot)
        where = _where_awaiting(task)
        log.warning(
            "run %s: agent %r did not stop within %.1f s of being told to (%s): its run is %s "
            "without it, and its task, left running, keeps its slot until it ends.\n%s",
            run_id,
            slot.lease.agent,
            self.options.stop_grace,
            reason.value,
            _GIVEN_UP_AS[reason],
            where.rstrip(),
        )
        task.cancel()  # once more: some agents swallow only the first
        ending = asyncio.create_task(
            self._end_given_up(slot, reason, where), name=f"corral-end-{run_id}"
        )
        self._endings.add(ending)
        ending.add_done_callback(self._endings.discard)

    async def _end_given_up(self, slot: _Slot, reason: _Stop, where: str) -> None:
        try:
            await self._end_as_stopped(slot, reason, where=where)
        except LeaseLost:
            pass  # it ended meanwhile, or went to another worker: nothing left to do
        except Exception as exc:  # its lease, no longer renewed, expires and the run comes back
            log.warning("could not end run %s after giving its agent up: %s", slot.ref.run_id, exc)

    @staticmethod
    def _log_late_end(slot: _Slot) -> None:
        log.info(
            "run %s: the agent given up on has ended; its slot is free (its outcome was not "
            "recorded: the run had ended without it)",
            slot.lease.run_id,
        )

    async def _heartbeat_loop(self) -> None:
        interval = self.options.lease_ttl / 3
        while True:
            await asyncio.sleep(interval)
            slots = list(self._slots.values())
            if not slots:
                continue
            started = time.monotonic()
            try:
                report = await self.store.heartbeat_many(
                    [s.ref for s in slots], self.options.lease_ttl
                )
            except StoreUnavailable as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            except Exception:
                # never let the heartbeat task die: leases would run out under every run
                # longer than the TTL while the worker went on leasing and executing
                log.exception("heartbeat failed")
                continue
            for slot in slots:
                if slot.lease.run_id in report.lost:
                    self._interrupt(slot, _Stop.LEASE_LOST)
                elif slot.lease.run_id in report.cancel_requested:
                    self._interrupt(slot, _Stop.CANCELLED)
            log.debug(
                "heartbeat of %d leases took %.1f ms",
                len(slots),
                (time.monotonic() - started) * 1000,
            )

    def _interrupt(self, slot: _Slot, reason: _Stop) -> None:
        if slot.task is not None and not slot.task.done() and slot.stop_reason is None:
            slot.stop_reason = reason
            slot.task.cancel()
            asyncio.get_running_loop().call_later(self.options.stop_grace, self._give_up, slot)

    async def _drain(self) -> None:
        live = [
            s
            for s in (*self._slots.values(), *self._detached)
            if s.task is not None and not s.abandoned
        ]
        if live:
            tasks = [s.task for s in live if s.task is not None]
            log.info("draining %d runs (up to %.1fs)", len(tasks), self.options.drain_timeout)
            _, pending = await asyncio.wait(tasks, timeout=self.options.drain_timeout)
            for slot in list(self._slots.values()):
                self._interrupt(slot, _Stop.DRAIN)
            if pending:
                await asyncio.wait(pending, timeout=self.options.stop_grace)
            for slot in live:
                self._give_up(slot)  # the stop of each still running is past its grace
        if self._endings:
            await asyncio.gather(*self._endings, return_exceptions=True)
