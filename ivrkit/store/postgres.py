"""PostgreSQL, for many app processes and hosts sharing one store.

Each webhook holds its call's lock from the moment it reads the call until its change is
committed, so two processes never handle one call at once: the first webhook of a call
too (a retry racing the original waits, then replays its answer), which a row lock cannot
do before the row exists. The lock is a PostgreSQL advisory lock keyed by the CallSid,
held by one connection per process (``keeper.LockKeeper``) that claims and saves the
calls of many webhooks per round trip, and handed over to the save's own transaction, so
no transaction stays open while the flow's code runs.

Every wait has a limit (``PostgresLimits``, well under the webhook deadline): the server's
statement_timeout and lock_timeout on the store's connections, a connect timeout, the
driver's own limit on each statement, a bounded queue. A call whose lock or row another
session holds fails alone, in time; the other calls go on.

The schema and every query outside the webhook path go through SQLAlchemy. The webhook's
own statements go straight to asyncpg as prepared statements: through SQLAlchemy they
cost four times the CPU, and the store half its speed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ivrkit.store.codec import call_row, encode_json, event_row, record_from_mapping
from ivrkit.store.contract import CallSession, CallStore, CallTaken, StatusUpdate
from ivrkit.store.keeper import (
    MAX_WAITING_CLAIMS,
    Claim,
    Finish,
    LockKeeper,
    give_back,
)
from ivrkit.store.pool import ConnectionPool
from ivrkit.store.schema import CALL_COLUMNS, CALL_UPDATED, EVENT_COLUMNS, calls, events
from ivrkit.store.turns import CallTurns

log = logging.getLogger("ivrkit.store")

# The same durability as SQLite's WAL with synchronous=NORMAL: a committed webhook survives
# an app restart; a crash of the database server may lose its last few hundred ms.
SERVER_SETTINGS = {"synchronous_commit": "off"}
POOL_SIZE = 20
FINAL_STATUSES = ("completed", "busy", "failed", "no-answer", "canceled")
"""A call status that a later non-final status callback never overwrites."""


@dataclass(frozen=True, slots=True)
class PostgresLimits:
    """How long the PostgreSQL path may wait, each well under the webhook deadline (5 s).

    The server enforces the first two on the store's own connections, so a stalled
    statement or a lock held by another session ends with an error instead of a hang.
    Each can be set from the environment (``from_env``), in seconds.
    """

    statement_timeout: float = 3.0  # IVRKIT_PG_STATEMENT_TIMEOUT
    lock_timeout: float = 2.0  # IVRKIT_PG_LOCK_TIMEOUT: also a call's wait for its row
    connect_timeout: float = 2.0  # IVRKIT_PG_CONNECT_TIMEOUT (asyncpg's default is 60 s)
    max_waiting: int = MAX_WAITING_CLAIMS  # webhooks queued before new ones are refused
    status_attempts: int = 3  # a status callback on a broken connection is tried again

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PostgresLimits:
        defaults = cls()

        def seconds(name: str, default: float) -> float:
            key = f"IVRKIT_PG_{name.upper()}"
            raw = env.get(key)
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(
                    f"{key} must be a number of seconds, such as 2 or 0.5, not {raw!r}"
                ) from None
            if not 0 < value <= 14:
                raise ValueError(f"{key} must be over 0 and at most 14 seconds, not {raw!r}")
            return value

        return cls(
            statement_timeout=seconds("statement_timeout", defaults.statement_timeout),
            lock_timeout=seconds("lock_timeout", defaults.lock_timeout),
            connect_timeout=seconds("connect_timeout", defaults.connect_timeout),
        )

    @property
    def command_timeout(self) -> float:
        """The driver's own limit on a statement: the server's, plus time for the answer to
        travel (a network that drops packets leaves the server's limit unheard)."""
        return self.statement_timeout + 0.5

    def server_settings(self, application_name: str) -> dict[str, str]:
        """Settings for a connection of ours: durability, the two timeouts, its name."""
        return {
            **SERVER_SETTINGS,
            "statement_timeout": f"{round(self.statement_timeout * 1000)}ms",
            "lock_timeout": f"{round(self.lock_timeout * 1000)}ms",
            "application_name": application_name,
        }


CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out while connecting
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # A connection the server ended while idle: its next statement finds the protocol
    # still busy with the server's goodbye ("another operation is in progress").
    asyncpg.InternalClientError,
)
"""Errors after which a status callback is tried again on a fresh connection."""

CALL_LOCK_SPACE = 0x1F2C
"""First key of every call's advisory lock; the second is ``hashtext(CallSid)``.

Two-key advisory locks never collide with one-key ones (``SCHEMA_LOCK``). Two calls whose
CallSids hash alike merely take turns."""

# Versioned names: a later release with other columns adds functions instead of replacing
# these under processes still running the old code.
CLAIM_FUNCTION = "ivrkit_try_claim_calls_v1"
SAVE_FUNCTION = "ivrkit_save_calls_v2"  # v2: sets aside calls whose row is locked elsewhere
WAIT_FUNCTION = "ivrkit_wait_call_v1"

_pg = postgresql.dialect()  # type: ignore[no-untyped-call]
_RESULT_COLUMNS = ", ".join(f"{c.name} {c.type.compile(dialect=_pg)}" for c in calls.columns)
_KEY = f"{CALL_LOCK_SPACE}, hashtext(s)"
_CALL_LIST = ", ".join(CALL_COLUMNS)
_EVENT_LIST = ", ".join(EVENT_COLUMNS)
_CALL_ARRAYS = ", ".join(f"c_{c.name} {c.type.compile(dialect=_pg)}[]" for c in calls.columns)
_CALL_ARGS = ", ".join(f"c_{name}" for name in CALL_COLUMNS)
_EVENT_ARRAYS = ", ".join(
    f"e_{c.name} {c.type.compile(dialect=_pg)}[]" for c in events.columns if c.name in EVENT_COLUMNS
)
_EVENT_ARGS = ", ".join(f"e_{name}" for name in EVENT_COLUMNS)
_UPDATED = ", ".join(f"{c} = EXCLUDED.{c}" for c in CALL_UPDATED)

FUNCTIONS = (
    # Take the locks that are free, then read those calls in a statement of its own: its
    # snapshot is taken after the locks, so it sees what their last holders committed.
    f"""CREATE OR REPLACE FUNCTION {CLAIM_FUNCTION}(sids text[])
    RETURNS TABLE (got boolean, {_RESULT_COLUMNS}) LANGUAGE plpgsql VOLATILE AS $body$
    #variable_conflict use_column
    DECLARE held text[];
    BEGIN
        SELECT coalesce(array_agg(s), '{{}}') INTO held
            FROM unnest(sids) AS s WHERE pg_try_advisory_lock({_KEY});
        RETURN QUERY SELECT s = ANY(held), {", ".join(f"c.{name}" for name in CALL_COLUMNS)}
            FROM unnest(sids) WITH ORDINALITY AS asked(s, n)
            LEFT JOIN {calls.name} c ON c.call_sid = s AND s = ANY(held) ORDER BY n;
    END $body$""",
    # Write the calls and events of many webhooks, then hand each call's lock to this
    # transaction: the call's next webhook gets it only once the change is committed and
    # visible. Rows come as one array per column (no composite types, which would tie the
    # function to the tables). Returns the new calls stored meanwhile by a writer that
    # took no lock ('taken': nothing of theirs is written, their locks are simply given
    # back), and the calls whose row another session holds locked ('busy': nothing of
    # theirs is written, their locks stay held, the keeper tries them again): waiting for
    # that row here would stall this connection, and so every call of the process.
    f"""CREATE OR REPLACE FUNCTION {SAVE_FUNCTION}(
        is_new boolean[], {_CALL_ARRAYS}, {_EVENT_ARRAYS}, done text[])
    RETURNS TABLE (saved_sid text, outcome text) LANGUAGE plpgsql VOLATILE AS $body$
    DECLARE taken text[]; busy text[];
    BEGIN
        WITH changed AS (
            SELECT r.call_sid FROM unnest(is_new, c_call_sid) AS r(fresh, call_sid)
            WHERE NOT fresh),
        mine AS (
            SELECT c.call_sid FROM {calls.name} c
            WHERE c.call_sid IN (SELECT call_sid FROM changed) FOR UPDATE SKIP LOCKED)
        SELECT coalesce(array_agg(ch.call_sid), '{{}}') INTO busy FROM changed ch
            WHERE ch.call_sid NOT IN (SELECT call_sid FROM mine)
            AND EXISTS (SELECT 1 FROM {calls.name} c WHERE c.call_sid = ch.call_sid);
        WITH inserted AS (
            INSERT INTO {calls.name} ({_CALL_LIST}) SELECT {_CALL_LIST}
                FROM unnest(is_new, {_CALL_ARGS}) AS r(fresh, {_CALL_LIST}) WHERE fresh
            ON CONFLICT (call_sid) DO NOTHING RETURNING call_sid)
        SELECT coalesce(array_agg(r.call_sid), '{{}}') INTO taken
            FROM unnest(is_new, c_call_sid) AS r(fresh, call_sid)
            WHERE fresh AND r.call_sid NOT IN (SELECT call_sid FROM inserted);
        INSERT INTO {calls.name} ({_CALL_LIST}) SELECT {_CALL_LIST}
            FROM unnest(is_new, {_CALL_ARGS}) AS r(fresh, {_CALL_LIST})
            WHERE NOT fresh AND r.call_sid <> ALL(busy)
        ON CONFLICT (call_sid) DO UPDATE SET {_UPDATED};
        INSERT INTO {events.name} ({_EVENT_LIST}) SELECT {_EVENT_LIST}
            FROM unnest({_EVENT_ARGS}) AS e({_EVENT_LIST})
            WHERE e.call_sid <> ALL(taken) AND e.call_sid <> ALL(busy);
        PERFORM pg_advisory_xact_lock({_KEY}), pg_advisory_unlock({_KEY})
            FROM unnest(done) AS s WHERE s <> ALL(taken) AND s <> ALL(busy);
        PERFORM pg_advisory_unlock({_KEY}) FROM unnest(taken) AS s;
        RETURN QUERY SELECT t, 'taken' FROM unnest(taken) AS t
            UNION ALL SELECT b, 'busy' FROM unnest(busy) AS b;
    END $body$""",
    # For writers that take no session (status callbacks): wait for the call's webhook.
    f"""CREATE OR REPLACE FUNCTION {WAIT_FUNCTION}(sid text)
    RETURNS boolean LANGUAGE plpgsql VOLATILE AS $body$
    BEGIN
        PERFORM pg_advisory_xact_lock({CALL_LOCK_SPACE}, hashtext(sid));
        RETURN true;
    END $body$""",
)

CLAIM = f"SELECT * FROM {CLAIM_FUNCTION}($1::text[])"
_ARRAY_COUNT = 1 + len(CALL_COLUMNS) + len(EVENT_COLUMNS) + 1
SAVE = f"SELECT * FROM {SAVE_FUNCTION}({', '.join(f'${i}' for i in range(1, _ARRAY_COUNT + 1))})"
UNLOCK = f"SELECT pg_advisory_unlock({CALL_LOCK_SPACE}, hashtext($1))"
WAIT = f"SELECT {WAIT_FUNCTION}($1)"


# The row update waits for a webhook holding the call; READ COMMITTED then updates the
# version that webhook committed, not the one in this statement's snapshot. A final status
# sticks: a later non-final one (a late "in-progress") leaves it as it is.
_FINAL_LIST = ", ".join(f"'{status}'" for status in FINAL_STATUSES)
STATUS = (
    # A final status is the call's last word: a later callback, final or not, is logged
    # as an event but changes neither the status nor ended_at nor duration (in SET, every
    # column name means the row as it was).
    f"WITH updated AS (UPDATE {calls.name} SET status = CASE "
    f"WHEN status IN ({_FINAL_LIST}) THEN status "
    "ELSE COALESCE(NULLIF($2::text, ''), status) END, "
    f"ended_at = CASE WHEN status NOT IN ({_FINAL_LIST}) AND $3::boolean THEN $4::timestamp "
    "ELSE ended_at END, "
    f"duration = CASE WHEN status NOT IN ({_FINAL_LIST}) AND $3::boolean "
    "THEN COALESCE($5::integer, duration) ELSE duration END, "
    f"updated_at = $4::timestamp WHERE call_sid = $1 AND {WAIT_FUNCTION}($1) "
    # Only a call of the flow in the callback's URL (or one it handed to a sub-flow).
    "AND ($7::text IS NULL OR flow = $7 OR EXISTS (SELECT 1 FROM "
    "jsonb_array_elements(stack::jsonb) AS frame WHERE frame->>0 = $7)) "
    "RETURNING call_sid, step, state, flow), "
    f"logged AS (INSERT INTO {events.name} ({_EVENT_LIST}) "
    "SELECT call_sid, step, $4::timestamp, 'status', state, '', $6::text, '' FROM updated) "
    "SELECT flow, state FROM updated"
)


def save_arguments(
    calls_new: list[tuple[bool, tuple[Any, ...]]], logged: list[tuple[Any, ...]], done: list[str]
) -> list[Any]:
    """The save function's arguments: a flag array, one array per column, the calls done."""
    call_columns = list(zip(*(row for _, row in calls_new), strict=True)) if calls_new else []
    event_columns = list(zip(*logged, strict=True)) if logged else []
    return [
        [new for new, _ in calls_new],
        *(list(c) for c in call_columns or [()] * len(CALL_COLUMNS)),
        *(list(c) for c in event_columns or [()] * len(EVENT_COLUMNS)),
        done,
    ]


class LockingStore(CallStore):
    """PostgreSQL: each webhook holds its call's advisory lock from claim to save.

    The locks are held by one connection per process (``LockKeeper``), which claims and
    saves the calls of many webhooks per round trip; status callbacks and the tools use a
    small pool beside it.
    """

    schema_extras = FUNCTIONS

    def __init__(
        self,
        engine: AsyncEngine,
        dsn: str,
        *,
        pool_size: int = POOL_SIZE,
        limits: PostgresLimits | None = None,
    ) -> None:
        super().__init__(engine)
        self._dsn = dsn
        self._pool_size = pool_size
        self.limits = limits or PostgresLimits()
        self._pool: ConnectionPool | None = None
        self._keeper: LockKeeper | None = None
        self._turns = CallTurns()

    @classmethod
    def from_url(
        cls,
        database_url: str,
        *,
        pool_size: int = POOL_SIZE,
        limits: PostgresLimits | None = None,
    ) -> LockingStore:
        """``limits`` default to the environment's ``IVRKIT_PG_*`` settings, if any."""
        limits = limits or PostgresLimits.from_env(os.environ)
        engine = create_async_engine(
            database_url,
            pool_size=5,
            connect_args={
                "server_settings": SERVER_SETTINGS,
                "timeout": limits.connect_timeout,
            },
        )
        dsn = make_url(database_url).set(drivername="postgresql")
        return cls(
            engine, dsn.render_as_string(hide_password=False), pool_size=pool_size, limits=limits
        )

    async def open(self) -> None:
        await super().open()
        limits = self.limits
        pool = ConnectionPool(
            self._dsn,
            size=self._pool_size,
            server_settings=limits.server_settings("ivrkit-webhooks"),
            connect_timeout=limits.connect_timeout,
            max_waiting=limits.max_waiting,
        )
        await pool.start(warm=1)
        keeper = LockKeeper(
            lambda: asyncpg.connect(
                self._dsn,
                server_settings=limits.server_settings("ivrkit-call-locks"),
                timeout=limits.connect_timeout,
            ),
            claim_statement=CLAIM,
            save_statement=SAVE,
            save_arguments=save_arguments,
            unlock_statement=UNLOCK,
            row_wait=limits.lock_timeout,
            max_waiting=limits.max_waiting,
            command_timeout=limits.command_timeout,
        )
        try:
            await keeper.start()
        except BaseException:
            await pool.close()
            raise
        self._pool, self._keeper = pool, keeper

    async def close(self) -> None:
        if self._keeper is not None:
            await self._keeper.close()
            self._keeper = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await super().close()

    def _open_pool(self) -> ConnectionPool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open (was the app started?)")
        return self._pool

    async def record_status(self, update: StatusUpdate) -> tuple[str, str] | None:
        """One statement, which waits for a webhook of the call in progress to save.

        Twilio does not retry a failed status callback, so one that meets a broken
        connection (the server restarted, the network dropped) is tried again on a fresh
        one, ``limits.status_attempts`` times in all; the lock and statement timeouts keep
        every attempt short.
        """
        pool = self._open_pool()
        attempts = max(1, self.limits.status_attempts)
        for attempt in range(1, attempts + 1):
            try:
                return await self._apply_status(pool, update)
            except CONNECTION_ERRORS as error:
                if attempt == attempts:
                    raise
                log.debug(  # during an outage every callback does: the app logs the last
                    "call %s: status callback met a broken connection (%s); trying again",
                    update.call_sid,
                    type(error).__name__,
                )
                pool.discard_idle()  # broken by the same outage, most likely
                await asyncio.sleep(STATUS_RETRY * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _apply_status(
        self, pool: ConnectionPool, update: StatusUpdate
    ) -> tuple[str, str] | None:
        arguments = (
            update.call_sid,
            update.status,
            update.final,
            update.at,
            update.duration,
            encode_json(update.params),
            update.flow,
        )
        timeout = self.limits.command_timeout
        connection = await pool.acquire()
        try:
            row = await connection.fetchrow(STATUS, *arguments, timeout=timeout)
            if row is None:
                # No row yet: the call's first webhook may be running. Wait for it (the
                # call's lock, within lock_timeout), then apply to the row it created.
                await connection.fetchval(WAIT, update.call_sid, timeout=timeout)
                row = await connection.fetchrow(STATUS, *arguments, timeout=timeout)
        except CONNECTION_ERRORS:
            connection.terminate()  # never handed out again
            raise
        finally:
            pool.release(connection)
        return (row["flow"], row["state"]) if row else None

    def session(self, call_sid: str) -> _KeptSession:
        if self._keeper is None:
            raise RuntimeError("the PostgreSQL store is not open (was the app started?)")
        return _KeptSession(self._keeper, self._turns, call_sid, self.limits.lock_timeout)


class CallHeldElsewhere(Exception):
    """Another session held the call's lock past ``PostgresLimits.lock_timeout``."""


class _KeptSession:
    """``async with store.session(sid)`` on PostgreSQL: claim, the caller's work, save."""

    __slots__ = ("keeper", "turns", "call_sid", "patience", "generation", "session")

    def __init__(
        self, keeper: LockKeeper, turns: CallTurns, call_sid: str, patience: float
    ) -> None:
        self.keeper = keeper
        self.turns = turns
        self.call_sid = call_sid
        self.patience = patience  # how long another process may hold the call's lock

    def _release_turn(self) -> None:
        self.turns.release(self.call_sid)

    async def __aenter__(self) -> CallSession:
        await self.turns.acquire(self.call_sid)
        delay = CLAIM_RETRY_FIRST
        give_up_at: float | None = None
        while True:
            request = Claim(self.call_sid, self._release_turn)
            try:
                self.keeper.claim(request)
                claimed = await request.future
            except asyncio.CancelledError:
                self._abandon(request)
                raise
            except BaseException:
                self._release_turn()
                raise
            if claimed is not None:
                break
            # Another process is handling this call (a retry, a status callback racing a
            # webhook): it holds the lock for milliseconds. Ask again shortly, within limits.
            now = asyncio.get_running_loop().time()
            give_up_at = give_up_at or now + self.patience
            if now >= give_up_at:
                self._release_turn()
                raise CallHeldElsewhere(
                    f"call {self.call_sid!r}: its lock stayed held elsewhere for "
                    f"{self.patience:g} s (another process stuck on it, or a session holding "
                    f"pg_advisory_lock({CALL_LOCK_SPACE}, hashtext(CallSid)))"
                )
            try:
                await asyncio.sleep(delay)
            except BaseException:
                self._release_turn()
                raise
            delay = min(delay * 2, CLAIM_RETRY_MAX)
        self.generation, row = claimed
        try:
            found = row["call_sid"] is not None
            record = record_from_mapping({n: row[n] for n in CALL_COLUMNS}) if found else None
        except BaseException:
            # A row the decoder refuses: the lock and the turn go back with the error.
            self.keeper.finish(give_back(self.call_sid, self.generation, self._release_turn))
            raise
        self.session = CallSession(record)
        return self.session

    def _abandon(self, request: Claim) -> None:
        """Cancelled while claiming: make sure the lock and the turn are given back."""
        future = request.future
        if future.cancelled():
            return  # the keeper sees it and gives back whatever it took
        claimed = future.result() if future.done() and future.exception() is None else None
        if claimed is not None:
            self.keeper.finish(give_back(self.call_sid, claimed[0], self._release_turn))
        else:
            self._release_turn()

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        session = self.session
        finish = Finish(self.call_sid, self.generation, self._release_turn)
        if exc_type is None:
            try:
                if session.saved is not None:
                    row = call_row(session.saved, encoded=session.saved_json)
                    if session.record is None:
                        finish.new_row = row
                    else:
                        finish.changed_row = row
                finish.events = [event_row(e) for e in session.log_events]
            except BaseException:
                self.keeper.finish(give_back(self.call_sid, self.generation, self._release_turn))
                raise
        try:
            self.keeper.finish(finish)  # from here the keeper hands the turn on
        except BaseException:
            self._release_turn()
            raise
        taken = await finish.future
        if taken and exc_type is None:
            raise CallTaken(self.call_sid)


CLAIM_RETRY_FIRST = 0.001
CLAIM_RETRY_MAX = 0.05
"""Seconds between claims of a call whose lock another process holds (doubling)."""
STATUS_RETRY = 0.05
"""Seconds before a status callback's next attempt after a broken connection (growing)."""
