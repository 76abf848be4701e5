"""SQLite's background tasks are supervised: a writer or checkpointer that dies is started
again, and every webhook waiting on the writer is answered, never left hanging."""

from __future__ import annotations

import asyncio

import pytest

from ivrkit.records import CallEvent, CallRecord
from ivrkit.store.sqlite import EmbeddedStore

SID = "CA" + "5" * 32


async def save_call(store: EmbeddedStore, step: int) -> None:
    async with store.session(SID) as session:
        record = session.record or CallRecord(
            call_sid=SID, flow="f", flow_version="v", state="menu"
        )
        record.step = step
        session.save(record, CallEvent(call_sid=SID, step=step, kind="action", state="menu"))


async def test_a_dead_writer_answers_its_waiters_and_is_started_again(tmp_path):
    store = EmbeddedStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await store.open()
    try:
        await save_call(store, 1)
        queued = asyncio.create_task(save_call(store, 2))
        async with asyncio.timeout(10):
            while not store._writes:  # the save is queued for the writer
                await asyncio.sleep(0)
        dead = store._worker
        assert dead is not None
        dead.cancel()  # the writer dies with a write queued (before: the webhook hung)
        with pytest.raises(RuntimeError, match="writer stopped"):
            await asyncio.wait_for(queued, 10)
        assert store.restarts == 1
        assert store._worker is not dead
        assert not store._worker.done()
        await asyncio.wait_for(save_call(store, 3), 10)  # the call's turn was given back
        assert (await store.load(SID)).step == 3
    finally:
        await store.close()


async def test_a_dead_checkpointer_is_started_again(tmp_path):
    store = EmbeddedStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await store.open()
    try:
        dead = store._checkpointer
        assert dead is not None
        dead.cancel()
        async with asyncio.timeout(10):
            while store._checkpointer is dead:
                await asyncio.sleep(0)
        assert store.restarts == 1
        assert not store._checkpointer.done()
    finally:
        await store.close()
    assert store._worker is None
    assert store.restarts == 1
