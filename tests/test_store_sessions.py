"""Store sessions on both backends, below the app: what a session saves is what is stored."""

from __future__ import annotations

from ivrkit.records import CallEvent, CallRecord
from ivrkit.store import create_store
from tests.conftest import reset_database


async def test_a_session_that_finds_no_call_can_still_store_one(database_url):
    await reset_database(database_url)
    store = create_store(database_url)
    await store.open()
    try:
        async with store.session("CA" + "5" * 32) as session:
            assert session.record is None
            record = CallRecord(
                call_sid="CA" + "5" * 32, flow="f", flow_version="v1", state="menu", step=1
            )
            record.data["chosen"] = "é"
            session.save(
                record,
                CallEvent(
                    call_sid=record.call_sid,
                    step=1,
                    kind="start",
                    state="menu",
                    params={"Digits": "1"},
                ),
            )
        stored = await store.load("CA" + "5" * 32)
        assert (stored.state, stored.step, stored.data) == ("menu", 1, {"chosen": "é"})
        (logged,) = await store.call_events("CA" + "5" * 32)
        assert (logged.kind, logged.params) == ("start", {"Digits": "1"})
        async with store.session("CA" + "5" * 32) as session:
            session.record.state = "bye"
            session.record.step = 2
            session.save(
                session.record,
                CallEvent(call_sid=record.call_sid, step=2, kind="action", state="menu"),
            )
        assert (await store.load("CA" + "5" * 32)).state == "bye"
        assert [e.kind for e in await store.call_events("CA" + "5" * 32)] == ["start", "action"]
    finally:
        await store.close()
