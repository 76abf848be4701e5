"""SQLite finds a call's events by the call's creation time, not through a CallSid index.

A CallSid index put every event's entry on a random page (SIDs are random), and those
pages were the largest part of each commit. These tests hold the replacement to the same
answers: every event of the call, in order, and none of another call's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.schema import CreateIndex, CreateTable

from ivrkit.records import CallEvent, CallRecord
from ivrkit.store import create_store, events, metadata
from ivrkit.store.sqlite import CALL_CREATED, CALL_CREATED_INDEX, CALL_SID_INDEX
from tests.conftest import opened_store

FIRST, SECOND = "CA" + "1" * 32, "CA" + "2" * 32


def indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {name for (name,) in rows}


async def save_turn(store, sid: str, step: int, kind: str) -> None:
    async with store.session(sid) as session:
        record = session.record or CallRecord(
            call_sid=sid, flow="f", flow_version="v1", state="menu", step=0
        )
        record.step = step
        session.save(record, CallEvent(call_sid=sid, step=step, kind=kind, state="menu"))


async def test_events_are_found_by_call_across_a_restart(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    async with opened_store(url) as store:
        await save_turn(store, FIRST, 1, "start")
        await save_turn(store, SECOND, 1, "start")
        await save_turn(store, FIRST, 2, "action")
    async with opened_store(url) as store:  # a restart: the record and its created_at are read back
        await save_turn(store, FIRST, 3, "action")
        await save_turn(store, SECOND, 2, "action")
        assert [(e.step, e.kind) for e in await store.call_events(FIRST)] == [
            (1, "start"),
            (2, "action"),
            (3, "action"),
        ]
        assert [e.step for e in await store.call_events(SECOND)] == [1, 2]
    assert CALL_CREATED_INDEX in indexes(tmp_path / "calls.db")
    assert CALL_SID_INDEX not in indexes(tmp_path / "calls.db")


async def test_the_lookup_uses_the_index(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    async with opened_store(url) as store:
        await save_turn(store, FIRST, 1, "start")
        query = events.select().where(events.c.call_sid == FIRST)
        async with store.engine.connect() as conn:
            looked_up = await store._events_query(conn, query, FIRST)
            compiled = looked_up.compile(conn.sync_engine, compile_kwargs={"literal_binds": True})
            plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")).all()
    steps = " | ".join(row[-1] for row in plan)
    assert f"USING INDEX {CALL_CREATED_INDEX}" in steps, steps
    assert "SCAN ivrkit_events" not in steps, steps


async def test_events_of_a_call_with_no_row_are_found(tmp_path):
    """A first webhook that failed logs an event but stores no call; a retry may then."""
    async with opened_store(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}") as store:
        async with store.session(FIRST) as session:
            assert session.record is None
            session.log(CallEvent(call_sid=FIRST, step=0, kind="error", state="(start)"))
        async with store.session(SECOND) as session:
            session.log(CallEvent(call_sid=SECOND, step=0, kind="error", state="(start)"))
        assert [e.kind for e in await store.call_events(FIRST)] == ["error"]
        await save_turn(store, FIRST, 1, "start")
        assert [e.kind for e in await store.call_events(FIRST)] == ["error", "start"]
        assert [e.kind for e in await store.call_events(SECOND)] == ["error"]


CAMPAIGN_TABLES = (
    "ivrkit_call_rates", "ivrkit_campaign_runners", "ivrkit_campaign_attempts",
    "ivrkit_campaign_contacts", "ivrkit_campaigns",
)


async def test_a_file_from_before_call_created_is_converted(tmp_path):
    path = tmp_path / "old.db"
    old = create_engine(f"sqlite:///{path}")
    with old.begin() as conn:  # the schema as earlier releases created it (no campaigns)
        for table in metadata.sorted_tables:
            if table.name in CAMPAIGN_TABLES:
                continue
            conn.execute(CreateTable(table))
            for index in table.indexes:
                conn.execute(CreateIndex(index))
    old.dispose()
    url = f"sqlite+aiosqlite:///{path}"
    async with opened_store(url) as store:
        await save_turn(store, FIRST, 1, "start")
    # Undo the conversion: events as an earlier release wrote them, before call_created.
    with sqlite3.connect(path) as db:
        db.execute(f"DROP INDEX {CALL_CREATED_INDEX}")
        db.execute(f"ALTER TABLE ivrkit_events DROP COLUMN {CALL_CREATED}")
        db.execute(f"CREATE INDEX {CALL_SID_INDEX} ON ivrkit_events (call_sid)")
        db.execute("DROP TABLE alembic_version")  # earlier releases recorded no revision
        for table in CAMPAIGN_TABLES:  # nor had campaigns (r0003_campaign)
            db.execute(f"DROP TABLE {table}")
        db.execute(
            "INSERT INTO ivrkit_events (call_sid, step, at, kind, state, fired, params, twiml)"
            " VALUES (?, 2, '2026-01-01 00:00:00.000000', 'action', 'menu', '', '{}', '')",
            (FIRST,),
        )
    reader = create_store(url)  # `ivrkit events` on a file no new server has opened yet
    try:
        assert [e.step for e in await reader.call_events(FIRST)] == [1, 2]
    finally:
        await reader.close()
    async with opened_store(url) as store:
        await save_turn(store, FIRST, 3, "action")
        assert [e.step for e in await store.call_events(FIRST)] == [1, 2, 3]
    assert CALL_CREATED_INDEX in indexes(path)
    assert CALL_SID_INDEX not in indexes(path)
