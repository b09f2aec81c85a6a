"""The contention scheduler shared by every process: capacity, requests per minute and tokens
per minute enforced together by all workers, through the store.

    llm = SharedScheduler(app.store, "llm", capacity=8, rpm=600, tpm=200_000)
    await llm.open()
    async with llm.acquire("agent-7", tokens=1_500) as handle:
        reply = await call_the_provider()
        handle.report_usage(reply.total_tokens)          # settles the reservation

The grant decision is the store's (``store/sql_resources.py``): the same load score as the
in-process ``Scheduler``, over the waiters of every process. Each process keeps one task that
renews its requests' expiry (so a killed process's slots come back within ``lease_ttl``) and
polls for grants, woken at once by the store's change notifications (LISTEN/NOTIFY on
PostgreSQL) and otherwise every ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.contention.resource import check_capacity, check_count
from corral.contention.score import DEFAULT_ALPHA, check_alpha, check_weight
from corral.errors import BackpressureError, InvalidInput, ShutdownError, StoreUnavailable
from corral.store.sql_resources import ResourceLimits, ResourceSnapshot
from corral.values import MAX_INT

if TYPE_CHECKING:
    from corral.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SharedStatistics:
    """This process's view of a shared resource (each process exports its own)."""

    holders: int
    waiters: int
    grants: int
    rejections: int
    #: holds taken back after they expired while in use (renewals held up past lease_ttl)
    reclaims: int = 0


@dataclass(eq=False)
class SharedHandle:
    """One acquire of a shared resource. Release it exactly once (the context manager does)."""

    agent_id: str
    request_id: str
    tokens: int
    weight: float = 1.0
    granted_at: float | None = None
    released: bool = False
    tokens_used: int | None = None
    _granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future(), repr=False
    )

    @property
    def granted(self) -> bool:
        return self._granted.done() and self._granted.exception() is None

    def report_usage(self, tokens: int) -> None:
        """The tokens the call actually used; settled against the reservation at release."""
        # bounded like the tokens of an acquire: a larger number does not fit the store's
        # column, and the release that settles it would fail and leave the slot held
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= MAX_INT:
            raise InvalidInput(f"usage must be a whole number of tokens from 0 to {MAX_INT:,}")
        self.tokens_used = tokens


class SharedScheduler:
    def __init__(
        self,
        store: Store,
        name: str,
        *,
        capacity: int,
        rpm: int | None = None,
        tpm: int | None = None,
        alpha: float = DEFAULT_ALPHA,
        max_waiters: int = 100,
        max_waiters_per_agent: int | None = None,
        lease_ttl: float = 10.0,
        poll_interval: float = 0.05,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidInput("a shared resource needs a name")
        for what, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidInput(f"{what} must be a whole number >= 1")
        for what, value in (("capacity", capacity), ("rpm", rpm), ("tpm", tpm)):
            if isinstance(value, int) and value > MAX_INT:
                raise InvalidInput(f"{what} must be at most {MAX_INT:,}")
        if not lease_ttl > 0 or not poll_interval > 0:  # NaN too
            raise InvalidInput("lease_ttl and poll_interval must be > 0")
        self.store = store
        self.limits = ResourceLimits(name, check_capacity(capacity), rpm, tpm, check_alpha(alpha))
        # as in Scheduler: a limit of 0 refused even an acquire that found a free slot
        self.max_waiters = check_count("max_waiters", max_waiters)
        self.max_waiters_per_agent = (
            None
            if max_waiters_per_agent is None
            else check_count("max_waiters_per_agent", max_waiters_per_agent)
        )
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self._handles: dict[str, SharedHandle] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._wake = asyncio.Event()
        self._grants = 0
        self._rejections = 0
        #: holds this process took back after they expired while in use (see _reclaim)
        self.reclaims = 0

    @property
    def name(self) -> str:
        return self.limits.name

    async def open(self) -> None:
        """Create or update the resource's limits in the store and start renewing/polling."""
        await self.store.define_resource(self.limits)
        if self._task is None and not self._closed:  # closed meanwhile: nothing to maintain
            self._task = asyncio.create_task(self._maintain(), name=f"corral-shared-{self.name}")

    @asynccontextmanager
    async def acquire(
        self, agent_id: str, weight: float = 1.0, timeout: float | None = None, tokens: int = 0
    ) -> AsyncIterator[SharedHandle]:
        handle = await self.acquire_start(agent_id, weight=weight, timeout=timeout, tokens=tokens)
        try:
            yield handle
        finally:
            await self.release_handle(handle)

    async def acquire_start(
        self,
        agent_id: str,
        *,
        weight: float = 1.0,
        timeout: float | None = None,
        tokens: int = 0,
    ) -> SharedHandle:
        """Wait for a slot (BackpressureError at once if the shared queue is full). On timeout
        or cancellation the request leaves the queue; a grant that raced it is handed on."""
        if self._closed:
            raise ShutdownError(f"shared resource {self.name} is shut down")
        if self._task is None:
            await self.open()
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= MAX_INT:
            raise InvalidInput(f"tokens must be a whole number from 0 to {MAX_INT:,}")
        if self.limits.tpm is not None and tokens > self.limits.tpm:
            # it could never fit the token window, and as the head of the queue it would hold
            # every other request of every process behind it
            raise InvalidInput(
                f"{tokens:,} tokens can never fit {self.name}'s {self.limits.tpm:,} per minute"
            )
        if timeout is not None and timeout != timeout:
            # asyncio.timeout(nan) puts a NaN deadline among the event loop's timers, where it
            # may never come due (and can hold up the ones behind it)
            raise InvalidInput("timeout must be a number of seconds or None, got nan")
        handle = SharedHandle(agent_id, uuid.uuid4().hex, tokens, check_weight(weight))
        try:
            state = await self._enqueue(handle)
        except BackpressureError:
            self._rejections += 1
            raise
        except asyncio.CancelledError:
            # the request may or may not have been written: remove it either way
            await asyncio.shield(
                self.store.resource_release(
                    self.name, handle.request_id, tokens_used=None, ttl=self.lease_ttl
                )
            )
            raise
        if self._closed:
            # close() ran while the request was being written: nothing polls or renews for
            # it anymore, so it would wait for ever; take it out (handing on a grant)
            await self.store.resource_release(
                self.name, handle.request_id, tokens_used=None, ttl=self.lease_ttl
            )
            raise ShutdownError(f"shared resource {self.name} is shut down")
        # Known to the renewing task only once the store has it: polled any earlier, it would
        # look expired and be queued a second time.
        self._handles[handle.request_id] = handle
        if state == "holding":
            self._grant(handle)
        else:
            self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(handle._granted)
        except BaseException:
            await self.release_handle(handle)  # leaves the queue, or hands on a raced grant
            raise
        return handle

    async def release_handle(self, handle: SharedHandle) -> None:
        """Give the slot back (or leave the queue). A second release is a no-op."""
        if handle.released:
            return
        handle.released = True
        self._handles.pop(handle.request_id, None)
        if not handle._granted.done():
            handle._granted.set_exception(ShutdownError("request withdrawn"))
            handle._granted.exception()  # retrieved: no "never retrieved" warning
        await self.store.resource_release(
            self.name, handle.request_id, tokens_used=handle.tokens_used, ttl=self.lease_ttl
        )
        self._take_grants()  # a waiter of this process granted by this release: at once
        if self._closed and not self._handles:
            await self._stop_renewing()  # closed, and the last hold it renewed is back

    async def report_throttled(self, retry_after: float) -> None:
        """The provider answered 429: no process is granted anything for ``retry_after``."""
        if (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, int | float)
            or not math.isfinite(retry_after)
        ):
            # the pause is stored, for every process, and only ever lengthened: an infinite
            # one would stop the resource for good
            raise InvalidInput(
                f"retry_after must be a finite number of seconds, got {retry_after!r}"
            )
        await self.store.resource_pause(self.name, self.store.clock() + max(0.0, retry_after))

    async def snapshot(self) -> ResourceSnapshot:
        return await self.store.resource_snapshot(self.name)

    async def close(self, *, keep_renewing: bool = True) -> None:
        """Stop: waiters of this process get ShutdownError; holders may finish and release,
        their holds renewed until the last is released. With ``keep_renewing=False`` (the
        store is about to close), renewing stops now and the store takes the holds back
        ``lease_ttl`` after their last renewal, as for a killed process."""
        self._closed = True
        for handle in list(self._handles.values()):
            if not handle._granted.done():
                await self.release_handle(handle)
        if not keep_renewing or not self._handles:
            await self._stop_renewing()

    async def _stop_renewing(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _enqueue(self, handle: SharedHandle) -> str:
        """Put the handle's request in the store's queue: ``holding`` or ``waiting``."""
        return await self.store.resource_request(
            self.name,
            handle.request_id,
            handle.agent_id,
            weight=handle.weight,
            tokens=handle.tokens,
            ttl=self.lease_ttl,
            max_waiters=self.max_waiters,
            max_waiters_per_agent=self.max_waiters_per_agent,
        )

    async def _rejoin(self, handle: SharedHandle) -> None:
        """This process was too slow to renew a waiting request (a long pause) and the store
        dropped it: queue it again, at the back, rather than fail the caller."""
        self._handles.pop(handle.request_id, None)
        handle.request_id = uuid.uuid4().hex  # a new request: the old id may have usage rows
        self._handles[handle.request_id] = handle
        try:
            state = await self._enqueue(handle)
        except BackpressureError as exc:
            if not handle._granted.done():
                handle._granted.set_exception(exc)
            return
        if state == "holding":
            self._grant(handle)

    async def _reclaim(self, handle: SharedHandle) -> None:
        """This process was too slow to renew a held request (a long pause) and the store
        dropped it, perhaps granting the slot to another: the holder is still using it, so
        record it as holding again (over capacity until someone releases) instead of letting
        the provider see more calls than the capacity allows, unnoticed."""
        if handle.released:
            return
        log.warning(
            "shared resource %s: the hold of %s expired while in use (renewals held up past "
            "%.1f s); taken back (over capacity, if its slot was granted meanwhile)",
            self.name,
            handle.agent_id,
            self.lease_ttl,
        )
        self.reclaims += 1
        await self.store.resource_reclaim(
            self.name,
            handle.request_id,
            handle.agent_id,
            weight=handle.weight,
            tokens=handle.tokens,
            ttl=self.lease_ttl,
        )
        if handle.released:  # released while the row was being taken back: give it back
            await self.store.resource_release(
                self.name, handle.request_id, tokens_used=handle.tokens_used, ttl=self.lease_ttl
            )

    def statistics(self) -> SharedStatistics:
        granted = sum(1 for h in self._handles.values() if h.granted)
        return SharedStatistics(
            holders=granted,
            waiters=len(self._handles) - granted,
            grants=self._grants,
            rejections=self._rejections,
            reclaims=self.reclaims,
        )

    def _take_grants(self) -> None:
        """Grant the handles the store has learned were granted (by this process's own
        commits, or by a notification)."""
        granted = self.store.granted_requests
        if granted:
            for request_id in [r for r in self._handles if r in granted]:
                granted.discard(request_id)
                self._grant(self._handles[request_id])

    def _grant(self, handle: SharedHandle) -> None:
        if not handle._granted.done():
            self._grants += 1
            handle.granted_at = time.time()
            handle._granted.set_result(None)

    async def _maintain(self) -> None:
        while True:
            try:
                await self._maintain_loop()
            except StoreUnavailable as exc:  # keep renewing once the store is back
                log.warning("shared resource %s: %s", self.name, exc)
                await asyncio.sleep(self.poll_interval)
            except Exception:
                if self._closed and not self.store.is_open:
                    # closed with holds still out, then the store closed under them: they
                    # lapse lease_ttl after their last renewal, as a killed process's do
                    return
                raise

    async def _maintain_loop(self) -> None:
        seen = 0
        renewed = polled = time.monotonic()
        while True:
            self._take_grants()
            waiting = [h for h in self._handles.values() if not h._granted.done()]
            due = time.monotonic() - renewed > self.lease_ttl / 3
            polling = waiting and time.monotonic() - polled >= self.poll_interval
            if self._handles and (polling or due):
                ids = list(self._handles)
                states = await self.store.resource_poll(self.name, ids, self.lease_ttl)
                renewed = polled = time.monotonic()
                for request_id, state in states.items():
                    handle = self._handles.get(request_id)
                    if handle is None:
                        continue
                    if state == "holding":
                        self._grant(handle)
                    elif state == "gone" and not handle._granted.done():
                        await self._rejoin(handle)
                    elif state == "gone" and handle.granted:
                        await self._reclaim(handle)
            self._wake.clear()
            interval = self.poll_interval if waiting else self.lease_ttl / 3
            change = asyncio.ensure_future(self.store.wait_for_change(seen, interval))
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                done, _ = await asyncio.wait(
                    {change, wake}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                # also when close() cancels this loop: a wait left running would go on using
                # the store (and open a listening connection) after the store is closed
                for f in (change, wake):
                    if not f.done():
                        f.cancel()
            if change in done:
                seen = change.result()
