"""Call state and event log in SQL: SQLite (embedded default) or PostgreSQL (scale-out).

Both stores give the same promise: :meth:`CallStore.session` serialises the webhooks of one
call, and a change is saved (row and event together) only by :meth:`CallSession.save`.

- PostgreSQL: a transaction holding ``SELECT ... FOR UPDATE`` on the call's row, so any
  number of processes and hosts can share the database.
- SQLite: one process owns the file. Calls are serialised by an in-process lock, rows of
  live calls are kept in memory (this process is the only writer), and the writes of
  concurrent webhooks are committed together, one transaction for many calls. Every webhook
  still waits for its commit before it is answered, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import operator
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    event,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ivrkit.records import CallEvent, CallRecord

log = logging.getLogger("ivrkit.store")

CHECKPOINT_SECONDS = 1.0
"""How often the SQLite store copies its write-ahead log into the database file."""

metadata = MetaData()

calls = Table(
    "ivrkit_calls",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("flow", String(100), nullable=False),
    Column("flow_version", String(32), nullable=False),
    Column("state", String(200), nullable=False),
    Column("step", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("caller", String(64), nullable=False),
    Column("data", Text, nullable=False),
    Column("counters", Text, nullable=False),
    Column("stack", Text, nullable=False),
    Column("last_twiml", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("ended_at", DateTime, nullable=True),
    Column("duration", Integer, nullable=True),
)

events = Table(
    "ivrkit_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("call_sid", String(64), nullable=False, index=True),
    Column("step", Integer, nullable=False),
    Column("at", DateTime, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("state", String(200), nullable=False),
    Column("fired", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("twiml", Text, nullable=False),
)

_JSON_FIELDS = ("data", "counters", "stack")
SqliteRow = tuple[Any, ...]
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _json(value: dict[str, Any] | list[Any]) -> str:
    """Compact JSON of call data, counters, stacks and webhook params.

    orjson is ten times quicker on a webhook's params; what it refuses (non-string keys,
    integers over 64 bits) goes through the standard library, as before.
    """
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _encode_json(value)


def _row_values(record: CallRecord) -> dict[str, Any]:
    values = dict(vars(record))
    for name in _JSON_FIELDS:
        values[name] = _json(values[name])
    return values


def _record_from_row(row: Any) -> CallRecord:
    values = dict(row._mapping)
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name])
    return CallRecord(**values)


def _event_values(item: CallEvent) -> dict[str, Any]:
    values = dict(vars(item))
    values["params"] = _json(item.params)
    return values


def _build_upsert(builder: Any) -> Any:
    statement = builder(calls)
    updated = {
        c.name: statement.excluded[c.name]
        for c in calls.columns
        if c.name not in ("call_sid", "created_at")
    }
    return statement.on_conflict_do_update(index_elements=["call_sid"], set_=updated)


# Built once: constructing the ON CONFLICT clause costs more than executing it.
_UPSERTS = {"postgresql": _build_upsert(pg_insert), "sqlite": _build_upsert(sqlite_insert)}
_INSERT_EVENTS = insert(events)


class CallSession:
    """A locked view of one call: ``record`` is None for a call never seen."""

    def __init__(self, record: CallRecord | None) -> None:
        self.record = record
        self.saved: CallRecord | None = None
        self.log_events: list[CallEvent] = []

    def save(self, record: CallRecord, *log_events: CallEvent) -> None:
        """Keep this record and append these events when the session closes cleanly."""
        self.saved = record
        self.log_events.extend(log_events)

    def log(self, *log_events: CallEvent) -> None:
        """Append events without changing the call (a failure, a replayed retry)."""
        self.log_events.extend(log_events)

    @property
    def dirty(self) -> bool:
        return self.saved is not None or bool(self.log_events)


class CallStore:
    """Shared parts: engine, schema, event log queries."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    async def open(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    def session(self, call_sid: str, *, new_call: bool = False) -> Any:
        """An async context manager of a locked CallSession; ``new_call`` hints that this
        is a call's first webhook, so a store can claim the row instead of reading it."""
        raise NotImplementedError

    async def load(self, call_sid: str) -> CallRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(calls).where(calls.c.call_sid == call_sid))).first()
        return _record_from_row(row) if row else None

    async def call_events(self, call_sid: str) -> list[CallEvent]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(events).where(events.c.call_sid == call_sid).order_by(events.c.id)
                )
            ).all()
        found = []
        for row in rows:
            values = dict(row._mapping)
            values.pop("id")
            values["params"] = json.loads(values["params"])
            found.append(CallEvent(**values))
        return found

    async def recent_calls(self, limit: int = 20) -> list[CallRecord]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(calls).order_by(calls.c.updated_at.desc()).limit(limit))
            ).all()
        return [_record_from_row(row) for row in rows]

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def _write(
        self, conn: AsyncConnection, rows: list[dict[str, Any]], event_rows: list[dict[str, Any]]
    ) -> None:
        if rows:
            await conn.execute(_UPSERTS[self.dialect], rows)
        if event_rows:
            await conn.execute(_INSERT_EVENTS, event_rows)


_LOCK_ROW = select(calls).where(calls.c.call_sid == bindparam("sid")).with_for_update()
_CLAIM_ROW = pg_insert(calls).on_conflict_do_nothing().returning(calls.c.call_sid)


def _build_save_with_event() -> Any:
    """Row upsert and event insert as one statement (a data-modifying CTE): one round trip."""
    upsert = pg_insert(calls).values({c.name: bindparam(f"c_{c.name}") for c in calls.columns})
    upsert = upsert.on_conflict_do_update(
        index_elements=["call_sid"],
        set_={
            c.name: upsert.excluded[c.name]
            for c in calls.columns
            if c.name not in ("call_sid", "created_at")
        },
    )
    columns = [c for c in events.columns if c.name != "id"]
    return (
        insert(events)
        .values({c.name: bindparam(f"e_{c.name}") for c in columns})
        .add_cte(upsert.cte("saved_call"))
    )


_SAVE_WITH_EVENT = _build_save_with_event()


class LockingStore(CallStore):
    """PostgreSQL: one transaction per webhook, holding the call's row lock."""

    @asynccontextmanager
    async def session(self, call_sid: str, *, new_call: bool = False) -> AsyncIterator[CallSession]:
        async with self.engine.begin() as conn:
            if new_call:
                # Insert a placeholder row: ours (and locked until commit) unless a racing
                # retry of the same first webhook got there first.
                claimed = (await conn.execute(_CLAIM_ROW, _placeholder(call_sid))).first()
                if claimed is not None:
                    session = CallSession(None)
                    yield session
                    await self._flush(conn, session)
                    return
            row = (await conn.execute(_LOCK_ROW, {"sid": call_sid})).first()
            if row is None:
                await conn.execute(_CLAIM_ROW, _placeholder(call_sid))
                row = (await conn.execute(_LOCK_ROW, {"sid": call_sid})).first()
            record = _record_from_row(row)
            session = CallSession(None if record.step == 0 and not record.last_twiml else record)
            yield session
            await self._flush(conn, session)

    async def _flush(self, conn: AsyncConnection, session: CallSession) -> None:
        if session.saved is not None and len(session.log_events) == 1:
            params = {f"c_{k}": v for k, v in _row_values(session.saved).items()}
            params.update({f"e_{k}": v for k, v in _event_values(session.log_events[0]).items()})
            await conn.execute(_SAVE_WITH_EVENT, params)
            return
        if session.dirty:
            await self._write(
                conn,
                [_row_values(session.saved)] if session.saved else [],
                [_event_values(e) for e in session.log_events],
            )


def _placeholder(call_sid: str) -> dict[str, Any]:
    return _row_values(CallRecord(call_sid=call_sid, flow="", flow_version="", state=""))


class EmbeddedStore(CallStore):
    """SQLite in one process: in-memory lock and cache, reads and writes done in batches.

    aiosqlite pays a thread hop per operation and SQLAlchemy a few hundred microseconds per
    statement, so one worker task serves every waiting webhook at once: one
    ``SELECT ... IN`` for the calls not in memory, one transaction for all the writes.
    """

    def __init__(self, engine: AsyncEngine, *, cache_size: int = 10_000) -> None:
        super().__init__(engine)
        self._busy: dict[str, deque[asyncio.Future[None]]] = {}
        self._cache: OrderedDict[str, CallRecord] = OrderedDict()
        self._cache_size = cache_size
        self._reads: list[tuple[str, asyncio.Future[CallRecord | None]]] = []
        self._writes: list[tuple[SqliteRow | None, list[SqliteRow], asyncio.Future[None]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._written = False  # since the last checkpoint
        self._connection: AsyncConnection | None = None
        self._db: Any = None  # the aiosqlite connection under self._connection
        self._wake = asyncio.Event()

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
        self._worker = asyncio.create_task(self._work(), name="ivrkit-sqlite-worker")
        self._checkpointer = asyncio.create_task(
            self._checkpoint_regularly(), name="ivrkit-sqlite-checkpoint"
        )

    async def close(self) -> None:
        for task in (self._worker, self._checkpointer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._worker = self._checkpointer = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
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
        if self._worker is None or self._worker.done():
            raise RuntimeError("the SQLite worker is not running: was the store opened?")

    async def _submit_read(self, call_sid: str) -> CallRecord | None:
        self._running()
        done: asyncio.Future[CallRecord | None] = asyncio.get_running_loop().create_future()
        self._reads.append((call_sid, done))
        self._wake.set()
        return await done

    async def _submit_write(self, record: CallRecord | None, log_events: list[CallEvent]) -> None:
        self._running()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        row = _sqlite_call_row(record) if record else None
        self._writes.append((row, [_sqlite_event_row(e) for e in log_events], done))
        self._wake.set()
        await done

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            reads, self._reads = self._reads, []
            writes, self._writes = self._writes, []
            if reads:
                await self._read_batch(reads)
            if writes:
                await self._write_batch(writes)

    async def _read_batch(self, reads: list[tuple[str, asyncio.Future[CallRecord | None]]]) -> None:
        wanted = sorted({sid for sid, _ in reads})
        try:
            found: dict[str, CallRecord] = {}
            for first in range(0, len(wanted), 500):
                chunk = wanted[first : first + 500]
                query = f"{_SQLITE_SELECT} WHERE call_sid IN ({', '.join('?' * len(chunk))})"
                for row in await self._db.execute_fetchall(query, chunk):
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


_CALL_COLUMNS = [c.name for c in calls.columns]
_EVENT_COLUMNS = [c.name for c in events.columns if c.name != "id"]
_SQLITE_UPSERT = (
    f"INSERT INTO {calls.name} ({', '.join(_CALL_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_CALL_COLUMNS))}) ON CONFLICT (call_sid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _CALL_COLUMNS if c not in ("call_sid", "created_at"))
)
_SQLITE_SELECT = f"SELECT {', '.join(_CALL_COLUMNS)} FROM {calls.name}"
_SQLITE_INSERT_EVENTS = (
    f"INSERT INTO {events.name} ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_EVENT_COLUMNS))})"
)


_call_fields = operator.attrgetter(*_CALL_COLUMNS)
_event_fields = operator.attrgetter(*_EVENT_COLUMNS)
_CALL_JSON = [_CALL_COLUMNS.index(name) for name in _JSON_FIELDS]
_CALL_TIMES = [i for i, c in enumerate(calls.columns) if isinstance(c.type, DateTime)]
_EVENT_JSON = _EVENT_COLUMNS.index("params")
_EVENT_TIME = _EVENT_COLUMNS.index("at")
assert _CALL_COLUMNS[0] == "call_sid"


def _sqlite_time(value: datetime | None) -> str | None:
    # SQLAlchemy's own storage format for DateTime on SQLite, so Core reads it back.
    return None if value is None else value.isoformat(" ", "microseconds")


def _sqlite_call_row(record: CallRecord) -> SqliteRow:
    """The calls row as the driver takes it, built without SQLAlchemy's type processing."""
    values = list(_call_fields(record))
    for i in _CALL_JSON:
        values[i] = _json(values[i])
    for i in _CALL_TIMES:
        values[i] = _sqlite_time(values[i])
    return tuple(values)


def _sqlite_event_row(item: CallEvent) -> SqliteRow:
    values = list(_event_fields(item))
    values[_EVENT_JSON] = _json(values[_EVENT_JSON])
    values[_EVENT_TIME] = _sqlite_time(values[_EVENT_TIME])
    return tuple(values)


def _record_from_sqlite(row: SqliteRow) -> CallRecord:
    values = list(row)
    for i in _CALL_JSON:
        values[i] = orjson.loads(values[i])
    for i in _CALL_TIMES:
        values[i] = None if values[i] is None else datetime.fromisoformat(values[i])
    return CallRecord(**dict(zip(_CALL_COLUMNS, values, strict=True)))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_store(database_url: str) -> CallStore:
    """The right store for a URL: ``sqlite+aiosqlite:///file.db`` or ``postgresql+asyncpg://``."""
    if database_url.startswith("postgres://"):
        database_url = "postgresql+asyncpg://" + database_url[len("postgres://") :]
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+asyncpg://" + database_url[len("postgresql://") :]
    elif database_url.startswith("sqlite:///"):
        database_url = "sqlite+aiosqlite:///" + database_url[len("sqlite:///") :]
    if database_url.startswith("sqlite"):
        engine = create_async_engine(database_url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return EmbeddedStore(engine)
    if database_url.startswith("postgresql"):
        engine = create_async_engine(
            database_url,
            pool_size=20,
            max_overflow=10,
            # The same durability as SQLite's WAL + synchronous=NORMAL: a committed webhook
            # survives an app restart; a database crash may lose the last few hundred ms.
            connect_args={"server_settings": {"synchronous_commit": "off"}},
        )
        return LockingStore(engine)
    raise ValueError(
        f"unsupported DATABASE_URL scheme in {database_url.split('://')[0]!r}: "
        "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
    )
