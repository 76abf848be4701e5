"""One schema source: new databases and ones written by earlier versions end up identical.

An "earlier version" database is made with the baseline migration (the schema ivrkit
0.1.0 created, which recorded no revision) plus what that version wrote into it.
"""

from __future__ import annotations

import sqlite3

from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from ivrkit.store.migrate import alembic_config, differences, head
from tests.conftest import opened_store, reset_database

SID = "CA" + "d" * 32
OLD_CALL = (
    "INSERT INTO ivrkit_calls VALUES (:sid, 'f', 'v1', 'menu', 1, 'in-progress', '', "
    "'{\"when\": \"2026-12-02\"}', '{}', '[]', '<Response/>', "
    "'2026-12-01 10:00:00.000000', '2026-12-01 10:00:01.000000', NULL, NULL)"
)
OLD_EVENT = (
    "INSERT INTO ivrkit_events (call_sid, step, at, kind, state, fired, params, twiml) "
    "VALUES (:sid, 1, '2026-12-01 10:00:01.000000', 'start', 'menu', '', '{}', '')"
)


def write_old(conn: Connection) -> None:
    """The baseline schema and a call in it, no revision recorded, and on PostgreSQL a
    function that version's store created beside the tables."""
    conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    command.upgrade(alembic_config(conn), "r0001")
    conn.execute(text(OLD_CALL), {"sid": SID})
    conn.execute(text(OLD_EVENT), {"sid": SID})
    conn.execute(text("DROP TABLE alembic_version"))
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION ivrkit_claim_call_v1(sid text) RETURNS boolean "
                "LANGUAGE sql AS 'SELECT true'"
            )
        )


async def write_as_version_0_1(url: str) -> None:
    await reset_database(url)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(write_old)
    await engine.dispose()


async def test_a_database_from_0_1_is_migrated_to_the_declared_schema(database_url):
    await write_as_version_0_1(database_url)
    async with opened_store(database_url) as store:
        async with store.engine.connect() as conn:
            assert await conn.run_sync(differences) == []
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            functions = await conn.execute(
                text("SELECT count(*) FROM pg_proc WHERE proname = 'ivrkit_claim_call_v1'")
                if store.dialect == "postgresql"
                else text("SELECT 0")
            )
            assert functions.scalar() == 0  # the old function is gone
        assert [tuple(v) for v in version] == [(head(),)]
        record = await store.load(SID)
        assert (record.state, record.data) == ("menu", {"when": "2026-12-02"})
        assert [e.kind for e in await store.call_events(SID)] == ["start"]
        await store.check_writable()  # the table the migration added


async def test_a_new_database_is_the_declared_schema_at_the_latest_revision(database_url):
    await reset_database(database_url)
    async with opened_store(database_url) as store, store.engine.connect() as conn:
        assert await conn.run_sync(differences) == []
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    assert version == head()


async def test_reopening_a_migrated_file_changes_nothing(tmp_path):
    path = tmp_path / "calls.db"
    await write_as_version_0_1(f"sqlite+aiosqlite:///{path}")
    async with opened_store(f"sqlite+aiosqlite:///{path}"):
        pass
    with sqlite3.connect(path) as db:
        first = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        created = db.execute("SELECT call_created FROM ivrkit_events").fetchall()
    async with opened_store(f"sqlite+aiosqlite:///{path}"):
        pass
    with sqlite3.connect(path) as db:
        again = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    assert again == first
    assert created == [("2026-12-01 10:00:00.000000",)]  # filled in from the call's row
