"""What every store promises: sessions that serialise a call's webhooks, and the shared queries.

:meth:`CallStore.session` serialises the webhooks of one call, and a change is saved (row
and event together) only by :meth:`CallSession.save`. Two stores keep that promise:
``sqlite.EmbeddedStore`` (the embedded default, one process) and
``postgres.LockingStore`` (a lock per call, any number of processes and hosts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable

from ivrkit.records import CallEvent, CallRecord
from ivrkit.store.codec import record_from_row
from ivrkit.store.schema import SCHEMA_LOCK, calls, events, metadata

log = logging.getLogger("ivrkit.store")


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

    schema_extras: tuple[str, ...] = ()
    """DDL run after the tables, in the same transaction (a store's own SQL functions)."""
    skipped_indexes: frozenset[str] = frozenset()
    """Indexes of the shared schema that a store replaces with its own."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    async def open(self) -> None:
        """Create the tables if missing; safe when several processes start at once."""
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Concurrent CREATE TABLE IF NOT EXISTS can still collide in pg_type.
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            for table in metadata.sorted_tables:
                await conn.execute(CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    if index.name not in self.skipped_indexes:
                        await conn.execute(CreateIndex(index, if_not_exists=True))
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

    async def load(self, call_sid: str) -> CallRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(calls).where(calls.c.call_sid == call_sid))).first()
        return record_from_row(row) if row else None

    async def call_events(self, call_sid: str) -> list[CallEvent]:
        query = select(events).where(events.c.call_sid == call_sid).order_by(events.c.id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(await self._events_query(conn, query, call_sid))).all()
        found = []
        for row in rows:
            values = dict(row._mapping)
            values.pop("id")
            values["params"] = orjson.loads(values["params"])
            found.append(CallEvent(**values))
        return found

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
