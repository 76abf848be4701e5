"""Events found by their call's creation time on SQLite; the health table; old functions gone.

SQLite: ``ivrkit_events.call_created`` (filled in from the calls) and its index replace
the CallSid index (random CallSids put every event's index entry on a page of its own).
A file opened by the release that brought the column in already has it: kept as it is.
PostgreSQL keeps its CallSid index; the column is there, unused (NULL costs nothing).
Both: ``ivrkit_health``, written by health checks. PostgreSQL: the functions of the
earlier two-round-trip lock (``ivrkit_claim_call_v1``, ``ivrkit_release_call_v1``) are
dropped; nothing calls them any more.

Revision ID: r0002
Revises: r0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0002"
down_revision: str | None = "r0001"
branch_labels = None
depends_on = None

OLD_FUNCTIONS = ("ivrkit_claim_call_v1", "ivrkit_release_call_v1")


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    columns = {c["name"] for c in inspector.get_columns("ivrkit_events")}
    indexes = {i["name"] for i in inspector.get_indexes("ivrkit_events")}
    if "call_created" not in columns:
        # DATETIME as created_at is: with another affinity, SQLite would convert the
        # column's values to compare them, and the look-up could not use the index.
        op.add_column("ivrkit_events", sa.Column("call_created", sa.DateTime, nullable=True))
        if bind.dialect.name == "sqlite":
            events = sa.table("ivrkit_events", sa.column("call_sid"), sa.column("call_created"))
            calls = sa.table("ivrkit_calls", sa.column("call_sid"), sa.column("created_at"))
            started = (
                sa.select(calls.c.created_at)
                .where(calls.c.call_sid == events.c.call_sid)
                .scalar_subquery()
            )
            op.execute(events.update().values(call_created=started))
    if bind.dialect.name == "sqlite":
        if "ix_ivrkit_events_call_created" not in indexes:
            op.create_index("ix_ivrkit_events_call_created", "ivrkit_events", ["call_created"])
        if "ix_ivrkit_events_call_sid" in indexes:
            op.drop_index("ix_ivrkit_events_call_sid", "ivrkit_events")
    if not inspector.has_table("ivrkit_health"):
        op.create_table(
            "ivrkit_health",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("checked_at", sa.DateTime, nullable=False),
        )
    if bind.dialect.name == "postgresql":
        for name in OLD_FUNCTIONS:
            op.execute(sa.text(f"DROP FUNCTION IF EXISTS {name}"))


def downgrade() -> None:
    op.drop_table("ivrkit_health")
    if op.get_bind().dialect.name == "sqlite":
        op.create_index("ix_ivrkit_events_call_sid", "ivrkit_events", ["call_sid"])
        op.drop_index("ix_ivrkit_events_call_created", "ivrkit_events")
    op.drop_column("ivrkit_events", "call_created")
