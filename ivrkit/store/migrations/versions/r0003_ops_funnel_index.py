"""SQLite: the events index by call creation time also carries what funnel reports read.

``ivrkit stats`` reads, for every event, its call, time, kind, state and the transitions
it fired. Through the table that meant reading each event's whole row (its parameters
and TwiML: about 900 MB for a million events); from this index, which holds just those
columns in (call creation time, CallSid, time) order, it reads a tenth of that, and a
call's events come out together and in order, so grouping them by call and the window
over them need no sort. The index keeps its name and first column: the store finds a
call's events through it as before. Cost on the webhook path: each event's index entry
is longer (about 150 bytes instead of 40), on the same few pages at the index's end.
PostgreSQL is unchanged (its reports read the table; see ``ivrkit/stats/queries.py``).

Revision ID: r0003_ops
Revises: r0003_campaign
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0003_ops"
down_revision: str | None = "r0003_campaign"
branch_labels = None
depends_on = None

INDEX = "ix_ivrkit_events_call_created"
COLUMNS = ["call_created", "call_sid", "at", "kind", "state", "fired"]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    found = {i["name"]: i for i in sa.inspect(bind).get_indexes("ivrkit_events")}
    if INDEX in found and list(found[INDEX]["column_names"]) == COLUMNS:
        return
    if INDEX in found:
        op.drop_index(INDEX, "ivrkit_events")
    op.create_index(INDEX, "ivrkit_events", COLUMNS)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index(INDEX, "ivrkit_events")
    op.create_index(INDEX, "ivrkit_events", ["call_created"])
