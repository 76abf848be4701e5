"""What every store promises, whatever its backend: the contract both stores are tested against.

A store keeps one row per call and an append-only event log, and promises:

1. **One webhook of a call at a time.** ``async with store.session(sid)`` gives the call's
   record (None for a call never seen) and holds the call until the block ends, so a
   call's webhooks, retries and status callbacks are applied one after the other, in any
   process, each seeing what the previous one committed. A retry of a handled step
   replays the stored answer; a duplicate first webhook replays the first answer.
2. **All or nothing.** Only :meth:`CallSession.save` changes the call, and the row and its
   events are committed together when the block ends without an exception. When the
   block raises, or the write fails, nothing is written and nothing is remembered: a
   cache never runs ahead of what was committed, and the next webhook sees what the
   database holds.
3. **Nothing acquired outlives the session.** The call's turn, lock and connection are
   given back on every exit: success, exception, cancellation, timeout, a row that cannot
   be decoded (:class:`StoredRowError`).
4. **Data round-trips.** ``call.data`` reads back as exactly what was saved (the types in
   :mod:`ivrkit.store.codec`), warm or after a restart, on either backend; anything else
   is refused by ``save()`` with a :class:`CallDataError` naming the flow, state and key.
5. **A final status sticks.** Once a call has a final status (completed, busy, failed,
   no-answer, canceled), its status, ``ended_at`` and ``duration`` never change again: a
   late status callback or action webhook is logged, not applied.
6. **Status callbacks are recorded.** :meth:`record_status` applies the callback to the
   call's row with its event, waiting for the call's webhook in progress, including the
   call's first one.
7. **Committed means durable across restarts.** A webhook is answered only after its save
   is committed; a store reopened on the same file or database continues every call.
8. **Health tells the truth.** :meth:`check_writable` proves a write can be committed now.
9. **A placed call's data is there for its first webhook.** :meth:`prepare_call` stores an
   outbound call's row (step 0, status ``queued``, its ``data``) under the CallSid the Calls
   API returned; the call's first webhook starts the flow on that row, data and all. When
   the first webhook got there first (it waited, then started without it), the data is
   added to the call under the keys the flow has not set, and ``prepare_call`` says so.

Two stores keep it: ``sqlite.EmbeddedStore`` (the embedded default, one process) and
``postgres.LockingStore`` (a lock per call, any number of processes and hosts).
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ivrkit.records import CallEvent, CallRecord, utcnow
from ivrkit.store.codec import (
    JSON_FIELDS,
    CallDataError,
    encode_json,
    event_from_mapping,
    record_from_row,
)
from ivrkit.store.migrate import upgrade
from ivrkit.store.schema import EVENT_COLUMNS, SCHEMA_LOCK, calls, events, health

log = logging.getLogger("ivrkit.store")

FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
"""Twilio's CallStatus values of an ended call: once stored, nothing changes them."""


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A call status callback, applied to the call's row with its event in one step."""

    call_sid: str
    status: str
    final: bool
    duration: int | None
    at: datetime
    params: dict[str, str]  # masked
    flow: str | None = None
    """Apply only to a call of this flow (its current flow or one on its stack)."""


def call_of_flow(record: CallRecord, flow: str | None) -> bool:
    """Whether ``record`` is a call of ``flow``: the flow it is in, or a flow that handed
    it to a sub-flow (a number's status callback names the flow that answered it)."""
    return flow is None or record.flow == flow or any(f[0] == flow for f in record.stack)


class CallTaken(Exception):
    """The call was stored while this first webhook ran: replay that answer instead.

    The stores' locks make this a writer that does not take them (an older release
    during a rolling deploy), but the app handles it all the same."""


class CallSession:
    """A locked view of one call: ``record`` is None for a call never seen."""

    def __init__(self, record: CallRecord | None) -> None:
        self.record = record
        self.saved: CallRecord | None = None
        self.saved_json: tuple[str, ...] = ()
        """The saved record's ``JSON_FIELDS``, encoded once by :meth:`save`."""
        self.log_events: list[CallEvent] = []

    def save(self, record: CallRecord, *log_events: CallEvent) -> None:
        """Keep this record and append these events when the session closes cleanly.

        Raises :class:`CallDataError` naming the flow, state and key when the record holds
        a value the codec cannot store faithfully; nothing is then kept. The record is
        written as it is now: its data is encoded here, once."""
        self.saved_json = encode_record(record)
        self.saved = record
        self.log_events.extend(log_events)

    def log(self, *log_events: CallEvent) -> None:
        """Append events without changing the call (a failure, a replayed retry)."""
        self.log_events.extend(log_events)

    @property
    def dirty(self) -> bool:
        return self.saved is not None or bool(self.log_events)


def encode_record(record: CallRecord) -> tuple[str, ...]:
    """The record's ``JSON_FIELDS`` as stored; refuses, before anything is written, a
    record whose data the codec would not keep, naming the flow, state and key."""
    encoded = []
    for name in JSON_FIELDS:
        try:
            encoded.append(encode_json(getattr(record, name)))
        except CallDataError as error:
            raise CallDataError(
                error.problem,
                error.path,
                name=f"call.{name}",
                where=f"flow {record.flow}, state {record.state}",
            ) from None
    return tuple(encoded)


class StoreContract(Protocol):
    """The typed form of the promises above: what the app, the CLI and the tests use."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def session(self, call_sid: str) -> AbstractAsyncContextManager[CallSession]: ...

    async def record_status(self, update: StatusUpdate) -> tuple[str, str] | None: ...

    async def load(self, call_sid: str) -> CallRecord | None: ...

    async def call_events(self, call_sid: str) -> list[CallEvent]: ...

    async def recent_calls(self, limit: int = 20) -> list[CallRecord]: ...

    async def ping(self) -> None: ...

    async def check_writable(self) -> None: ...

    async def prepare_call(self, record: CallRecord) -> bool: ...


class StoreUnwritableError(RuntimeError):
    """The store cannot commit a write now (disk full, read-only, database down)."""


class CallStore:
    """Shared parts of both stores: engine, schema, event log queries, health."""

    schema_extras: tuple[str, ...] = ()
    """DDL run after the tables, in the same transaction (a store's own SQL functions)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    async def open(self) -> None:
        """Create or migrate the schema (``migrate.upgrade``); safe when several processes
        start at once: on PostgreSQL one at a time under an advisory lock, on SQLite the
        store already owns the file."""
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            await conn.run_sync(upgrade)
            for statement in self.schema_extras:
                await conn.exec_driver_sql(statement)

    async def close(self) -> None:
        await self.engine.dispose()

    def session(self, call_sid: str) -> Any:
        """An async context manager of a locked CallSession: the call's webhooks one at a
        time, from the read to the commit."""
        raise NotImplementedError

    async def record_status(self, update: StatusUpdate) -> tuple[str, str] | None:
        """Apply a status callback; the (flow, state) the call was in, or None if there is no
        such call of ``update.flow``."""
        async with self.session(update.call_sid) as session:
            record = session.record
            if record is None or not call_of_flow(record, update.flow):
                return None
            if record.status not in FINAL_STATUSES:  # a final status sticks
                record.status = update.status or record.status
                if update.final:
                    record.ended_at = update.at
                    if update.duration is not None:
                        record.duration = update.duration
            record.updated_at = update.at
            session.save(
                record,
                CallEvent(
                    call_sid=record.call_sid,
                    step=record.step,
                    kind="status",
                    state=record.state,
                    params=update.params,
                    at=update.at,
                ),
            )
            return record.flow, record.state

    async def prepare_call(self, record: CallRecord) -> bool:
        """Store an outbound call's row before its first webhook (promise 9): True when it
        was stored as given, False when the call had started already (its first webhook
        came first), in which case ``record.data`` is added under the keys the flow has not
        set and nothing else of the running call changes.

        It goes through :meth:`session`, the call's lock, so it is one of the call's
        writers like a webhook: on PostgreSQL any process may place the call."""
        if record.step != 0:
            raise ValueError("prepare_call stores a call not started yet: step must be 0")
        async with self.session(record.call_sid) as session:
            found = session.record
            placed = CallEvent(
                call_sid=record.call_sid,
                step=0,
                kind="placed",
                state=record.state,
                params={"To": record.caller} if record.caller else {},
                at=record.created_at,
            )
            if found is None:
                session.save(record, placed)
                return True
            if found.step == 0:  # placed twice under one CallSid: the later data wins
                found.data.update(record.data)
            else:
                for key, value in record.data.items():
                    found.data.setdefault(key, value)
            found.updated_at = utcnow()
            session.save(found, placed)
            return False

    async def load(self, call_sid: str) -> CallRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(calls).where(calls.c.call_sid == call_sid))).first()
        return record_from_row(row) if row else None

    async def call_events(self, call_sid: str) -> list[CallEvent]:
        columns = [events.c[name] for name in EVENT_COLUMNS]  # not call_created: SQLite's own
        query = select(*columns).where(events.c.call_sid == call_sid).order_by(events.c.id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(await self._events_query(conn, query, call_sid))).all()
        return [event_from_mapping(row._mapping) for row in rows]

    async def _events_query(self, conn: AsyncConnection, query: Select[Any], call_sid: str) -> Any:
        """The query for a call's events, as this store's indexes can answer it."""
        return query

    async def recent_calls(self, limit: int = 20) -> list[CallRecord]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(calls).order_by(calls.c.updated_at.desc()).limit(limit))
            ).all()
        return [record_from_row(row) for row in rows]

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def check_writable(self) -> None:
        """Commit a one-row write (``ivrkit_health``): a store that answers reads but
        cannot write (disk full, read-only replica) is not healthy.

        Raises :class:`StoreUnwritableError` with the database's own reason."""
        insert = sqlite_insert if self.dialect == "sqlite" else postgresql_insert
        now = utcnow()
        statement = (
            insert(health)
            .values(id=1, checked_at=now)
            .on_conflict_do_update(index_elements=[health.c.id], set_={"checked_at": now})
        )
        try:
            async with self.engine.begin() as conn:
                await conn.execute(statement)
        except Exception as error:
            lines = str(getattr(error, "orig", None) or error).strip().splitlines()
            reason = lines[0][:200] if lines else type(error).__name__
            raise StoreUnwritableError(f"{self.dialect} store cannot write: {reason}") from error


def create_store(database_url: str, *, pool_size: int = 20) -> CallStore:
    """The right store for a URL: ``sqlite+aiosqlite:///file.db`` or ``postgresql+asyncpg://``.

    ``pool_size`` caps the PostgreSQL connections one process opens for webhooks.
    """
    if database_url.startswith("postgres://"):
        database_url = "postgresql+asyncpg://" + database_url[len("postgres://") :]
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+asyncpg://" + database_url[len("postgresql://") :]
    elif database_url.startswith("sqlite:///"):
        database_url = "sqlite+aiosqlite:///" + database_url[len("sqlite:///") :]
    if database_url.startswith("sqlite"):
        from ivrkit.store.sqlite import EmbeddedStore

        return EmbeddedStore.from_url(database_url)
    if database_url.startswith("postgresql"):
        from ivrkit.store.postgres import LockingStore

        return LockingStore.from_url(database_url, pool_size=pool_size)
    raise ValueError(
        f"unsupported DATABASE_URL scheme in {database_url.split('://')[0]!r}: "
        "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
    )
