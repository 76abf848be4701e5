"""SQLite commits the saves of webhooks running together in one transaction."""

from __future__ import annotations

import asyncio

from ivrkit.records import CallEvent, CallRecord
from ivrkit.store import create_store
from ivrkit.store.turns import GATHER_TURNS


async def save_after(store, sid: str, turns: int) -> None:
    async with store.session(sid) as session:
        for _ in range(turns):  # a webhook still busy with its flow for a few loop turns
            await asyncio.sleep(0)
        record = CallRecord(call_sid=sid, flow="f", flow_version="v1", state="menu", step=1)
        session.save(record, CallEvent(call_sid=sid, step=1, kind="start", state="menu"))


async def test_saves_reached_within_a_few_turns_share_one_commit(tmp_path):
    store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await store.open()
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: sql == "COMMIT" and commits.append(sql))
    try:
        sids = [f"CA{i:032d}" for i in range(12)]
        await asyncio.gather(
            *(save_after(store, sid, i % GATHER_TURNS) for i, sid in enumerate(sids))
        )
        assert len(commits) == 1
        for sid in sids:
            assert (await store.load(sid)).state == "menu"
            assert [e.kind for e in await store.call_events(sid)] == ["start"]
    finally:
        await store.close()


async def test_a_lone_save_is_not_held_back(tmp_path):
    store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await store.open()
    turns = 0
    saving = asyncio.create_task(save_after(store, "CA" + "7" * 32, 0))
    try:
        while not saving.done():
            await asyncio.sleep(0)
            turns += 1
        await saving
        # One turn to queue the save, one to find nothing more coming, then the commit.
        assert turns <= 4, turns
        assert (await store.load("CA" + "7" * 32)).step == 1
    finally:
        await store.close()
