"""The tables and indexes of every store: the one place the schema is declared."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text

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

health = Table(
    "ivrkit_health",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("checked_at", DateTime, nullable=False),
)
"""One row, rewritten by every health check: proof that a write can be committed."""

CALL_COLUMNS = [c.name for c in calls.columns]
EVENT_COLUMNS = [c.name for c in events.columns if c.name != "id"]
assert CALL_COLUMNS[0] == "call_sid"

SCHEMA_LOCK = 0x1F2C_0001
"""PostgreSQL advisory lock key held while the schema is created."""
