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
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
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

# Campaigns (ivrkit.outbound.campaign): what a runner needs to stop, die and resume
# without calling anyone twice. A contact moves pending -> claimed -> requesting ->
# placed -> (pending again for a retry, or) done; see ivrkit/outbound/campaign_store.py.
campaigns = Table(
    "ivrkit_campaigns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("flow", String(100), nullable=False),
    Column("from_number", String(64), nullable=False),
    Column("state", String(20), nullable=False),
    Column("stop_reason", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

campaign_contacts = Table(
    "ivrkit_campaign_contacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", Integer, nullable=False),
    Column("row", Integer, nullable=False),
    Column("number", String(64), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("data", Text, nullable=False),
    Column("state", String(20), nullable=False),
    Column("due_at", DateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("runner", String(64), nullable=True),
    Column("call_sid", String(64), nullable=True),
    Column("outcome", String(30), nullable=True),
    Column("answered_by", String(30), nullable=True),
    Column("result", Text, nullable=True),
    Column("detail", Text, nullable=True),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("campaign_id", "row", name="uq_ivrkit_campaign_contacts_row"),
)
# Claims look for due contacts of one campaign in one state.
Index(
    "ix_ivrkit_campaign_contacts_due",
    campaign_contacts.c.campaign_id,
    campaign_contacts.c.state,
    campaign_contacts.c.due_at,
)

campaign_attempts = Table(
    "ivrkit_campaign_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", Integer, nullable=False),
    Column("contact_id", Integer, nullable=False),
    Column("runner", String(64), nullable=False),
    Column("slot_at", Float, nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("placed_at", Float, nullable=True),
    Column("ended_at", Float, nullable=True),
    Column("call_sid", String(64), nullable=True),
    Column("status", String(30), nullable=False),
    Column("answered_by", String(30), nullable=True),
    Column("error", Text, nullable=True),
)
"""One row per Calls API request (epoch seconds: the rate is checked against them)."""
Index("ix_ivrkit_campaign_attempts_contact", campaign_attempts.c.contact_id)

campaign_runners = Table(
    "ivrkit_campaign_runners",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("campaign_id", Integer, nullable=False),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
)

call_rates = Table(
    "ivrkit_call_rates",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("next_at", Float, nullable=False),
)
"""The account-wide calls-per-second limit, shared by every runner: the next free slot."""

CALL_COLUMNS = [c.name for c in calls.columns]
EVENT_COLUMNS = [c.name for c in events.columns if c.name not in ("id", "call_created")]
"""The columns of a CallEvent (``call_created`` is the SQLite store's own)."""
assert CALL_COLUMNS[0] == "call_sid"
CALL_UPDATED = [c for c in CALL_COLUMNS if c not in ("call_sid", "created_at")]
"""The columns a save of a stored call rewrites (upserts on both backends)."""

SCHEMA_LOCK = 0x1F2C_0001
"""PostgreSQL advisory lock key held while the schema is created."""
