"""Call state and event log in SQL: the schema, and what every store promises.

:meth:`CallStore.session` serialises the webhooks of one call, and a change is saved (row
and event together) only by :meth:`CallSession.save`. Two stores keep that promise:
``sqlite_store.EmbeddedStore`` (the embedded default, one process) and
``postgres_store.LockingStore`` (a lock per call, any number of processes and hosts).
"""

from __future__ import annotations

import json
import logging
import operator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable

from ivrkit.records import CallEvent, CallRecord

log = logging.getLogger("ivrkit.store")

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
    # Every webhook rewrites its call's row; free room in each page lets PostgreSQL update
    # it in place (a HOT update) instead of also writing a new primary-key entry.
    postgresql_with={"fillfactor": 70},
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
_stdlib_json = json.JSONEncoder(separators=(",", ":")).encode


def encode_json(value: dict[str, Any] | list[Any]) -> str:
    """Compact JSON of call data, counters, stacks and webhook params.

    orjson is ten times quicker on a webhook's params; what it refuses (non-string keys,
    integers over 64 bits) goes through the standard library, as before.
    """
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _stdlib_json(value)


def record_from_row(row: Any) -> CallRecord:
    return record_from_mapping(row._mapping)


def record_from_mapping(row: Any) -> CallRecord:
    values = dict(row)
    for name in _JSON_FIELDS:
        values[name] = orjson.loads(values[name])
    return CallRecord(**values)


CALL_COLUMNS = [c.name for c in calls.columns]
EVENT_COLUMNS = [c.name for c in events.columns if c.name != "id"]
call_fields = operator.attrgetter(*CALL_COLUMNS)
event_fields = operator.attrgetter(*EVENT_COLUMNS)
CALL_JSON = [CALL_COLUMNS.index(name) for name in _JSON_FIELDS]
CALL_TIMES = [i for i, c in enumerate(calls.columns) if isinstance(c.type, DateTime)]
EVENT_JSON = EVENT_COLUMNS.index("params")
EVENT_TIME = EVENT_COLUMNS.index("at")
assert CALL_COLUMNS[0] == "call_sid"


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


SCHEMA_LOCK = 0x1F2C_0001
"""PostgreSQL advisory lock key held while the schema is created."""


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
        from ivrkit.sqlite_store import EmbeddedStore

        return EmbeddedStore.from_url(database_url)
    if database_url.startswith("postgresql"):
        from ivrkit.postgres_store import LockingStore

        return LockingStore.from_url(database_url, pool_size=pool_size)
    raise ValueError(
        f"unsupported DATABASE_URL scheme in {database_url.split('://')[0]!r}: "
        "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
    )
