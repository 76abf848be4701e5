"""The connection that holds a process's call locks on PostgreSQL, when things go wrong.

One connection claims and saves the calls of many webhooks at once, so a failure must stay
with the webhook it belongs to, and no lock or in-process turn may be left behind.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from ivrkit.records import CallEvent, CallRecord
from ivrkit.store import create_store
from tests.conftest import PG_ENV, opened_store, reset_database
from tests.test_call_lock import held_call_locks, needs_postgres, wait_for_no_call_locks

pytestmark = needs_postgres


def started(sid: str, state: str = "menu") -> tuple[CallRecord, CallEvent]:
    record = CallRecord(call_sid=sid, flow="f", flow_version="v1", state=state, step=1)
    return record, CallEvent(call_sid=sid, step=1, kind="start", state="menu")


@pytest.fixture
async def store():
    url = os.environ[PG_ENV]
    await reset_database(url)
    async with opened_store(url) as store:
        yield store


async def test_a_webhook_cancelled_while_another_process_holds_its_call_lets_go(store):
    other = create_store(os.environ[PG_ENV])
    await other.open()
    sid = "CA" + "1" * 32
    try:
        holding, done = asyncio.Event(), asyncio.Event()

        async def elsewhere() -> None:
            async with other.session(sid) as session:
                holding.set()
                await done.wait()
                session.save(*started(sid))

        held = asyncio.create_task(elsewhere())
        await asyncio.wait_for(holding.wait(), 5)

        async def waiting() -> None:
            async with store.session(sid):
                raise AssertionError("claimed a call another process holds")

        asked = 0
        claim = store._keeper.claim

        def counted(request):
            nonlocal asked
            asked += request.call_sid == sid
            claim(request)

        store._keeper.claim = counted
        waiter = asyncio.create_task(waiting())
        async with asyncio.timeout(10):
            while asked < 3:  # it keeps asking for the lock meanwhile
                await asyncio.sleep(0.001)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        done.set()
        await held
        # The cancelled webhook left neither a lock nor its in-process turn behind.
        async with asyncio.timeout(5), store.session(sid) as session:
            assert session.record is not None
            assert session.record.state == "menu"
        assert await held_call_locks(store) == 0
    finally:
        await other.close()


async def test_losing_the_lock_connection_fails_the_calls_in_progress_then_recovers(store):
    sid, later = "CA" + "2" * 32, "CA" + "3" * 32

    async def save_after_the_connection_is_ended() -> None:
        async with store.session(sid) as session:
            async with store.engine.connect() as conn:
                await conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'ivrkit-call-locks' "
                    "AND datname = current_database()"
                )
            session.save(*started(sid))

    with pytest.raises(Exception):  # noqa: B017, PT011 (the driver's error or KeeperLost)
        await save_after_the_connection_is_ended()
    assert await store.load(sid) is None  # its lock was gone: nothing was written
    async with asyncio.timeout(5), store.session(later) as session:
        assert session.record is None
        session.save(*started(later))
    assert (await store.load(later)).state == "menu"
    assert await wait_for_no_call_locks(store) == 0


async def test_a_row_the_database_refuses_fails_only_its_own_webhook(store):
    good, bad = "CA" + "4" * 32, "CA" + "5" * 32
    inside = asyncio.Barrier(2)

    async def webhook(sid: str, state: str) -> None:
        async with store.session(sid) as session:
            await inside.wait()  # both are saved in one batch
            session.save(*started(sid, state))

    results = await asyncio.gather(
        webhook(good, "menu"), webhook(bad, "x" * 300), return_exceptions=True
    )
    assert results[0] is None
    assert isinstance(results[1], Exception)
    assert (await store.load(good)).state == "menu"
    assert await store.load(bad) is None
    assert [e.kind for e in await store.call_events(good)] == ["start"]
    assert await held_call_locks(store) == 0
