"""PostgreSQL backend: many workers on many machines share one database.

psycopg 3 async with a connection pool. Leases use ``FOR UPDATE SKIP LOCKED`` (queries in
``sql/postgres``); commits that make work available send a notification on the work channel,
and one listening connection per store wakes idle workers at once instead of after a poll
interval; a run submitted while a worker waits is handed to it (stored already leased, the lease
in a notification on the worker's own channel: see ``offer_slots`` and docs/architecture.md,
"Handoff"). Channels are per schema (``work_channel`` in ``sql/postgres/queries.sql``):
notifications are database-wide, and corral stores in other schemas of the same database must
not wake this one's workers. A transaction that loses a deadlock or serialization race is
retried whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.array import ListBinaryDumper
from psycopg.types.string import StrBinaryDumper
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from corral.clock import Clock, system_clock
from corral.config import StoreConfig
from corral.errors import LeaseLost, StoreUnavailable
from corral.models import Appended, Lease, LeaseRef
from corral.store.migrate import split_statements
from corral.store.pg_handoff import Handoffs
from corral.store.queries import load_migrations
from corral.store.sql_base import Entry, dumps
from corral.store.sql_store import SqlStore
from corral.store.transaction import Params, Row, Transaction

T = TypeVar("T")
log = logging.getLogger(__name__)

#: seconds a call waits for a pooled connection before StoreUnavailable
POOL_WAIT = 10.0
#: seconds a pool retries one lost connection (backing off 1 s, then 2 s) before it starts over
#: at once: psycopg_pool's own backoff doubles without a bound, so after a 30 s outage the
#: next attempt came ~20 s after the server was back
RECONNECT_WITHIN = 2.0
#: libpq settings for every connection, unless the URL gives its own: a connection attempt
#: gives up after 10 s, and a server cut off by the network (no reply to keepalives, or data
#: unacknowledged for 30 s) fails the connection's calls with StoreUnavailable instead of
#: leaving them waiting on the operating system's TCP timeout (about 15 minutes)
CONNECTION_DEFAULTS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}

#: a fixed key for pg_advisory_xact_lock, so processes starting together migrate one at a time
MIGRATION_LOCK_KEY = 0x636F7272616C  # "corral"
#: tries of a migration that finds its tables locked (StoreConfig.migration_lock_timeout),
#: the pause between two doubling from that timeout
MIGRATION_TRIES = 5
RETRIES = 8
#: the hot statements' connections plan every prepared statement once, generically (see
#: ``_hot_statement``)
GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"
RELAXED_BEGIN = ("BEGIN", "SET LOCAL synchronous_commit TO OFF")
#: reads see one snapshot for all their statements (READ COMMITTED gives each its own)
READ_BEGIN = ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",)


class _PgTransaction:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def fetchall(self, query: str, params: Params | None = None) -> list[Row]:
        async with self._conn.cursor() as cur:
            await cur.execute(query, params)
            return await cur.fetchall()

    async def fetchone(self, query: str, params: Params | None = None) -> Row | None:
        async with self._conn.cursor() as cur:
            await cur.execute(query, params)
            return await cur.fetchone()

    async def fetch_dicts(self, query: str, params: Params | None = None) -> list[dict[str, Any]]:
        async with self._conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()

    async def execute(self, query: str, params: Params | None = None) -> None:
        await self._conn.execute(query, params)

    async def fetch_each(self, query: str, params: Sequence[Params]) -> list[list[Row]]:
        if not params:
            return []
        if len(params) == 1:
            return [await self.fetchall(query, params[0])]
        results: list[list[Row]] = []
        async with self._conn.cursor() as cur:
            await cur.executemany(query, params, returning=True)
            while True:
                results.append(await cur.fetchall())
                if not cur.nextset():
                    break
        return results

    async def execute_many(self, query: str, params: Sequence[Params]) -> None:
        if not params:
            return
        async with self._conn.cursor() as cur:
            await cur.executemany(query, params)


async def _configure_hot(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(GENERIC_PLANS)
    # Strings (and lists of them: the batch acks' ids and results) go as binary text, not as
    # quoted array literals: quoting every element took ~10% of a busy worker's CPU. Every
    # hot statement casts or compares its string parameters as text.
    conn.adapters.register_dumper(str, StrBinaryDumper)
    conn.adapters.register_dumper(list, ListBinaryDumper)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a background future's exception as seen (its waiters, if any, got it too)."""
    if not future.cancelled():
        future.exception()


class PostgresStore(SqlStore):
    dialect = "postgres"
    hands_off = True

    def __init__(
        self, dsn: str, config: StoreConfig | None = None, clock: Clock = system_clock
    ) -> None:
        super().__init__(config, clock)
        self.dsn = dsn
        #: the connection string connections use: the URL with CONNECTION_DEFAULTS (set by open)
        self._conninfo = dsn
        self._pool: AsyncConnectionPool | None = None
        self._hot_pool: AsyncConnectionPool | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listen_conn: psycopg.AsyncConnection[Any] | None = None
        self._listen_lock = asyncio.Lock()
        self._connecting: asyncio.Future[None] | None = None
        #: background checks of a pool's idle connections, by pool name (see _connection_failed)
        self._pool_checks: dict[str, asyncio.Task[None]] = {}
        #: set by close(): a wait still running then must not open a listening connection
        self._closed = False
        #: runs submits hand straight to this process's waiting workers (offer_slots)
        self._handoffs = Handoffs()
        self._grants_channel = ""

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._closed = False
        try:
            # Settings the URL gives are left to apply: overriding its connect_timeout let a
            # bad one ("abc") pass the probe below and then fail every pool connection,
            # reported only as the pool's timeout.
            given = conninfo_to_dict(self.dsn)
            defaults = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
            self._conninfo = make_conninfo(self.dsn, **defaults)
            # one direct attempt first: a wrong host or port fails at once with its reason,
            # where the pool would keep retrying until its timeout
            probe = await psycopg.AsyncConnection.connect(self._conninfo)
            await probe.close()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
        self._pool = await self._new_pool("corral")
        try:
            self._hot_pool = await self._new_pool(
                "corral-hot", configure=_configure_hot, prepare_threshold=0
            )
        except StoreUnavailable:
            await self.close()
            raise
        await self._migrate()
        await self._seed_plans()

    async def _new_pool(
        self,
        name: str,
        *,
        configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None = None,
        **connect: Any,
    ) -> AsyncConnectionPool:
        """An open pool of up to ``pool_size`` autocommit connections (``connect``: more
        connection arguments), or StoreUnavailable."""
        pool = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self.config.pool_size,
            open=False,
            kwargs={"autocommit": True, **connect},
            configure=configure,
            name=name,
            # how long a call waits for a connection: with the server down, StoreUnavailable
            # (an HTTP 503) after 10 s instead of the pool's default 30
            timeout=POOL_WAIT,
            reconnect_timeout=RECONNECT_WITHIN,
            reconnect_failed=self._reconnect_failed,
        )
        try:
            await pool.open(wait=True, timeout=10.0)
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
        return pool

    @property
    def is_open(self) -> bool:
        return self._pool is not None and not self._closed

    async def close(self) -> None:
        # (offers still standing lapse with the listening session: see offer_slots)
        self._closed = True
        await self._finish_maintenance()
        for check in self._pool_checks.values():
            check.cancel()
        await asyncio.gather(*self._pool_checks.values(), return_exceptions=True)
        if self._connecting is not None and not self._connecting.done():
            with contextlib.suppress(Exception):
                await self._connecting  # a cancelled waiter may have left it running
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        if self._listen_conn is not None:
            await self._listen_conn.close()
            self._listen_conn = None
        if self._hot_pool is not None:
            await self._hot_pool.close()
            self._hot_pool = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _migrate(self) -> None:
        """Apply the pending migrations, all in one transaction, one process at a time. A
        migration that alters a table needs its exclusive lock, and while it waits for one,
        every other statement on that table waits behind it: so it waits at most
        ``migration_lock_timeout``, rolls back and tries again after a pause in which traffic
        flows; after ``MIGRATION_TRIES`` it gives up with StoreUnavailable, naming the long
        transactions that held the lock."""
        migrations = load_migrations(self.dialect)
        wait = self.config.migration_lock_timeout
        applying: list[str] = []

        async def body(tx: Transaction) -> None:
            await tx.execute("SELECT pg_advisory_xact_lock(%(key)s)", {"key": MIGRATION_LOCK_KEY})
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS corral_schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in await tx.fetchall("SELECT version FROM corral_schema_migrations")}
            # after the advisory lock: processes starting together wait for each other freely
            await tx.execute(f"SET LOCAL lock_timeout = {max(1, round(wait * 1000))}")
            for version, name, text in migrations:
                if version in done:
                    continue
                applying[:] = [name]
                for statement in split_statements(text):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO corral_schema_migrations (version, name) VALUES (%(v)s, %(n)s)",
                    {"v": version, "n": name},
                )

        for n in range(MIGRATION_TRIES):
            try:
                await self._tx(body)
                return
            except StoreUnavailable as exc:
                if not isinstance(exc.__cause__, pg_errors.LockNotAvailable):
                    raise
                if n == MIGRATION_TRIES - 1:
                    holders = await self._long_transactions(wait)
                    raise StoreUnavailable(
                        f"migration {applying[0]} could not lock the tables it changes within "
                        f"{wait:g} s, {MIGRATION_TRIES} times; {holders}"
                    ) from exc
                log.warning(
                    "migration %s waited %g s for a table lock; trying again", applying[0], wait
                )
                await asyncio.sleep(wait * 2**n)

    async def _long_transactions(self, older_than: float) -> str:
        """The other sessions' transactions on this database older than ``older_than``
        seconds, for an error message: what a waiting migration most likely waited for."""

        async def read(tx: Transaction) -> list[Row]:
            return await tx.fetchall(
                "SELECT pid, state, EXTRACT(EPOCH FROM now() - xact_start), left(query, 80) "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start < now() - make_interval(secs => %(s)s) "
                "ORDER BY xact_start LIMIT 5",
                {"s": older_than},
            )

        rows = await self._tx(read)
        if not rows:
            return "no transaction is open that long now: start again"
        held = "; ".join(f"pid {r[0]} ({r[1]}, {float(r[2]):.0f} s): {r[3]!r}" for r in rows)
        return f"transactions open longer than that: {held}"

    async def _tx(
        self,
        body: Callable[[Transaction], Awaitable[T]],
        *,
        relaxed: bool = False,
        begin: tuple[str, ...] | None = None,
    ) -> T:
        begin = begin or (RELAXED_BEGIN if relaxed else ("BEGIN",))

        async def attempt(conn: psycopg.AsyncConnection[Any]) -> T:
            try:
                # Pipeline mode: statements whose results nobody awaits yet go out together,
                # so a transaction costs fewer round trips.
                async with conn.pipeline():
                    for statement in begin:
                        await conn.execute(statement)
                    result = await body(_PgTransaction(conn))
                    await conn.execute("COMMIT")
            except BaseException:
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.execute("ROLLBACK")
                raise
            return result

        return await self._retrying(attempt)

    async def _read(self, body: Callable[[Transaction], Awaitable[T]]) -> T:
        # One snapshot: stats read the tenants' counters and the waiting runs in two
        # statements, and a run that moved between them was counted twice or not at all (the
        # runs-submitted counter of /metrics went backwards).
        return await self._tx(body, begin=READ_BEGIN)

    async def _hot_statement(self, name: str, params: Params) -> list[Row]:
        # One statement in autocommit (an implicit transaction: one round trip) on a
        # connection of the hot pool, whose sessions prepare every statement at first use and
        # plan it generically once: the hot statements are written to plan well without their
        # parameters (tests/contract/test_query_plans.py), and planning them anew on every
        # call cost as much as running them. A plain execute also costs the client a third of
        # the CPU of a pipelined "SET LOCAL; statement".
        query = self.q[name]

        async def attempt(conn: psycopg.AsyncConnection[Any]) -> list[Row]:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

        return await self._retrying(attempt, self._hot_pool)

    async def _retrying(
        self,
        attempt: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
        pool: AsyncConnectionPool | None = None,
    ) -> T:
        """Run one transaction on a pooled connection (of ``pool``, default the main pool),
        again whole if it loses a deadlock or serialization race; an unreachable server is
        StoreUnavailable."""
        pool = pool or self._pool
        assert pool is not None, "store is not open"
        for n in range(RETRIES):
            try:
                async with pool.connection() as conn:
                    return await attempt(conn)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                if n == RETRIES - 1:
                    raise StoreUnavailable(
                        f"PostgreSQL: still losing lock races after {RETRIES} tries: {exc}"
                    ) from exc
                await asyncio.sleep(0.001 * (2**n))
            except (psycopg.OperationalError, PoolTimeout) as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Cancelled again while psycopg was cancelling the statement: it closes
                    # the connection, and the pool then reports it closed. The cancellation
                    # must go on: as StoreUnavailable, a loop that retries an unreachable
                    # store (retention, the ack batcher, a shared resource) swallowed it and
                    # never ended.
                    raise asyncio.CancelledError from exc
                self._connection_failed(exc)
                raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        raise AssertionError("unreachable")

    def _connection_failed(self, exc: Exception) -> None:
        """After a connection broke (the server restarted, or dropped it), the idle
        connections of both pools have most likely broken with it, and each would fail the
        next operation it is handed to: a burst of StoreUnavailable, and acks lost to it,
        after every database restart. Check them all in the background, once at a time."""
        if not isinstance(exc, psycopg.OperationalError) or self._closed:
            return
        for pool in (self._pool, self._hot_pool):
            if pool is None:
                continue
            running = self._pool_checks.get(pool.name)
            if running is None or running.done():
                self._pool_checks[pool.name] = asyncio.create_task(
                    self._check_pool(pool), name=f"corral-check-{pool.name}"
                )

    async def _reconnect_failed(self, pool: AsyncConnectionPool) -> None:
        """A pool gave up on a lost connection (RECONNECT_WITHIN): start it over now, so that
        a connection is tried about once a second for as long as the server is away, and a
        call already waiting for one gets it soon after the server is back."""
        if not self._closed:
            await self._check_pool(pool)

    @staticmethod
    async def _check_pool(pool: AsyncConnectionPool) -> None:
        try:
            await pool.check()
        except Exception as exc:  # the server is still down: the next failure checks again
            log.debug("checking the %s pool failed: %s", pool.name, exc)

    async def append(self, ref: LeaseRef, entries: Sequence[Entry]) -> Appended:
        if len(entries) != 1 or self.config.durable_steps:
            return await super().append(ref, entries)
        ((kind, name, data),) = entries
        args = {
            "id": ref.run_id,
            "epoch": ref.epoch,
            "now": self.clock(),
            "kind": kind,
            "name": name,
            "data": dumps(data),
        }

        async def attempt(conn: psycopg.AsyncConnection[Any]) -> Row | None:
            cur = await conn.execute(self.q["append_one_relaxed"], args)
            return await cur.fetchone()

        row = await self._retrying(attempt)
        if row is None:
            raise LeaseLost(ref.run_id, ref.epoch)
        return Appended([int(row[0])], bool(row[1]))

    async def wait_for_work(self, timeout: float, *, light_below: int | None = None) -> None:
        if self._listener is None:
            await self._start_listener()
        if light_below is not None:
            await self._wait_light(timeout, light_below)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._local_work.wait(), timeout=timeout)
        self._local_work.clear()

    async def _listen_for_changes(self) -> None:
        if self._listener is None:
            await self._start_listener()

    async def _start_listener(self) -> None:
        # One connecting task at a time, shielded: a waiter cancelled half-way must neither
        # leave an open, unowned connection nor let a second task start beside the first
        # (which would close the first one's connection under it).
        async with self._listen_lock:
            if self._closed or (self._listener is not None and not self._listener.done()):
                return
            if self._connecting is None or self._connecting.done():
                self._connecting = asyncio.ensure_future(self._connect_listener())
                self._connecting.add_done_callback(_retrieve)
            connecting = self._connecting
        await asyncio.shield(connecting)

    async def _connect_listener(self) -> None:
        if self._listen_conn is not None:
            await self._listen_conn.close()
            self._listen_conn = None
        self._handoffs.disconnected()
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
        if self._closed:  # close() ran while this connected
            await conn.close()
            return
        self._listen_conn = conn
        cur = await conn.execute(self.q["listen_channels"])
        channels = await cur.fetchone()
        assert channels is not None
        work, grants = channels
        self._grants_channel = grants
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(work)))
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(grants)))
        for owner in self._handoffs.owners():
            await self._listen_for_handoffs_on(conn, owner)
        self._listener = asyncio.create_task(self._listen(conn), name="corral-listen")

    async def _listen_for_handoffs_on(self, conn: psycopg.AsyncConnection[Any], owner: str) -> None:
        """LISTEN to the channel of runs handed to ``owner`` and hold its offer's advisory lock
        for as long as this session lives: submits hand runs only to offers whose lock is held
        (submit_one), so a worker whose process or session died is handed nothing."""
        cur = await conn.execute(self.q["handoff_channel"], {"owner": owner})
        row = await cur.fetchone()
        assert row is not None
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(row[0])))
        await conn.execute("SELECT pg_advisory_lock(%(key)s)", {"key": self._handoffs.key(owner)})
        self._handoffs.listening(row[0], owner)

    async def offer_slots(self, worker_id: str, ttl: float, slots: int) -> bool:
        if slots <= 0:
            await self.withdraw_offer(worker_id)
            return True
        if not await self._ready_for_handoffs(worker_id):
            return False
        await self._hot_statement(
            "offer_slots",
            {
                "owner": worker_id,
                "slots": slots,
                "ttl": ttl,
                "lock_key": self._handoffs.key(worker_id),
            },
        )
        return True

    async def renew_offer(self, worker_id: str) -> bool:
        if not self._handoffs.knows(worker_id):
            return False
        return bool(await self._hot_statement("renew_offer", {"owner": worker_id}))

    async def withdraw_offer(self, worker_id: str) -> int:
        """Withdraw ``worker_id``'s offer; the slots it still held (0: none, or no offer)."""
        if not self._handoffs.knows(worker_id):
            return 0
        rows = await self._hot_statement("withdraw_offer", {"owner": worker_id})
        return int(rows[0][0]) if rows else 0

    def take_handed(self, worker_id: str) -> list[Lease]:
        return self._handoffs.take(worker_id)

    def on_handed(self, worker_id: str, callback: Callable[[], object] | None) -> None:
        self._handoffs.on_handed(worker_id, callback)

    async def _ready_for_handoffs(self, owner: str) -> bool:
        """Whether the listening session hears ``owner``'s handoffs (connecting it, or
        adding the owner's channel and lock to it, when needed)."""
        self._handoffs.key(owner)  # known from now on: a reconnecting listener adds it
        if self._listener is None or self._listener.done():
            await self._start_listener()
            return self._handoffs.is_listening(owner)
        if self._handoffs.is_listening(owner):
            return True
        async with self._listener_paused() as conn:
            if conn is None:
                return False  # reconnecting: the next offer, after it, tries again
            try:
                await self._listen_for_handoffs_on(conn, owner)
            except psycopg.Error as exc:
                # the restarted listener fails on the same connection and reconnects
                raise StoreUnavailable(f"cannot listen for handoffs: {exc}") from exc
        return self._handoffs.is_listening(owner)

    async def forget_worker(self, worker_id: str) -> None:
        """UNLISTEN the stopped worker's channel and let go of its offer's session lock: kept,
        a process that starts and stops workers would pile up one lock per worker in the
        server's shared lock table (the same table every session's locks live in), and a
        reconnecting listener would take them all again."""
        channel, key = self._handoffs.forget(worker_id)
        if channel is None:
            return  # no session listens for it (a reconnect takes only the owners known)
        async with self._listener_paused() as conn:
            if conn is None:
                return  # the session that held them is gone
            try:
                await conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
                await conn.execute("SELECT pg_advisory_unlock(%(key)s)", {"key": key})
            except psycopg.Error as exc:
                # the restarted listener fails on the same connection and reconnects without
                # them: the session that held them is gone
                log.warning("could not let go of worker %s's handoff channel: %s", worker_id, exc)

    @contextlib.asynccontextmanager
    async def _listener_paused(self) -> AsyncIterator[psycopg.AsyncConnection[Any] | None]:
        """The listening session's connection, for statements of its own (None: no session is
        up). The notifications iterator holds the connection, so it is stopped meanwhile
        (notifications wait in psycopg's backlog) and started again after."""
        async with self._listen_lock:
            listener, conn = self._listener, self._listen_conn
            if listener is None or listener.done() or conn is None:
                yield None
                return
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            try:
                yield conn
            finally:
                self._listener = asyncio.create_task(self._listen(conn), name="corral-listen")

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            async for notify in conn.notifies():
                owner = self._handoffs.owner_of(notify.channel)
                if owner is not None:
                    taken = False
                    try:
                        taken = self._handoffs.hand(owner, notify.payload)
                    except (ValueError, TypeError, IndexError) as exc:
                        # not a handoff of ours: if it was a run, its lease runs out and it
                        # is leased again
                        log.warning("ignored a malformed handoff notification: %s", exc)
                    except Exception:  # the worker's callback: never the listener's end
                        log.exception("starting a handed run failed")
                    if not taken:  # a waiter polls take_handed (a worker's callback took it)
                        self._signal_local_work()
                elif notify.channel == self._grants_channel:
                    _name, *granted = notify.payload.split(",")
                    self._note_grants(granted)
                else:
                    # the payload, when set: the fewest runs in flight of a tenant with work
                    level = notify.payload
                    self._signal_local_work(int(level) if level.isdigit() else None)
        except psycopg.Error as exc:
            # Idle workers still poll meanwhile; the next wait reconnects.
            log.warning("LISTEN connection lost (%s); reconnecting on next wait", exc)
            self._listener = None
