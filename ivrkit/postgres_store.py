"""PostgreSQL, for many app processes and hosts sharing one store.

A webhook of a call in progress runs in a transaction holding ``SELECT ... FOR UPDATE``
on the call's row, so two processes never handle one call at once. A call's first
webhook reads without a lock (there is no row to lock yet) and inserts the row with
``ON CONFLICT DO NOTHING``: if a retry of that webhook got in first, :class:`CallTaken`
tells the app to answer what the retry answered.

The schema and every query outside the webhook path go through SQLAlchemy. The webhook's
own statements (one to four) go straight to asyncpg connections as prepared statements:
through SQLAlchemy they cost four times the CPU, and the store half its speed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ivrkit.pg_connections import ConnectionPool
from ivrkit.records import CallEvent, CallRecord
from ivrkit.store import (
    CALL_COLUMNS,
    CALL_JSON,
    EVENT_COLUMNS,
    EVENT_JSON,
    CallSession,
    CallStore,
    CallTaken,
    StatusUpdate,
    call_fields,
    calls,
    encode_json,
    event_fields,
    events,
    record_from_mapping,
)

# The same durability as SQLite's WAL with synchronous=NORMAL: a committed webhook survives
# an app restart; a crash of the database server may lose its last few hundred ms.
SERVER_SETTINGS = {"synchronous_commit": "off"}
POOL_SIZE = 20

_CALL_LIST = ", ".join(CALL_COLUMNS)
_CALL_PARAMS = ", ".join(f"${i}" for i in range(1, len(CALL_COLUMNS) + 1))
_EVENT_LIST = ", ".join(EVENT_COLUMNS)
_EVENT_PARAMS = ", ".join(
    f"${i}" for i in range(len(CALL_COLUMNS) + 1, len(CALL_COLUMNS) + len(EVENT_COLUMNS) + 1)
)
_UPDATED = ", ".join(
    f"{c} = EXCLUDED.{c}" for c in CALL_COLUMNS if c not in ("call_sid", "created_at")
)

READ = f"SELECT {_CALL_LIST} FROM {calls.name} WHERE call_sid = $1"
LOCK = f"{READ} FOR UPDATE"
# The row of a locked call exists: a plain UPDATE costs the server less than an upsert.
_KEPT = [c for c in CALL_COLUMNS if c != "created_at"]
_CREATED_AT = CALL_COLUMNS.index("created_at")
_KEPT_EVENT_PARAMS = ", ".join(
    f"${i}" for i in range(len(_KEPT) + 1, len(_KEPT) + len(EVENT_COLUMNS) + 1)
)
SAVE = (
    f"WITH saved AS (UPDATE {calls.name} SET "
    + ", ".join(f"{c} = ${i}" for i, c in enumerate(_KEPT, 1) if c != "call_sid")
    + f" WHERE call_sid = $1 RETURNING call_sid) INSERT INTO {events.name} ({_EVENT_LIST}) "
    f"SELECT {_KEPT_EVENT_PARAMS} FROM saved RETURNING id"
)
SAVE_NEW = (
    f"WITH saved AS (INSERT INTO {calls.name} ({_CALL_LIST}) VALUES ({_CALL_PARAMS}) "
    f"ON CONFLICT (call_sid) DO NOTHING RETURNING call_sid) "
    f"INSERT INTO {events.name} ({_EVENT_LIST}) SELECT {_EVENT_PARAMS} FROM saved RETURNING id"
)
INSERT_NEW = (
    f"INSERT INTO {calls.name} ({_CALL_LIST}) VALUES ({_CALL_PARAMS}) "
    "ON CONFLICT (call_sid) DO NOTHING RETURNING call_sid"
)
UPSERT = (
    f"INSERT INTO {calls.name} ({_CALL_LIST}) VALUES ({_CALL_PARAMS}) "
    f"ON CONFLICT (call_sid) DO UPDATE SET {_UPDATED}"
)
LOG = (
    f"INSERT INTO {events.name} ({_EVENT_LIST}) VALUES "
    f"({', '.join(f'${i}' for i in range(1, len(EVENT_COLUMNS) + 1))})"
)


STATUS = (
    f"WITH updated AS (UPDATE {calls.name} SET status = COALESCE(NULLIF($2::text, ''), status), "
    "ended_at = CASE WHEN $3::boolean THEN $4::timestamp ELSE ended_at END, "
    "duration = CASE WHEN $3::boolean THEN COALESCE($5::integer, duration) ELSE duration END, "
    "updated_at = $4::timestamp WHERE call_sid = $1 RETURNING call_sid, step, state, flow), "
    f"logged AS (INSERT INTO {events.name} ({_EVENT_LIST}) "
    "SELECT call_sid, step, $4::timestamp, 'status', state, '', $6::text, '' FROM updated) "
    "SELECT flow, state FROM updated"
)


def _call_args(record: CallRecord) -> list[Any]:
    values = list(call_fields(record))
    for i in CALL_JSON:
        values[i] = encode_json(values[i])
    return values


def _event_args(item: CallEvent) -> list[Any]:
    values = list(event_fields(item))
    values[EVENT_JSON] = encode_json(values[EVENT_JSON])
    return values


class LockingStore(CallStore):
    """PostgreSQL: one transaction per webhook, holding the call's row lock."""

    def __init__(self, engine: AsyncEngine, dsn: str, *, pool_size: int = POOL_SIZE) -> None:
        super().__init__(engine)
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: ConnectionPool | None = None

    @classmethod
    def from_url(cls, database_url: str, *, pool_size: int = POOL_SIZE) -> LockingStore:
        engine = create_async_engine(
            database_url, pool_size=5, connect_args={"server_settings": SERVER_SETTINGS}
        )
        dsn = make_url(database_url).set(drivername="postgresql")
        return cls(engine, dsn.render_as_string(hide_password=False), pool_size=pool_size)

    async def open(self) -> None:
        await super().open()
        pool = ConnectionPool(
            self._dsn,
            size=self._pool_size,
            server_settings={**SERVER_SETTINGS, "application_name": "ivrkit-webhooks"},
        )
        await pool.start()
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await super().close()

    def _open_pool(self) -> ConnectionPool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open (was the app started?)")
        return self._pool

    async def record_status(self, update: StatusUpdate) -> tuple[str, str] | None:
        """One statement: the UPDATE locks the row for its duration, as a session would."""
        pool = self._open_pool()
        connection = await pool.acquire()
        try:
            row = await connection.fetchrow(
                STATUS,
                update.call_sid,
                update.status,
                update.final,
                update.at,
                update.duration,
                encode_json(update.params),
            )
        finally:
            pool.release(connection)
        return (row["flow"], row["state"]) if row else None

    def session(self, call_sid: str, *, new_call: bool = False) -> _LockedSession:
        return _LockedSession(self._open_pool(), call_sid, new_call)


class _LockedSession:
    """``async with store.session(sid)`` on PostgreSQL."""

    __slots__ = ("pool", "call_sid", "new_call", "connection", "in_transaction", "session")

    def __init__(self, pool: ConnectionPool, call_sid: str, new_call: bool) -> None:
        self.pool = pool
        self.call_sid = call_sid
        self.new_call = new_call
        self.in_transaction = False

    async def __aenter__(self) -> CallSession:
        self.connection = connection = await self.pool.acquire()
        try:
            if self.new_call:
                row = await connection.fetchrow(READ, self.call_sid)
                if row is None:  # no row to lock: SAVE_NEW's insert decides who was first
                    self.session = CallSession(None)
                    return self.session
                self.new_call = False
            await connection.execute("BEGIN")
            self.in_transaction = True
            row = await connection.fetchrow(LOCK, self.call_sid)
            self.session = CallSession(record_from_mapping(row) if row else None)
            return self.session
        except BaseException:
            await self._finish(commit=False)
            raise

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        committed = False
        try:
            if exc_type is None:
                await self._flush()
                committed = True
        finally:
            await self._finish(commit=committed)

    async def _flush(self) -> None:
        session, connection = self.session, self.connection
        if self.new_call:
            if session.saved is None:
                if session.log_events:
                    await connection.executemany(LOG, [_event_args(e) for e in session.log_events])
                return
            if not session.log_events:
                saved = await connection.fetchval(INSERT_NEW, *_call_args(session.saved))
                if saved is None:
                    raise CallTaken(self.call_sid)
                return
            first, *more = session.log_events
            saved = await connection.fetchval(
                SAVE_NEW, *_call_args(session.saved), *_event_args(first)
            )
            if saved is None:
                raise CallTaken(self.call_sid)
            if more:
                await connection.executemany(LOG, [_event_args(e) for e in more])
            return
        if session.saved is not None and len(session.log_events) == 1:
            values = _call_args(session.saved)
            del values[_CREATED_AT]
            saved = await connection.fetchval(SAVE, *values, *_event_args(session.log_events[0]))
            if saved is not None:
                return
            # No row to update (the call was never stored): the general path inserts it.
        if session.saved is not None:
            await connection.execute(UPSERT, *_call_args(session.saved))
        if session.log_events:
            await connection.executemany(LOG, [_event_args(e) for e in session.log_events])

    async def _finish(self, *, commit: bool) -> None:
        try:
            if self.in_transaction:
                await self.connection.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            self.pool.release(self.connection)
