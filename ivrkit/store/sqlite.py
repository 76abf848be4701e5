"""SQLite, the embedded default: one process owns the file.

Calls are serialised by an in-process turn per CallSid, rows of live calls are kept in
memory (this process is the only writer), and the writes of concurrent webhooks are
committed together, one transaction for many calls. Every webhook still waits for its
commit before it is answered, so a restart loses nothing.

The webhook's reads and writes run on the event loop's own thread, on a stdlib
``sqlite3`` connection that never waits for a lock: with WAL and ``synchronous=NORMAL`` a
commit does not fsync, and a batch of 30 webhooks costs about a millisecond of SQLite's
time. Through aiosqlite's thread the same batch took 13 ms of wall time: the thread waits
for the busy loop to let go of the GIL after every statement, and the loop for the
thread's answer after each of them. Only when the file is locked by another connection
does a batch go to a worker thread, on a connection that may wait (``busy_timeout``)
without stalling the loop; WAL readers never wait for a writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import IO, Any

from sqlalchemy import Select, column, event, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnClause

from ivrkit.errors import StoreInUseError
from ivrkit.memo import BoundedMemo
from ivrkit.records import CallEvent, CallRecord
from ivrkit.store.codec import call_row, event_row, record_from_values
from ivrkit.store.contract import CallSession, CallStore, StoreContract
from ivrkit.store.schema import CALL_COLUMNS, CALL_UPDATED, EVENT_COLUMNS, calls, events
from ivrkit.store.turns import CallTurns, gather

log = logging.getLogger("ivrkit.store")

CHECKPOINT_SECONDS = 1.0
"""How often the store copies its write-ahead log into the database file."""
WAL_LIMIT_BYTES = 64 * 1024 * 1024
"""A write-ahead log larger than this is checkpointed to its end and started over.

Under steady writes a PASSIVE checkpoint never catches up with the log's end, so SQLite
never starts it over and the file grows all day; past this size the writer itself copies
the rest, between two of its batches, and the log starts over in place, cut to this size.
(32 MB, or a TRUNCATE that empties the file, cost a quarter of the requests/s at full load,
where the log grows about 19 MB/s.)"""

SqliteRow = tuple[Any, ...]

CALL_CREATED = events.c.call_created.name
"""The events column SQLite finds a call's events by (see ``schema.events``)."""
CALL_SID_INDEX = next(str(i.name) for i in events.indexes if i.columns[0].name == "call_sid")
CALL_CREATED_INDEX = next(str(i.name) for i in events.indexes if i.columns[0].name == CALL_CREATED)


class EmbeddedStore(CallStore):
    """SQLite in one process: in-memory turns and cache, writes committed in batches.

    One worker task commits every write queued since it last ran in one transaction;
    reads of calls not in memory are single primary-key look-ups, done on the spot.
    """

    @classmethod
    def from_url(cls, database_url: str) -> EmbeddedStore:
        engine = create_async_engine(database_url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return cls(engine)

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cache_size: int = 10_000,
        wal_limit_bytes: int | None = WAL_LIMIT_BYTES,
    ) -> None:
        super().__init__(engine)
        self.wal_limit_bytes = wal_limit_bytes
        """None: PASSIVE checkpoints only (what earlier versions did; for benchmarks)."""
        self._turns = CallTurns()
        self._cache: OrderedDict[str, CallRecord] = OrderedDict()
        self._cache_size = cache_size
        self._writes: list[_Write] = []
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self.restarts = 0
        """How often a background task (writer, checkpointer) died and was started again."""
        self._checkpointer: asyncio.Task[None] | None = None
        self._written = False  # since the last checkpoint
        # Set by the checkpointer when the log is over the limit; the writer truncates it
        # between two batches and answers here.
        self._truncate_due: asyncio.Future[bool] | None = None
        self._db: sqlite3.Connection | None = None  # on the loop's thread, never waits
        # For when the file is locked: used from a worker thread, where waiting is harmless.
        self._waiting: sqlite3.Connection | None = None
        self._wake = asyncio.Event()
        self._owner: IO[bytes] | None = None  # the lock that makes this the file's one store

    async def open(self) -> None:
        path = self.engine.url.database or ""
        self._owner = _own_file(path)
        try:
            await super().open()
            self._db = _connect(path, busy_timeout_ms=0)
            if self.wal_limit_bytes is not None:
                # The writer starts the log over; this is the size it then cuts the file to.
                self._db.execute(f"PRAGMA journal_size_limit={int(self.wal_limit_bytes)}")
            self._waiting = _connect(path, busy_timeout_ms=5000)
        except BaseException:
            await self.close()
            raise
        self._closing = False
        self._worker = self._supervised(self._drain, "ivrkit-sqlite-writer")
        self._checkpointer = self._supervised(
            self._checkpoint_regularly, "ivrkit-sqlite-checkpoint"
        )

    def _supervised(
        self, work: Callable[[], Coroutine[Any, Any, None]], name: str
    ) -> asyncio.Task[None]:
        """Start a background task that is started again if it ever stops before close()."""
        task = asyncio.create_task(work(), name=name)
        task.add_done_callback(lambda ended: self._task_ended(ended, work, name))
        return task

    def _task_ended(
        self,
        task: asyncio.Task[None],
        work: Callable[[], Coroutine[Any, Any, None]],
        name: str,
    ) -> None:
        """Supervision: a writer or checkpointer that dies (a bug, a stray cancellation) is
        replaced, and every webhook waiting on the writer is answered, never left hanging."""
        if self._closing or task not in (self._worker, self._checkpointer):
            return
        error = None if task.cancelled() else task.exception()
        log.error(
            "%s stopped (%s); starting it again",
            name,
            "cancelled" if error is None else f"{type(error).__name__}: {error}",
        )
        self.restarts += 1
        if task is self._worker:
            lost = RuntimeError("the SQLite writer stopped; its queued writes were not saved")
            for write in self._writes:
                write.finish(lost)
            self._writes.clear()
            self._worker = self._supervised(work, name)
        else:
            self._checkpointer = self._supervised(work, name)

    async def close(self) -> None:
        self._closing = True
        for task in (self._worker, self._checkpointer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._worker = self._checkpointer = None
        for write in self._writes:  # queued after the writer's last batch
            write.finish(_closed())
        self._writes.clear()
        for db in (self._db, self._waiting):
            if db is not None:
                db.close()
        self._db = self._waiting = None
        await super().close()
        if self._owner is not None:
            self._owner.close()  # closing the file gives the lock back
            self._owner = None

    async def _events_query(self, conn: AsyncConnection, query: Select[Any], call_sid: str) -> Any:
        info = await conn.exec_driver_sql(f"PRAGMA table_info({events.name})")
        if CALL_CREATED not in {row.name for row in info}:
            return query  # a file no store has opened since call_created came in
        created: ColumnClause[Any] = column(CALL_CREATED)
        started = select(calls.c.created_at).where(calls.c.call_sid == call_sid)
        return query.where(or_(created.is_(None), created == started.scalar_subquery()))

    def session(self, call_sid: str) -> _EmbeddedSession:
        return _EmbeddedSession(self, call_sid)

    async def _commit(self, rows: list[SqliteRow], event_rows: list[SqliteRow]) -> None:
        """One transaction for the batch: plain executemany, no statement compilation."""
        try:
            _write_rows(self._running(), rows, event_rows)
        except sqlite3.OperationalError as error:
            if not _locked(error):
                raise
            log.info("SQLite file locked by another connection: the batch waits its turn")
            assert self._waiting is not None  # opened with self._db
            await asyncio.to_thread(_write_rows, self._waiting, rows, event_rows)
        self._written = True

    async def _checkpoint_regularly(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            if not self._written:
                continue
            self._written = False
            try:
                await self.checkpoint()
            except Exception as error:
                log.warning("SQLite checkpoint failed (will retry): %s", error)

    async def checkpoint(self) -> None:
        """Copy the write-ahead log into the database file; start it over when it is large.

        The copy is PASSIVE, on aiosqlite's thread: it never waits for the writer nor
        blocks it, so the event loop never waits. Past the limit the writer task copies the
        rest on the loop's own connection, between two of its batches, where it waits for
        nobody and only the last second's frames are left; its next commit starts the log
        over. (Run from another connection, a TRUNCATE held the writer off, and the batches
        that met it slept in SQLite's busy handler, up to 100 ms a try: a p99 of 140 ms
        under load instead of 40.)"""
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        limit = self.wal_limit_bytes
        if limit is None or _size(f"{self.engine.url.database}-wal") <= limit:
            return
        if self._truncate_due is None or self._truncate_due.done():
            self._truncate_due = asyncio.get_running_loop().create_future()
        due = self._truncate_due
        self._wake.set()
        over = await asyncio.shield(due)
        log.info(
            "SQLite write-ahead log over %s bytes: %s",
            limit,
            "started over" if over else "still in use by a reader, started over at a later try",
        )

    def _truncate_if_due(self) -> None:
        """The writer's part of :meth:`checkpoint`, between two batches."""
        due = self._truncate_due
        if due is None or due.done():
            return
        try:
            # Between two batches nothing is being appended: a PASSIVE checkpoint from the
            # writer's own connection copies the last frames, so the next commit starts the
            # log over, in place, and SQLite cuts the file to journal_size_limit.
            busy, logged, copied = self._running().execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
        except Exception as error:  # the checkpoint is retried; the writer goes on
            due.set_exception(error)
        else:
            due.set_result(not busy and logged == copied)

    def _remember(self, record: CallRecord) -> None:
        if record.ended_at is not None:
            # An ended call gets few webhooks more (a late recording callback reads it
            # back); keeping only live calls keeps the cache, and the GC's scans, small.
            self._cache.pop(record.call_sid, None)
            return
        self._cache[record.call_sid] = record
        self._cache.move_to_end(record.call_sid)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _running(self) -> sqlite3.Connection:
        if self._worker is None or self._worker.done() or self._db is None:
            raise RuntimeError("the SQLite worker is not running: was the store opened?")
        return self._db

    def _read(self, call_sid: str) -> CallRecord | None:
        # In WAL mode a writer never blocks readers: this cannot wait for a lock.
        row = self._running().execute(_SQLITE_READ, (call_sid,)).fetchone()
        return record_from_values(row) if row is not None else None

    def _queue_write(
        self,
        record: CallRecord | None,
        encoded: tuple[str, ...],
        log_events: list[CallEvent],
        call_created: datetime | None,
        settle: Callable[[bool], None],
    ) -> asyncio.Future[None]:
        """Encode the rows (raising here if they cannot be) and queue them for the writer,
        which calls ``settle(committed)`` once the batch is over, whoever still waits."""
        self._running()
        row = _sqlite_call_row(record, encoded) if record else None
        created = _sqlite_time(call_created)
        items = [_sqlite_event_row(e, created) for e in log_events]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writes.append(_Write(row, items, done, settle))
        self._wake.set()
        return done

    async def _drain(self) -> None:
        """Commit everything queued since the last wake-up as one batch.

        Before it commits, it lets the webhooks that are running reach their save
        (``turns.gather``): a commit rewrites whole pages, shared by many rows, so a batch
        of nearly every webhook in flight costs a third less per webhook.
        """
        while True:
            await self._wake.wait()
            await gather(lambda: len(self._writes))
            self._wake.clear()
            batch = self._writes[:]
            self._writes.clear()
            if batch:
                await self._write_batch(batch)
            self._truncate_if_due()

    async def _write_batch(self, writes: list[_Write]) -> None:
        latest: dict[str, SqliteRow] = {}
        event_rows: list[SqliteRow] = []
        for write in writes:
            if write.row is not None:
                latest[write.row[0]] = write.row  # keyed by call_sid, the first column
            event_rows.extend(write.events)
        try:
            await self._commit(list(latest.values()), event_rows)
        except BaseException as error:  # each waiting webhook answers with its own fallback
            failure = error if isinstance(error, Exception) else _closed()
            for write in writes:
                write.finish(failure)
            if failure is not error:
                raise
        else:
            for write in writes:
                write.finish(None)


class _Write:
    """One session's rows in the writer's queue, and how to tell the session the outcome."""

    __slots__ = ("row", "events", "done", "settle")

    def __init__(
        self,
        row: SqliteRow | None,
        events: list[SqliteRow],
        done: asyncio.Future[None],
        settle: Callable[[bool], None],
    ) -> None:
        self.row = row
        self.events = events
        self.done = done
        self.settle = settle

    def finish(self, failure: Exception | None) -> None:
        # Settled here, not by the waiting webhook: one cancelled meanwhile still gives
        # back its turn, and only once the file holds (or refused) its rows.
        try:
            self.settle(failure is None)
        finally:
            if not self.done.done():
                if failure is None:
                    self.done.set_result(None)
                else:
                    self.done.set_exception(failure)


class _EmbeddedSession:
    """``async with store.session(sid)`` on SQLite: the call's turn, its record, its save."""

    __slots__ = ("store", "call_sid", "session")

    def __init__(self, store: EmbeddedStore, call_sid: str) -> None:
        self.store = store
        self.call_sid = call_sid

    async def __aenter__(self) -> CallSession:
        store, sid = self.store, self.call_sid
        await store._turns.acquire(sid)
        try:
            record = store._cache.get(sid)
            if record is None:
                record = store._read(sid)
        except BaseException:
            store._turns.release(sid)
            raise
        self.session = CallSession(record)
        return self.session

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        store, session = self.store, self.session
        if exc_type is not None or not session.dirty:
            self._settle(False)
            return
        call = session.saved or session.record  # None: a first webhook that failed
        try:
            written = store._queue_write(
                session.saved,
                session.saved_json,
                session.log_events,
                call.created_at if call else None,
                self._settle,
            )
        except BaseException:
            self._settle(False)
            raise
        await written  # the writer has settled the session when this returns or raises

    def _settle(self, committed: bool) -> None:
        """Give the call's turn back, the cache holding exactly what the file holds.

        The runtime changes the cached record in place: unless the saved record was
        committed, it is dropped, so the next webhook reads the stored row again."""
        store, saved = self.store, self.session.saved
        try:
            if committed and saved is not None:
                store._remember(saved)
            else:
                store._cache.pop(self.call_sid, None)
        finally:
            store._turns.release(self.call_sid)


_SQLITE_UPSERT = (
    f"INSERT INTO {calls.name} ({', '.join(CALL_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(CALL_COLUMNS))}) ON CONFLICT (call_sid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in CALL_UPDATED)
)
_SQLITE_READ = f"SELECT {', '.join(CALL_COLUMNS)} FROM {calls.name} WHERE call_sid = ?"
_SQLITE_INSERT_EVENTS = (
    f"INSERT INTO {events.name} ({', '.join(EVENT_COLUMNS)}, {CALL_CREATED}) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 1))})"
)


_sqlite_times: BoundedMemo[datetime, str] = BoundedMemo(4096)


def _sqlite_time(value: datetime | None) -> str | None:
    """SQLAlchemy's own storage format for DateTime on SQLite, so Core reads it back.

    A call's webhooks write the same created_at again and again, and a webhook's row and
    event share one timestamp: each is formatted once (bounded memo)."""
    if value is None:
        return None
    text = _sqlite_times.get(value)
    if text is None:
        text = _sqlite_times.keep(value, value.isoformat(" ", "microseconds"))
    return text


def _sqlite_call_row(record: CallRecord, encoded: tuple[str, ...]) -> SqliteRow:
    """The calls row as the driver takes it, built without SQLAlchemy's type processing."""
    return call_row(record, _sqlite_time, encoded=encoded)


def _sqlite_event_row(item: CallEvent, call_created: str | None) -> SqliteRow:
    return (*event_row(item, _sqlite_time), call_created)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # When a checkpoint lets the log start over, SQLite cuts the file back to this size.
    cursor.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def check_file_free(database_url: str) -> None:
    """Raise :class:`StoreInUseError` if a store already serves this SQLite database."""
    _own_file(make_url(database_url).database or "").close()


def _own_file(path: str) -> IO[bytes]:
    """Lock ``path``'s lock file for as long as the store is open, or refuse to open."""
    if path in ("", ":memory:") or path.startswith("file::memory:"):
        raise ValueError(
            "an in-memory SQLite database cannot be shared by the store's connections: "
            "use a file, e.g. sqlite+aiosqlite:///ivrkit.db"
        )
    owner = open(f"{path}.lock", "ab")  # noqa: SIM115 (held open while the store is)
    if sys.platform == "win32":  # no flock: one process per file is then up to the operator
        return owner
    import fcntl

    try:
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner.close()
        raise StoreInUseError(
            f"{path} is already served by another ivrkit process (or store): SQLite is for "
            "one process. Stop the other one, give this one its own file, or run several "
            "on PostgreSQL (IVRKIT_DATABASE_URL=postgresql+asyncpg://user@host/db)"
        ) from None
    return owner


def _connect(path: str, *, busy_timeout_ms: int) -> sqlite3.Connection:
    """A webhook-path connection; the loop's own never waits for a lock (timeout 0)."""
    # isolation_level=None: the module opens no transactions; _write_rows says BEGIN.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    _sqlite_pragmas(db, None)
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    # Checkpoints copy the WAL back into the database file and fsync it. Left to SQLite,
    # one commit in a thousand pays for that on the loop's thread; the store's background
    # task does it from another connection (aiosqlite's thread) instead.
    db.execute("PRAGMA wal_autocheckpoint=0")
    return db


def _write_rows(db: sqlite3.Connection, rows: list[SqliteRow], event_rows: list[SqliteRow]) -> None:
    """One transaction for the batch, one executemany per table."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if rows:
            db.executemany(_SQLITE_UPSERT, rows)
        if event_rows:
            db.executemany(_SQLITE_INSERT_EVENTS, event_rows)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _closed() -> RuntimeError:
    return RuntimeError("the SQLite store was closed before this write was committed")


def _locked(error: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, extended codes included: another connection holds it."""
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _keeps_the_contract(store: EmbeddedStore) -> StoreContract:
    return store  # mypy checks here that the SQLite store has every method of the contract
