"""PostgreSQL, for many app processes and hosts sharing one store.

Each webhook holds its call's lock from the moment it reads the call until its change is
committed, so two processes never handle one call at once: the first webhook of a call
too (a retry racing the original waits, then replays its answer), which a row lock cannot
do before the row exists. The lock is a PostgreSQL advisory lock keyed by the CallSid,
taken by the read and handed over to the save's own transaction, so a webhook costs two
round trips (claim, save) and no transaction stays open while the flow's code runs. The
four of a row lock (BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT) cost about a third more
CPU, in the app and in PostgreSQL.

The schema and every query outside the webhook path go through SQLAlchemy. The webhook's
own statements go straight to asyncpg connections as prepared statements: through
SQLAlchemy they cost four times the CPU, and the store half its speed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.dialects import postgresql
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

CALL_LOCK_SPACE = 0x1F2C
"""First key of every call's advisory lock; the second is ``hashtext(CallSid)``.

Two-key advisory locks never collide with one-key ones (``SCHEMA_LOCK``). Two calls whose
CallSids hash alike merely take turns."""
_CALL_LOCK = f"{CALL_LOCK_SPACE}, hashtext(sid)"

# Versioned names: a later release with other columns adds functions instead of replacing
# these under processes still running the old code.
CLAIM_FUNCTION = "ivrkit_claim_call_v1"
RELEASE_FUNCTION = "ivrkit_release_call_v1"
WAIT_FUNCTION = "ivrkit_wait_call_v1"

_pg = postgresql.dialect()  # type: ignore[no-untyped-call]
_RESULT_COLUMNS = ", ".join(f"{c.name} {c.type.compile(dialect=_pg)}" for c in calls.columns)

FUNCTIONS = (
    # Wait for the call's lock, then read it with a fresh snapshot: the statement's own
    # would predate the wait and miss the change of the webhook we waited for.
    f"""CREATE OR REPLACE FUNCTION {CLAIM_FUNCTION}(sid text)
    RETURNS TABLE ({_RESULT_COLUMNS}) LANGUAGE plpgsql VOLATILE AS $body$
    #variable_conflict use_column
    BEGIN
        PERFORM pg_advisory_lock({_CALL_LOCK});
        RETURN QUERY SELECT {", ".join(f"c.{name}" for name in CALL_COLUMNS)}
            FROM {calls.name} c WHERE c.call_sid = sid;
    END $body$""",
    # Hand the lock to the saving transaction: the next webhook of the call gets it only
    # once this one's change is committed and visible.
    f"""CREATE OR REPLACE FUNCTION {RELEASE_FUNCTION}(sid text)
    RETURNS boolean LANGUAGE plpgsql VOLATILE AS $body$
    BEGIN
        PERFORM pg_advisory_xact_lock({_CALL_LOCK});
        RETURN pg_advisory_unlock({_CALL_LOCK});
    END $body$""",
    # For writers that take no session (status callbacks): wait for the call's webhook.
    f"""CREATE OR REPLACE FUNCTION {WAIT_FUNCTION}(sid text)
    RETURNS boolean LANGUAGE plpgsql VOLATILE AS $body$
    BEGIN
        PERFORM pg_advisory_xact_lock({_CALL_LOCK});
        RETURN true;
    END $body$""",
)

CLAIM = f"SELECT {_CALL_LIST} FROM {CLAIM_FUNCTION}($1)"
UNLOCK = f"SELECT pg_advisory_unlock({CALL_LOCK_SPACE}, hashtext($1))"
RELEASE = f"SELECT {RELEASE_FUNCTION}($1)"
# The row of a claimed call exists: a plain UPDATE costs the server less than an upsert.
_KEPT = [c for c in CALL_COLUMNS if c != "created_at"]
_CREATED_AT = CALL_COLUMNS.index("created_at")
_KEPT_EVENT_PARAMS = ", ".join(
    f"${i}" for i in range(len(_KEPT) + 1, len(_KEPT) + len(EVENT_COLUMNS) + 1)
)
# Each of these saves the row and its event, and hands the lock over, in one statement.
# No row returned means nothing was written and the lock is still held.
SAVE = (
    f"WITH saved AS (UPDATE {calls.name} SET "
    + ", ".join(f"{c} = ${i}" for i, c in enumerate(_KEPT, 1) if c != "call_sid")
    + f" WHERE call_sid = $1 RETURNING call_sid), logged AS (INSERT INTO {events.name} "
    f"({_EVENT_LIST}) SELECT {_KEPT_EVENT_PARAMS} FROM saved RETURNING call_sid) "
    f"SELECT {RELEASE_FUNCTION}(call_sid) FROM logged"
)
SAVE_NEW = (
    f"WITH saved AS (INSERT INTO {calls.name} ({_CALL_LIST}) VALUES ({_CALL_PARAMS}) "
    f"ON CONFLICT (call_sid) DO NOTHING RETURNING call_sid), "
    f"logged AS (INSERT INTO {events.name} ({_EVENT_LIST}) SELECT {_EVENT_PARAMS} FROM saved "
    f"RETURNING call_sid) SELECT {RELEASE_FUNCTION}(call_sid) FROM logged"
)
LOG_ONE = (
    f"WITH logged AS (INSERT INTO {events.name} ({_EVENT_LIST}) VALUES "
    f"({', '.join(f'${i}' for i in range(1, len(EVENT_COLUMNS) + 1))}) RETURNING call_sid) "
    f"SELECT {RELEASE_FUNCTION}(call_sid) FROM logged"
)
# The general path, for what the three above do not cover; run in one transaction.
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


# The row update waits for a webhook holding the call; READ COMMITTED then updates the
# version that webhook committed, not the one in this statement's snapshot.
STATUS = (
    f"WITH updated AS (UPDATE {calls.name} SET status = COALESCE(NULLIF($2::text, ''), status), "
    "ended_at = CASE WHEN $3::boolean THEN $4::timestamp ELSE ended_at END, "
    "duration = CASE WHEN $3::boolean THEN COALESCE($5::integer, duration) ELSE duration END, "
    f"updated_at = $4::timestamp WHERE call_sid = $1 AND {WAIT_FUNCTION}($1) "
    "RETURNING call_sid, step, state, flow), "
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
    """PostgreSQL: each webhook holds its call's advisory lock from claim to save."""

    schema_extras = FUNCTIONS

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
        """One statement, which waits for a webhook of the call in progress to save."""
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

    def session(self, call_sid: str) -> _ClaimedSession:
        return _ClaimedSession(self._open_pool(), call_sid)


class _ClaimedSession:
    """``async with store.session(sid)`` on PostgreSQL: claim, the caller's work, save."""

    __slots__ = ("pool", "call_sid", "connection", "locked", "session")

    def __init__(self, pool: ConnectionPool, call_sid: str) -> None:
        self.pool = pool
        self.call_sid = call_sid
        self.locked = False

    async def __aenter__(self) -> CallSession:
        self.connection = connection = await self.pool.acquire()
        try:
            row = await connection.fetchrow(CLAIM, self.call_sid)
        except BaseException:
            # Whether the server took the lock is unknown: a closed session holds none.
            connection.terminate()
            self.pool.release(connection)
            raise
        self.locked = True
        self.session = CallSession(record_from_mapping(row) if row else None)
        return self.session

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        try:
            if exc_type is None:
                await self._save()
        except BaseException as error:
            await self._finish(error)
            raise
        await self._finish(exc)

    async def _save(self) -> None:
        """Write what the session holds; every path that writes also hands the lock over."""
        session, connection = self.session, self.connection
        new_call = session.record is None
        released = None
        if session.saved is not None and len(session.log_events) == 1:
            values = _call_args(session.saved)
            if new_call:
                released = await connection.fetchval(
                    SAVE_NEW, *values, *_event_args(session.log_events[0])
                )
                if released is None:  # saved by someone who did not hold the lock
                    raise CallTaken(self.call_sid)
            else:
                del values[_CREATED_AT]
                released = await connection.fetchval(
                    SAVE, *values, *_event_args(session.log_events[0])
                )
        elif session.saved is None and len(session.log_events) == 1:
            released = await connection.fetchval(LOG_ONE, *_event_args(session.log_events[0]))
        elif session.saved is None and not session.log_events:
            return  # nothing to write: the lock is simply given back
        if released is None:  # rare: several events, or a call row gone missing
            await self._save_in_transaction(new_call)
        self.locked = False

    async def _save_in_transaction(self, new_call: bool) -> None:
        session, connection = self.session, self.connection
        async with connection.transaction():
            if session.saved is not None:
                if new_call:
                    if await connection.fetchval(INSERT_NEW, *_call_args(session.saved)) is None:
                        raise CallTaken(self.call_sid)
                else:
                    await connection.execute(UPSERT, *_call_args(session.saved))
            if session.log_events:
                await connection.executemany(LOG, [_event_args(e) for e in session.log_events])
            await connection.fetchval(RELEASE, self.call_sid)

    async def _finish(self, failure: BaseException | None) -> None:
        """Give the lock back if still held, then the connection to the pool."""
        connection = self.connection
        try:
            if self.locked:
                if failure is not None and not isinstance(failure, Exception):
                    # Cancelled mid-statement, perhaps: waiting on the connection again could
                    # hang, and closing it frees its locks on the server.
                    connection.terminate()
                else:
                    await connection.fetchval(UNLOCK, self.call_sid)
                self.locked = False
        except Exception:
            connection.terminate()
        except asyncio.CancelledError:
            connection.terminate()
            raise
        finally:
            self.pool.release(connection)
