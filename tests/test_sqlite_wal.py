"""SQLite's write-ahead log does not grow without bound while writes go on (issue 10, 10)."""

from __future__ import annotations

import asyncio
import logging
import os

from ivrkit.records import CallEvent, CallRecord
from ivrkit.store.sqlite import EmbeddedStore


async def write_calls(store: EmbeddedStore, first: int, last: int) -> None:
    """Store calls ``first`` to ``last`` as concurrent first webhooks (batched commits)."""

    async def one(n: int) -> None:
        sid = f"CA{n:032x}"
        async with store.session(sid) as session:
            record = CallRecord(call_sid=sid, flow="f", flow_version="v", state="menu")
            record.last_twiml = "<Response><Say>Hello there.</Say></Response>" * 4
            session.save(record, CallEvent(call_sid=sid, step=0, kind="start", state="menu"))

    for start in range(first, last, 50):
        await asyncio.gather(*(one(n) for n in range(start, min(start + 50, last))))


async def test_a_checkpoint_under_continued_writes_starts_a_large_wal_over(tmp_path):
    path = tmp_path / "calls.db"
    store = EmbeddedStore.from_url(f"sqlite+aiosqlite:///{path}")
    store.wal_limit_bytes = 256 * 1024
    await store.open()
    wal = f"{path}-wal"
    try:
        await write_calls(store, 0, 1000)
        grown = os.path.getsize(wal)
        assert grown > store.wal_limit_bytes
        # The checkpoint runs while the webhooks' writes go on, as under steady load.
        await asyncio.gather(store.checkpoint(), write_calls(store, 1000, 1100))
        await write_calls(store, 1100, 1200)
        assert os.path.getsize(wal) < grown / 2  # before: the file never shrank
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA integrity_check")).scalar() == "ok"
            count = (await conn.exec_driver_sql("SELECT count(*) FROM ivrkit_calls")).scalar()
        assert count == 1200
    finally:
        await store.close()


async def test_below_the_limit_a_checkpoint_is_passive_and_leaves_the_file(tmp_path):
    path = tmp_path / "calls.db"
    store = EmbeddedStore.from_url(f"sqlite+aiosqlite:///{path}")
    await store.open()  # the default limit, far above this test's log
    try:
        await write_calls(store, 0, 200)
        before = os.path.getsize(f"{path}-wal")
        await store.checkpoint()
        assert os.path.getsize(f"{path}-wal") == before  # copied, not truncated
    finally:
        await store.close()


async def test_starting_the_log_over_never_makes_a_batch_wait_for_the_file(tmp_path, caplog):
    """Started over by the writer between its batches, the log never locks a batch out.

    Before, a TRUNCATE from aiosqlite's connection held the writer off: the batches that met
    it went to a waiting thread and slept in SQLite's busy handler (a p99 of 140 ms)."""
    path = tmp_path / "calls.db"
    store = EmbeddedStore.from_url(f"sqlite+aiosqlite:///{path}")
    store.wal_limit_bytes = 256 * 1024
    await store.open()
    try:
        await write_calls(store, 0, 1000)
        with caplog.at_level(logging.DEBUG, "ivrkit.store"):
            for first in range(1000, 1600, 100):  # a start-over amid every stretch of writes
                await asyncio.gather(store.checkpoint(), write_calls(store, first, first + 100))
        assert not [r for r in caplog.records if "locked by another connection" in r.message]
        assert [r for r in caplog.records if r.getMessage().endswith(": started over")]
    finally:
        await store.close()
