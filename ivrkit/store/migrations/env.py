"""Alembic's entry point: migrate the connection the store hands over, in its transaction."""

from __future__ import annotations

from alembic import context

from ivrkit.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
