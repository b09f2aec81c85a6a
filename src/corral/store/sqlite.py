"""SQLite backend: the embedded default. One file, many processes, WAL.

sqlite3 is blocking. Each store owns one connection and an asyncio lock that gives each
transaction the connection to itself. Only the calls that can wait on another process go to a
dedicated thread: ``BEGIN IMMEDIATE`` (which waits, up to the busy timeout, for the file's
write lock, trying again after sleeps of at most ``StoreConfig.lock_poll``) and ``COMMIT`` (which
may checkpoint the WAL). Once the write lock is held, no other process can make a statement
wait, so statements run inline: a thread hop costs more than the statement itself. Write
transactions start with ``BEGIN IMMEDIATE`` so two processes never deadlock upgrading a read
lock.

Read-only transactions (run and journal reads, listings, stats, retention's search) use a
second connection, opened ``query_only``, whose statements all run on a thread of its own: a
read that scans (stats over a deep backlog, a listing) then holds up neither the event loop nor
this process's writes, and WAL gives it a consistent snapshot while they commit. (An in-memory
database is one connection's own, so there reads share the writer's connection.)

The write-ahead log is checkpointed by a thread of its own (``sqlite_checkpoint``), not inside
whichever commit happens to take it past SQLite's auto-checkpoint mark.

SQLite has no LISTEN/NOTIFY. An idle worker watches ``PRAGMA data_version``, which changes when
another connection commits, at a short interval; submits in the same process wake it at once,
and those of other processes on this machine through a Unix datagram socket (``sqlite_wake``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from corral.clock import Clock, system_clock
from corral.config import UNLIMITED, StoreConfig
from corral.errors import StoreUnavailable
from corral.store.migrate import split_statements
from corral.store.queries import load_migrations
from corral.store.sql_store import SqlStore
from corral.store.sqlite_checkpoint import BACKSTOP_PAGES, WalCheckpointer
from corral.store.sqlite_wake import WakeChannel
from corral.store.transaction import Params, Row, Transaction
from corral.values import check_amount

T = TypeVar("T")

#: how often an idle worker looks for commits made by other processes
POLL_INTERVAL = 0.005
#: the same while the process reads its wake-up socket: commits that may make work announce
#: themselves there, and the poll only backs up a lost datagram. Polling every 5 ms cost each
#: idle worker process ~4% of a core.
POLL_INTERVAL_WITH_WAKEUPS = 0.05
#: a wake-up that names requests just granted (request ids, comma-separated, follow)
GRANTED = b"g"
#: request ids per such wake-up (32 characters each: well inside one datagram)
GRANTS_PER_WAKEUP = 200


class _SQLiteTransaction:
    """Statements of one transaction, each run by ``run(fn, *args)`` as ``fn(conn, *args)``:
    inline on the writer's connection (its lock is held, nothing can make it wait), on the
    reader's thread for a read."""

    def __init__(self, run: Callable[..., Awaitable[Any]]) -> None:
        self._run = run

    async def fetchall(self, query: str, params: Params | None = None) -> list[Row]:
        rows: list[Row] = await self._run(_fetchall, query, params)
        return rows

    async def fetchone(self, query: str, params: Params | None = None) -> Row | None:
        rows = await self.fetchall(query, params)
        return rows[0] if rows else None

    async def fetch_dicts(self, query: str, params: Params | None = None) -> list[dict[str, Any]]:
        dicts: list[dict[str, Any]] = await self._run(_fetch_dicts, query, params)
        return dicts

    async def execute(self, query: str, params: Params | None = None) -> None:
        await self._run(_fetchall, query, params)

    async def fetch_each(self, query: str, params: Sequence[Params]) -> list[list[Row]]:
        rows: list[list[Row]] = await self._run(_fetch_each, query, params)
        return rows

    async def execute_many(self, query: str, params: Sequence[Params]) -> None:
        if params:
            await self._run(_execute_many, query, params)


def _opening_read(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``call`` for the statements of a read transaction whose first statement opens it, in
    the same thread hop: a one-statement read costs two hops (the statement, the end)."""
    begun = False

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        nonlocal begun
        if begun:
            return await call(fn, *args)
        begun = True
        return await call(_begin_then, fn, *args)

    return run


def _begin_then(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    conn.execute("BEGIN")
    return fn(conn, *args)


def _set_busy_timeout(conn: sqlite3.Connection, seconds: float) -> None:
    """How long SQLite's busy handler makes ``conn``'s statements wait for another
    connection's lock (0: not at all)."""
    conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")


def _retry_while_locked(
    attempt: Callable[[], object], timeout: float, *, first: float, longest: float
) -> None:
    """``attempt()`` until another connection's lock no longer refuses it, or ``timeout``
    seconds have passed (then its error), sleeping between tries: ``first`` seconds, doubling
    up to ``longest``."""
    deadline = time.monotonic() + timeout
    sleep = first
    while True:
        try:
            attempt()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(sleep)
        sleep = min(sleep * 2, longest)


def _begin(conn: sqlite3.Connection, begin: str, timeout: float, poll: float) -> None:
    """``begin`` the transaction. A write transaction waits up to ``timeout`` seconds for
    another process's write lock, trying again after sleeps that double from 0.1 ms up to
    ``poll`` seconds (``StoreConfig.lock_poll``; 0: in SQLite's busy handler). SQLite's
    handler sleeps up to 100 ms between its tries, so under steady writes from other
    processes a waiter kept missing the moments the lock was free: a single submit waited
    up to a second while four processes took turns (bench/sqlite/lock_wait.py)."""
    if poll <= 0 or begin != "BEGIN IMMEDIATE":
        conn.execute(begin)
        return
    _set_busy_timeout(conn, 0)
    try:
        _retry_while_locked(
            lambda: conn.execute(begin), timeout, first=min(0.0001, poll), longest=poll
        )
    finally:
        # the other statements wait in SQLite's handler (a write lock held, they rarely do)
        _set_busy_timeout(conn, timeout)


def _end_transaction(conn: sqlite3.Connection, how: str) -> None:
    """COMMIT or ROLLBACK the transaction, if one is open (a read's first statement may not
    have opened one; a cancelled writer's BEGIN may or may not have run)."""
    if conn.in_transaction:
        conn.execute(how)


def _fetchall(conn: sqlite3.Connection, query: str, params: Params | None) -> list[Row]:
    return conn.execute(query, params or {}).fetchall()


def _fetch_dicts(
    conn: sqlite3.Connection, query: str, params: Params | None
) -> list[dict[str, Any]]:
    cur = conn.execute(query, params or {})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _fetch_each(conn: sqlite3.Connection, query: str, params: Sequence[Params]) -> list[list[Row]]:
    return [conn.execute(query, p).fetchall() for p in params]


def _execute_many(conn: sqlite3.Connection, query: str, params: Sequence[Params]) -> None:
    conn.executemany(query, params)


class SQLiteStore(SqlStore):
    dialect = "sqlite"
    writes_serialized = True

    def __init__(
        self, path: str | Path, config: StoreConfig | None = None, clock: Clock = system_clock
    ) -> None:
        super().__init__(config, clock)
        self.path = str(path)
        check_amount("checkpoint_interval", self.config.checkpoint_interval)
        self._checkpointer: WalCheckpointer | None = None
        #: wake-ups to and from other processes on this file (None: in memory, or no sockets)
        self._wakeups: WakeChannel | None = None
        #: waits now reading the wake-up socket
        self._listening = 0
        #: taking other processes' wake-ups: nothing is sent on
        self._relaying = False
        #: this process signalled work itself since a wait last looked (see wait_for_work)
        self._own_signal = False
        #: the event loop reading the wake-up socket, and its descriptor
        self._reading: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._data_version: int | None = None
        #: the read-only connection, its thread and its lock (None: reads use the writer's)
        self._reader: sqlite3.Connection | None = None
        self._reader_executor: ThreadPoolExecutor | None = None
        self._reader_lock = asyncio.Lock()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(writer connection, *args)`` on the writer's thread."""
        assert self._executor is not None and self._conn is not None, "store is not open"
        return await self._in_thread(self._executor, self._conn, fn, *args)

    async def _reader_call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(reader connection, *args)`` on the reader's thread."""
        assert self._reader_executor is not None and self._reader is not None
        return await self._in_thread(self._reader_executor, self._reader, fn, *args)

    async def _in_thread(
        self,
        executor: ThreadPoolExecutor,
        conn: sqlite3.Connection,
        fn: Callable[..., T],
        *args: Any,
        shielded: bool = False,
    ) -> T:
        """``fn(conn, *args)`` on ``executor``'s thread. ``shielded``: a cancellation of the
        caller leaves the job to run (one not yet started would otherwise never run)."""
        job = asyncio.get_running_loop().run_in_executor(executor, partial(fn, conn, *args))
        try:
            return await (asyncio.shield(job) if shielded else job)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc

    async def _roll_back(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        """End whatever transaction ``conn`` has open once its thread is done with what it
        runs now (a cancelled call's BEGIN or COMMIT finishes there anyway). Shielded: a
        second cancellation would otherwise cancel the job before the thread reached it, and
        the transaction stayed open under a lock that was let go (the next BEGIN on that
        connection then failed: "cannot start a transaction within a transaction")."""
        await self._in_thread(executor, conn, _end_transaction, "ROLLBACK", shielded=True)

    async def _inline(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(writer connection, *args)`` right here: for statements of a transaction
        whose lock is held."""
        assert self._conn is not None, "store is not open"
        try:
            return fn(self._conn, *args)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, self._connect)
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        await self._migrate()
        await self._seed_plans()
        if self.path != ":memory:":
            self._reader_executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="corral-sqlite-read"
            )
            try:
                self._reader = await loop.run_in_executor(
                    self._reader_executor, self._connect_reader
                )
            except (sqlite3.Error, OSError) as exc:
                self._reader_executor.shutdown(wait=False)
                self._reader_executor = None
                await self.close()
                raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
            if self._checkpoints_in_background:
                self._checkpointer = WalCheckpointer(
                    self._connect_checkpointer, self.config.checkpoint_interval
                )
                try:
                    await loop.run_in_executor(self._reader_executor, self._checkpointer.start)
                except (sqlite3.Error, OSError) as exc:
                    self._checkpointer = None
                    await self.close()
                    raise StoreUnavailable(
                        f"cannot open SQLite database {self.path}: {exc}"
                    ) from exc

            if WakeChannel.supported():
                self._wakeups = WakeChannel(self.path)

    def _signal_local_work(self, level: int | None = None) -> None:
        super()._signal_local_work(level)
        if not self._relaying:
            self._own_signal = True
            if self._wakeups is not None:
                self._wakeups.notify()

    def _note_grants(self, request_ids: list[str]) -> None:
        # the other processes learn which requests were granted, as from PostgreSQL's
        # notification payload: a waiter there takes its grant without polling for it
        self._relaying = True
        try:
            super()._note_grants(request_ids)
        finally:
            self._relaying = False
        if self._wakeups is not None:
            for start in range(0, len(request_ids), GRANTS_PER_WAKEUP):
                chunk = request_ids[start : start + GRANTS_PER_WAKEUP]
                self._wakeups.notify(GRANTED + ",".join(chunk).encode())

    def _woken(self) -> None:
        """Wake-ups from other processes arrived (an event-loop reader callback)."""
        if self._wakeups is not None:
            self._take_wakeups(self._wakeups.drain(), wake=True)

    def _take_wakeups(self, payloads: list[bytes], *, wake: bool) -> None:
        """Note the grants ``payloads`` carry and, with ``wake``, wake this process's
        waiters, as a notification does on PostgreSQL; never sending one on."""
        granted = [
            request_id
            for payload in payloads
            if payload.startswith(GRANTED)
            for request_id in payload[len(GRANTED) :].decode(errors="ignore").split(",")
            if request_id
        ]
        self._relaying = True
        try:
            if granted:
                super()._note_grants(granted)  # wakes this process's waiters too
            elif wake and payloads:
                self._signal_local_work()
        finally:
            self._relaying = False

    @property
    def _checkpoints_in_background(self) -> bool:
        return self.path != ":memory:" and self.config.checkpoint_interval > 0

    def _open_connection(self) -> sqlite3.Connection:
        """A connection in autocommit mode (transactions are explicit), usable from the
        store's threads, waiting up to the busy timeout for other processes' locks."""
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.config.busy_timeout,
        )
        _set_busy_timeout(conn, self.config.busy_timeout)
        return conn

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            path = Path(self.path)
            if path.exists() and not path.is_file():
                # SQLite opens a device (/dev/null) and fails later, on its first write,
                # with "cannot rollback - no transaction is active"
                raise OSError("it is not a regular file")
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._open_connection()
        # Switching a new file to WAL needs an exclusive lock and does not always wait on the
        # busy handler: processes opening one fresh file together retry here.
        try:
            _retry_while_locked(
                lambda: conn.execute("PRAGMA journal_mode = WAL"),
                self.config.busy_timeout,
                first=0.01,
                longest=0.01,
            )
        except sqlite3.OperationalError:
            conn.close()
            raise
        conn.execute(f"PRAGMA synchronous = {self.config.synchronous}")
        if self._checkpoints_in_background:
            conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
        return conn

    def _connect_checkpointer(self) -> sqlite3.Connection:
        conn = self._open_connection()
        # a PASSIVE checkpoint waits for no one; nor should this connection's other locks
        _set_busy_timeout(conn, 0)
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._open_connection()
        # a read path that tried to write would be a bug; make it an error, not a write
        conn.execute("PRAGMA query_only = 1")
        return conn

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def close(self) -> None:
        await self._finish_maintenance()
        if self._wakeups is not None:
            # before the socket closes: a reader left on its descriptor would outlive it
            self._stop_reading()
            self._listening = 0
            self._wakeups.close()
            self._wakeups = None
        if self._checkpointer is not None:
            # joins the thread, which may be inside a checkpoint: not on the event loop
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.stop)
            self._checkpointer = None
        if self._reader is not None and self._reader_executor is not None:
            async with self._reader_lock:
                await asyncio.get_running_loop().run_in_executor(
                    self._reader_executor, self._reader.close
                )
                self._reader_executor.shutdown(wait=True)
                self._reader = None
                self._reader_executor = None
        if self._conn is None or self._executor is None:
            return
        async with self._lock:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
            self._executor.shutdown(wait=True)
            self._conn = None
            self._executor = None

    async def _migrate(self) -> None:
        migrations = load_migrations(self.dialect)

        def apply(conn: sqlite3.Connection) -> None:
            # BEGIN IMMEDIATE takes the write lock first: processes starting together apply
            # each migration exactly once, the others wait and then find it recorded.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS corral_schema_migrations ("
                    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
                )
                done = {r[0] for r in conn.execute("SELECT version FROM corral_schema_migrations")}
                for version, name, sql in migrations:
                    if version in done:
                        continue
                    for statement in split_statements(sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO corral_schema_migrations VALUES (?, ?, ?)",
                        (version, name, time.time()),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        async with self._lock:
            await self._call(apply)

    @asynccontextmanager
    async def _transaction(self, begin: str) -> AsyncIterator[Transaction]:
        async with self._lock:
            assert self._conn is not None, "store is not open"
            try:
                await self._call(_begin, begin, self.config.busy_timeout, self.config.lock_poll)
                yield _SQLiteTransaction(self._inline)
                await self._call(_fetchall, "COMMIT", None)
            except BaseException:
                # A cancellation can land while BEGIN or COMMIT runs on the store's thread,
                # which finishes it anyway. The ROLLBACK queued behind it there ends whatever
                # transaction is then open: the lock is never let go with one open (which
                # failed every later transaction of the process and kept the file's write
                # lock from every other process).
                assert self._executor is not None
                await self._roll_back(self._executor, self._conn)
                raise

    async def _tx(self, body: Callable[[Transaction], Awaitable[T]], *, relaxed: bool = False) -> T:
        # relaxed is a PostgreSQL notion; SQLite's durability is PRAGMA synchronous
        async with self._transaction("BEGIN IMMEDIATE") as tx:
            return await body(tx)

    async def _read(self, body: Callable[[Transaction], Awaitable[T]]) -> T:
        if self._reader is None:
            async with self._transaction("BEGIN") as tx:
                return await body(tx)
        async with self._reader_lock:
            try:
                result = await body(_SQLiteTransaction(_opening_read(self._reader_call)))
                # inside the try: a COMMIT cancelled before the thread reached it never ran
                await self._reader_call(_end_transaction, "COMMIT")
            except BaseException:
                assert self._reader_executor is not None
                await self._roll_back(self._reader_executor, self._reader)
                raise
            return result

    async def wait_for_work(self, timeout: float, *, light_below: int | None = None) -> None:
        # SQLite has no notification payloads, and a waiting worker sees every commit of every
        # process (data_version, wake-ups). Woken by another process's commit, it looks,
        # reading only, whether a lease could take anything (for light_below: a light
        # tenant's run) and waits on if not: a lease takes the file's write lock, and
        # every waiting process taking it on every commit anywhere (a heartbeat, a submit
        # for a tenant at its cap) cost 8 idle worker processes 0.7 of a core. Its own
        # process's commits wake it at once, as before; runs that come due or leases that
        # expire without a commit are found by the worker's poll.
        deadline = time.monotonic() + timeout
        below = UNLIMITED if light_below is None else light_below
        with self._reading_wakeups():
            while True:
                own = await self._wait_for_commit(deadline)
                if (own and light_below is None) or time.monotonic() >= deadline:
                    return
                if await self._work_ready(below):
                    return

    async def _work_ready(self, light_below: int) -> bool:
        """Whether a tenant below its cap and with fewer than ``light_below`` runs in flight
        holds a run that is due (a read: no write lock, and on the reader's connection, so
        this process's own writes do not queue behind it)."""
        params = {"light_below": light_below, "now": self.clock()}

        async def body(tx: Transaction) -> list[Row]:
            return await tx.fetchall(self.q["light_work"], params)

        return bool(await self._read(body))

    async def wait_for_change(self, seen: int, timeout: float) -> int:
        # a shared resource's waiters: a grant made by another process reaches them at once
        with self._reading_wakeups():
            return await super().wait_for_change(seen, timeout)

    @contextmanager
    def _reading_wakeups(self) -> Iterator[None]:
        """Read this process's wake-up socket for the duration, if it has one. It is read
        while any wait of the process is on (several workers and shared resources may share
        a store): the last one out stops reading it."""
        loop = asyncio.get_running_loop()
        listener = self._wakeups.listen() if self._wakeups is not None else None
        if listener is not None and self._listening == 0:
            try:
                loop.add_reader(listener.fileno(), self._woken)
            except NotImplementedError:  # an event loop without readers: poll only
                listener = None
            else:
                self._reading = (loop, listener.fileno())
                # wake-ups sent while nobody read: their grants still count; the commits
                # they announced, data_version tells (a worker's lease has seen them)
                assert self._wakeups is not None
                self._take_wakeups(self._wakeups.drain(), wake=False)
        if listener is not None:
            self._listening += 1
        try:
            yield
        finally:
            # close() may have stopped the reading already (a wait cancelled only after it)
            if listener is not None and self._listening > 0:
                self._listening -= 1
                if self._listening == 0:
                    self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reading is not None:
            loop, fd = self._reading
            self._reading = None
            loop.remove_reader(fd)

    async def _wait_for_commit(self, deadline: float) -> bool:
        """Until this process commits, another one does, or ``deadline`` (monotonic). True
        when this process signalled work itself."""
        if self._data_version is None:
            self._data_version = await self._read_data_version()
        while True:
            if self._local_work.is_set():
                self._local_work.clear()
                own, self._own_signal = self._own_signal, False
                return own
            version = await self._read_data_version()
            if version != self._data_version:
                self._data_version = version
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            poll = POLL_INTERVAL_WITH_WAKEUPS if self._reading is not None else POLL_INTERVAL
            with suppress(TimeoutError):
                await asyncio.wait_for(self._local_work.wait(), timeout=min(poll, remaining))

    async def _read_data_version(self) -> int:
        async with self._lock:
            rows = await self._call(_fetchall, "PRAGMA data_version", None)
        return int(rows[0][0])
