"""Bring a store's database to the schema of ``schema.metadata``, whatever wrote it.

Runs inside the store's opening transaction, under the lock that makes it the only one
doing so (PostgreSQL: an advisory lock; SQLite: the file's lock), through Alembic:

- a new database gets ``metadata.create_all`` and is stamped with the latest revision;
- one written by ivrkit 0.1.0 or earlier (tables, no revision) is stamped with the
  baseline revision, then upgraded;
- one with a revision is upgraded to the latest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, inspect

from ivrkit.store.schema import calls, metadata

MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "r0001"
"""The revision of the schema ivrkit 0.1.0 and earlier created (they recorded none)."""

# Alembic is imported when a store opens, not with ivrkit: it costs a third of a second,
# which the authoring tools (check, graph, the simulator) need not pay.
if TYPE_CHECKING:
    from alembic.config import Config


def alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert revision is not None
    return revision


def upgrade(connection: Connection) -> None:
    """Create or migrate the schema on ``connection`` (a sync connection, in a transaction)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    config = alembic_config(connection)
    if not inspect(connection).has_table(calls.name):
        metadata.create_all(connection)
        command.stamp(config, "head", purge=True)
        return
    if MigrationContext.configure(connection).get_current_revision() is None:
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")


def differences(connection: Connection) -> list[Any]:
    """What differs between the database on ``connection`` and ``schema.metadata``, as
    Alembic's autogenerate sees it; empty when migrations and metadata agree.

    Indexes declared for the other backend only (``ddl_if``) are not differences."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    dialect = connection.dialect.name

    def declared_here(item: Any, name: Any, kind: str, reflected: bool, other: Any) -> bool:
        condition = getattr(item, "_ddl_if", None)
        if kind != "index" or reflected or condition is None or condition.dialect is None:
            return True
        return bool(condition.dialect == dialect)

    context = MigrationContext.configure(connection, opts={"include_object": declared_here})
    return list(compare_metadata(context, metadata))
