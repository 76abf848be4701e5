"""Campaign tables: campaigns, their contacts and attempts, runners, the shared call rate.

New tables only; nothing existing changes. See ``ivrkit.store.schema`` for why each exists.
A table already there (a file whose tables were created from the metadata, with no
revision recorded) is kept as it is, as r0002 does for the health table.

Revision ID: r0003_campaign
Revises: r0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0003_campaign"
down_revision: str | None = "r0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "ivrkit_campaigns" not in existing:
        _campaigns()
    if "ivrkit_campaign_contacts" not in existing:
        _contacts()
    if "ivrkit_campaign_attempts" not in existing:
        _attempts()
    if "ivrkit_campaign_runners" not in existing:
        _runners()
    if "ivrkit_call_rates" not in existing:
        op.create_table(
            "ivrkit_call_rates",
            sa.Column("account", sa.String(64), primary_key=True),
            sa.Column("next_at", sa.Float, nullable=False),
        )


def _campaigns() -> None:
    op.create_table(
        "ivrkit_campaigns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("flow", sa.String(100), nullable=False),
        sa.Column("from_number", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("stop_reason", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def _contacts() -> None:
    op.create_table(
        "ivrkit_campaign_contacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("due_at", sa.DateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("runner", sa.String(64), nullable=True),
        sa.Column("call_sid", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(30), nullable=True),
        sa.Column("answered_by", sa.String(30), nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("campaign_id", "row", name="uq_ivrkit_campaign_contacts_row"),
    )
    op.create_index(
        "ix_ivrkit_campaign_contacts_due",
        "ivrkit_campaign_contacts",
        ["campaign_id", "state", "due_at"],
    )


def _attempts() -> None:
    op.create_table(
        "ivrkit_campaign_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("runner", sa.String(64), nullable=False),
        sa.Column("slot_at", sa.Float, nullable=False),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("placed_at", sa.Float, nullable=True),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("call_sid", sa.String(64), nullable=True),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("answered_by", sa.String(30), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_ivrkit_campaign_attempts_contact", "ivrkit_campaign_attempts", ["contact_id"]
    )


def _runners() -> None:
    op.create_table(
        "ivrkit_campaign_runners",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "ivrkit_call_rates",
        "ivrkit_campaign_runners",
        "ivrkit_campaign_attempts",
        "ivrkit_campaign_contacts",
        "ivrkit_campaigns",
    ):
        op.drop_table(table)
