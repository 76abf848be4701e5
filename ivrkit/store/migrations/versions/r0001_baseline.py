"""The schema of ivrkit 0.1.0 and earlier: calls and their events.

Files and databases written by those versions carry no revision; the store stamps them
with this one before upgrading (see ``ivrkit.store.migrate``).

Revision ID: r0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ivrkit_calls",
        sa.Column("call_sid", sa.String(64), primary_key=True),
        sa.Column("flow", sa.String(100), nullable=False),
        sa.Column("flow_version", sa.String(32), nullable=False),
        sa.Column("state", sa.String(200), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("counters", sa.Text, nullable=False),
        sa.Column("stack", sa.Text, nullable=False),
        sa.Column("last_twiml", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime, nullable=True),
        sa.Column("duration", sa.Integer, nullable=True),
        postgresql_with={"fillfactor": 70},
    )
    op.create_table(
        "ivrkit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("state", sa.String(200), nullable=False),
        sa.Column("fired", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("twiml", sa.Text, nullable=False),
    )
    op.create_index("ix_ivrkit_events_call_sid", "ivrkit_events", ["call_sid"])


def downgrade() -> None:
    op.drop_table("ivrkit_events")
    op.drop_table("ivrkit_calls")
