"""The tables and indexes of every store: the one place the schema is declared.

A new database gets exactly this (``metadata.create_all``); one written by an earlier
version is brought to it by the migrations in ``ivrkit/store/migrations`` (Alembic), and a
test checks that both roads end at the same schema. Where the backends differ, the
difference is declared here too (``ddl_if``), not in DDL of their own.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

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
    Column("call_sid", String(64), nullable=False),
    Column("step", Integer, nullable=False),
    Column("at", DateTime, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("state", String(200), nullable=False),
    Column("fired", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("twiml", Text, nullable=False),
    # The created_at of the event's call, as stored; NULL when the call has no row (its
    # first webhook failed). Only SQLite fills it in: see the indexes below.
    Column("call_created", DateTime, nullable=True),
)
# SQLite finds a call's events by its creation time, not its CallSid: CallSids are random,
# so every event's entry in a CallSid index lands on a page of its own, and rewriting those
# pages was the largest part of each commit; creation times grow, so the entries of the
# calls in progress share a few pages at the index's end. PostgreSQL keeps the CallSid.
Index("ix_ivrkit_events_call_sid", events.c.call_sid).ddl_if(dialect="postgresql")
# It also holds what funnel reports read (r0003_ops), in an order that needs no sort.
Index(
    "ix_ivrkit_events_call_created",
    events.c.call_created,
    events.c.call_sid,
    events.c.at,
    events.c.kind,
    events.c.state,
    events.c.fired,
).ddl_if(dialect="sqlite")

health = Table(
    "ivrkit_health",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("checked_at", DateTime, nullable=False),
)
"""One row, rewritten by every health check: proof that a write can be committed."""

CALL_COLUMNS = [c.name for c in calls.columns]
EVENT_COLUMNS = [c.name for c in events.columns if c.name not in ("id", "call_created")]
"""The columns of a CallEvent (``call_created`` is the SQLite store's own)."""
assert CALL_COLUMNS[0] == "call_sid"
CALL_UPDATED = [c for c in CALL_COLUMNS if c not in ("call_sid", "created_at")]
"""The columns a save of a stored call rewrites (upserts on both backends)."""

SCHEMA_LOCK = 0x1F2C_0001
"""PostgreSQL advisory lock key held while the schema is created."""
