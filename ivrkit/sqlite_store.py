"""SQLite, the embedded default: one process owns the file.

Calls are serialised by an in-process turn per CallSid, rows of live calls are kept in
memory (this process is the only writer), and the writes of concurrent webhooks are
committed together, one transaction for many calls. Every webhook still waits for its
commit before it is answered, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ivrkit.records import CallEvent, CallRecord
from ivrkit.store import (
    CALL_COLUMNS,
    CALL_JSON,
    CALL_TIMES,
    EVENT_COLUMNS,
    EVENT_JSON,
    EVENT_TIME,
    CallSession,
    CallStore,
    call_fields,
    calls,
    encode_json,
    event_fields,
    events,
)

log = logging.getLogger("ivrkit.store")

CHECKPOINT_SECONDS = 1.0
"""How often the store copies its write-ahead log into the database file."""

SqliteRow = tuple[Any, ...]


class EmbeddedStore(CallStore):
    """SQLite in one process: in-memory turns and cache, reads and writes done in batches.

    aiosqlite pays a thread hop per operation and SQLAlchemy a few hundred microseconds per
    statement, so one worker task serves every waiting webhook at once: one
    ``SELECT ... IN`` for the calls not in memory, one transaction for all the writes.
    """

    @classmethod
    def from_url(cls, database_url: str) -> EmbeddedStore:
        engine = create_async_engine(database_url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return cls(engine)

    def __init__(self, engine: AsyncEngine, *, cache_size: int = 10_000) -> None:
        super().__init__(engine)
        self._busy: dict[str, deque[asyncio.Future[None]]] = {}
        self._cache: OrderedDict[str, CallRecord] = OrderedDict()
        self._cache_size = cache_size
        self._reads: list[tuple[str, asyncio.Future[CallRecord | None]]] = []
        self._writes: list[tuple[SqliteRow | None, list[SqliteRow], asyncio.Future[None]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._written = False  # since the last checkpoint
        self._connection: AsyncConnection | None = None
        self._db: Any = None  # the aiosqlite connection under self._connection
        self._wake = asyncio.Event()
        self._read_connection: AsyncConnection | None = None
        self._read_db: Any = None
        self._read_wake = asyncio.Event()

    async def open(self) -> None:
        await super().open()
        # The worker keeps one connection and talks to aiosqlite under it: a batch is then
        # three hops to the SQLite thread (two executemany and the commit) instead of the
        # eight that cursors, pool check-out and reset cost through SQLAlchemy.
        self._connection = await self.engine.connect()
        raw = await self._connection.get_raw_connection()
        self._db = raw.driver_connection
        # Checkpoints copy the WAL back into the database file and fsync it. Left to
        # SQLite, one commit in a thousand pays for that while every webhook of its batch
        # waits; here a background task does it from its own connection (and thread).
        await self._db.execute("PRAGMA wal_autocheckpoint=0")
        # Reads (calls not in memory) go through a second connection, in its own thread,
        # so a batch of writes never waits behind them; WAL lets both run at once.
        self._read_connection = await self.engine.connect()
        self._read_db = (await self._read_connection.get_raw_connection()).driver_connection
        self._worker = asyncio.create_task(
            self._drain(self._wake, self._writes, self._write_batch), name="ivrkit-sqlite-writer"
        )
        self._reader = asyncio.create_task(
            self._drain(self._read_wake, self._reads, self._read_batch), name="ivrkit-sqlite-reader"
        )
        self._checkpointer = asyncio.create_task(
            self._checkpoint_regularly(), name="ivrkit-sqlite-checkpoint"
        )

    async def close(self) -> None:
        for task in (self._worker, self._reader, self._checkpointer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._worker = self._reader = self._checkpointer = None
        for connection in (self._connection, self._read_connection):
            if connection is not None:
                await connection.close()
        self._connection = self._read_connection = None
        await super().close()

    def session(self, call_sid: str, *, new_call: bool = False) -> _EmbeddedSession:
        return _EmbeddedSession(self, call_sid)

    async def _acquire(self, call_sid: str) -> None:
        """Wait for this call's earlier webhooks (FIFO); no lock object when uncontended."""
        waiters = self._busy.get(call_sid)
        if waiters is None:
            self._busy[call_sid] = deque()
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release(call_sid)  # handed the call while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    waiters.remove(turn)
            raise

    def _release(self, call_sid: str) -> None:
        waiters = self._busy[call_sid]
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._busy[call_sid]

    async def _commit(self, rows: list[SqliteRow], event_rows: list[SqliteRow]) -> None:
        """One transaction for the batch: plain executemany, no statement compilation.

        The cursors are left to the garbage collector: closing them costs a hop each.
        """
        try:
            if rows:
                await self._db.executemany(_SQLITE_UPSERT, rows)
            if event_rows:
                await self._db.executemany(_SQLITE_INSERT_EVENTS, event_rows)
            await self._db.commit()
            self._written = True
        except BaseException:
            with contextlib.suppress(Exception):
                await self._db.rollback()
            raise

    async def _checkpoint_regularly(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            if not self._written:
                continue
            self._written = False
            try:
                async with self.engine.connect() as conn:
                    # PASSIVE never waits for the writer or readers, nor blocks them.
                    await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception as error:
                log.warning("SQLite checkpoint failed (will retry): %s", error)

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

    def _running(self) -> None:
        if self._worker is None or self._worker.done() or self._reader is None:
            raise RuntimeError("the SQLite worker is not running: was the store opened?")

    async def _submit_read(self, call_sid: str) -> CallRecord | None:
        self._running()
        done: asyncio.Future[CallRecord | None] = asyncio.get_running_loop().create_future()
        self._reads.append((call_sid, done))
        self._read_wake.set()
        return await done

    async def _submit_write(self, record: CallRecord | None, log_events: list[CallEvent]) -> None:
        self._running()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        row = _sqlite_call_row(record) if record else None
        self._writes.append((row, [_sqlite_event_row(e) for e in log_events], done))
        self._wake.set()
        await done

    @staticmethod
    async def _drain(
        wake: asyncio.Event, queue: list[Any], handle: Callable[[list[Any]], Awaitable[None]]
    ) -> None:
        """Hand everything queued since the last wake-up to ``handle`` as one batch."""
        while True:
            await wake.wait()
            wake.clear()
            batch = queue[:]
            queue.clear()
            if batch:
                await handle(batch)

    async def _read_batch(self, reads: list[tuple[str, asyncio.Future[CallRecord | None]]]) -> None:
        wanted = sorted({sid for sid, _ in reads})
        try:
            found: dict[str, CallRecord] = {}
            for first in range(0, len(wanted), 500):
                chunk = wanted[first : first + 500]
                query = f"{_SQLITE_SELECT} WHERE call_sid IN ({', '.join('?' * len(chunk))})"
                for row in await self._read_db.execute_fetchall(query, chunk):
                    record = _record_from_sqlite(row)
                    found[record.call_sid] = record
        except Exception as error:
            for _, done in reads:
                if not done.done():
                    done.set_exception(error)
            return
        for sid, done in reads:
            if not done.done():
                done.set_result(found.get(sid))

    async def _write_batch(
        self,
        writes: list[tuple[SqliteRow | None, list[SqliteRow], asyncio.Future[None]]],
    ) -> None:
        latest: dict[str, SqliteRow] = {}
        event_rows: list[SqliteRow] = []
        for row, items, _ in writes:
            if row is not None:
                latest[row[0]] = row  # keyed by call_sid, the first column
            event_rows.extend(items)
        try:
            await self._commit(list(latest.values()), event_rows)
        except Exception as error:  # each waiting webhook answers with its own fallback
            for row, _, done in writes:
                if row is not None:
                    self._cache.pop(row[0], None)
                if not done.done():
                    done.set_exception(error)
        else:
            for _, _, done in writes:
                if not done.done():
                    done.set_result(None)


class _EmbeddedSession:
    """``async with store.session(sid)`` on SQLite: the call's turn, its record, its save."""

    __slots__ = ("store", "call_sid", "session")

    def __init__(self, store: EmbeddedStore, call_sid: str) -> None:
        self.store = store
        self.call_sid = call_sid

    async def __aenter__(self) -> CallSession:
        store, sid = self.store, self.call_sid
        await store._acquire(sid)
        try:
            record = store._cache.get(sid)
            if record is None:
                record = await store._submit_read(sid)
        except BaseException:
            store._release(sid)
            raise
        self.session = CallSession(record)
        return self.session

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        store, session = self.store, self.session
        try:
            if session.saved is None:
                # The runtime changes the record in place; unless it is saved, forget it so
                # the next webhook reads the stored (unchanged) row again.
                store._cache.pop(self.call_sid, None)
            if exc_type is None and session.dirty:
                await store._submit_write(session.saved, session.log_events)
                if session.saved is not None:
                    store._remember(session.saved)
        finally:
            store._release(self.call_sid)


_SQLITE_UPSERT = (
    f"INSERT INTO {calls.name} ({', '.join(CALL_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(CALL_COLUMNS))}) ON CONFLICT (call_sid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in CALL_COLUMNS if c not in ("call_sid", "created_at"))
)
_SQLITE_SELECT = f"SELECT {', '.join(CALL_COLUMNS)} FROM {calls.name}"
_SQLITE_INSERT_EVENTS = (
    f"INSERT INTO {events.name} ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)


def _sqlite_time(value: datetime | None) -> str | None:
    # SQLAlchemy's own storage format for DateTime on SQLite, so Core reads it back.
    return None if value is None else value.isoformat(" ", "microseconds")


def _sqlite_call_row(record: CallRecord) -> SqliteRow:
    """The calls row as the driver takes it, built without SQLAlchemy's type processing."""
    values = list(call_fields(record))
    for i in CALL_JSON:
        values[i] = encode_json(values[i])
    for i in CALL_TIMES:
        values[i] = _sqlite_time(values[i])
    return tuple(values)


def _sqlite_event_row(item: CallEvent) -> SqliteRow:
    values = list(event_fields(item))
    values[EVENT_JSON] = encode_json(values[EVENT_JSON])
    values[EVENT_TIME] = _sqlite_time(values[EVENT_TIME])
    return tuple(values)


def _record_from_sqlite(row: SqliteRow) -> CallRecord:
    values = list(row)
    for i in CALL_JSON:
        values[i] = orjson.loads(values[i])
    for i in CALL_TIMES:
        values[i] = None if values[i] is None else datetime.fromisoformat(values[i])
    return CallRecord(**dict(zip(CALL_COLUMNS, values, strict=True)))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
