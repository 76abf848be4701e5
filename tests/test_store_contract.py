"""The store contract (``ivrkit.store.contract``), one suite run unchanged on both backends.

Each test takes ``database_url`` (SQLite file, then PostgreSQL when configured); both
backends pass the same tests, with no exception for either.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text, update

from flows.support_line import SupportLine
from ivrkit.records import CallEvent, CallRecord, utcnow
from ivrkit.store import (
    CallDataError,
    StatusUpdate,
    StoreContract,
    StoredRowError,
    StoreUnwritableError,
    calls,
)
from tests.conftest import opened_store, phone, reset_database

SID = "CA" + "c" * 32


@asynccontextmanager
async def fresh_store(url: str) -> AsyncIterator[Any]:
    await reset_database(url)
    async with opened_store(url) as store:
        yield store


@asynccontextmanager
async def two_writers(url: str) -> AsyncIterator[tuple[Any, Any]]:
    """Two stores on PostgreSQL (as two processes would be); on SQLite, where one process
    owns the file, one store used by both sides."""
    async with fresh_store(url) as first:
        if url.startswith("sqlite"):
            yield first, first
            return
        async with opened_store(url) as second:
            yield first, second


def new_call(sid: str = SID, **data: Any) -> CallRecord:
    return CallRecord(call_sid=sid, flow="contract", flow_version="v1", state="menu", data=data)


def event(record: CallRecord, kind: str = "action", **params: str) -> CallEvent:
    return CallEvent(
        call_sid=record.call_sid, step=record.step, kind=kind, state=record.state, params=params
    )


async def store_call(store: Any, record: CallRecord) -> None:
    async with store.session(record.call_sid) as session:
        assert session.record is None
        session.save(record, event(record, "start"))


async def take_step(store: Any, sid: str, seen: int) -> None:
    """One action webhook: the next step, and which webhook it was, in the call's data."""
    async with store.session(sid) as session:
        record = session.record
        record.step += 1
        record.data["seen"] = [*record.data.get("seen", []), seen]
        session.save(record, event(record))


async def change_call(store: Any, *, data: dict[str, Any], **changes: Any) -> None:
    """A webhook that changes the call in place, as the runtime does, then saves it."""
    async with store.session(SID) as session:
        session.record.data.update(data)
        for name, value in changes.items():
            setattr(session.record, name, value)
        session.save(session.record, event(session.record))


def status(sid: str, value: str, *, duration: int | None = None, **params: str) -> StatusUpdate:
    from ivrkit.store import FINAL_STATUSES

    return StatusUpdate(
        call_sid=sid,
        status=value,
        final=value in FINAL_STATUSES,
        duration=duration,
        at=utcnow(),
        params={"CallStatus": value, **params},
    )


def test_both_stores_are_typed_as_the_contract():
    from ivrkit.store.postgres import LockingStore
    from ivrkit.store.sqlite import EmbeddedStore

    members = [name for name in vars(StoreContract) if not name.startswith("_")]
    assert {"session", "record_status", "check_writable", "load"} <= set(members)
    for store in (EmbeddedStore, LockingStore):
        assert all(callable(getattr(store, name)) for name in members), store


# -- ordering, duplicates, races ------------------------------------------------------------


async def test_a_calls_webhooks_are_applied_one_at_a_time_in_order(database_url):
    async with two_writers(database_url) as (first, second):
        await store_call(first, new_call())
        await asyncio.gather(*(take_step((first, second)[i % 2], SID, i) for i in range(12)))
        record = await first.load(SID)
        assert record.step == 12  # no webhook overwrote another's change
        assert sorted(record.data["seen"]) == list(range(12))
        steps = [e.step for e in await first.call_events(SID) if e.kind == "action"]
        assert steps == list(range(1, 13))  # logged in the order they were applied


async def test_a_duplicate_first_webhook_finds_the_call_the_first_one_stored(database_url):
    outcomes: list[str] = []

    async def first_webhook(store: Any) -> None:
        async with store.session(SID) as session:
            if session.record is not None:  # Twilio's retry: replay, store nothing new
                outcomes.append("replay")
                session.log(event(session.record, "replay"))
                return
            outcomes.append("start")
            session.save(new_call(), event(new_call(), "start"))

    async with two_writers(database_url) as (first, second):
        await asyncio.gather(first_webhook(first), first_webhook(second))
        assert sorted(outcomes) == ["replay", "start"]
        assert sorted(e.kind for e in await first.call_events(SID)) == ["replay", "start"]


async def test_racing_webhooks_and_status_callbacks_lose_nothing(database_url):
    async with two_writers(database_url) as (first, second):
        await store_call(first, new_call())
        webhooks = [take_step((first, second)[i % 2], SID, i) for i in range(8)]
        callbacks = [
            (second, first)[i % 2].record_status(status(SID, "in-progress", n=str(i)))
            for i in range(6)
        ]
        results = await asyncio.gather(*webhooks, *callbacks)
        assert results[8:] == [("contract", "menu")] * 6
        record = await first.load(SID)
        assert (record.step, sorted(record.data["seen"])) == (8, list(range(8)))
        logged = await first.call_events(SID)
        assert sorted(e.params["n"] for e in logged if e.kind == "status") == list("012345")


async def test_a_status_callback_during_the_first_webhook_is_recorded(database_url):
    async with fresh_store(database_url) as store:
        async with store.session(SID) as session:
            callback = asyncio.create_task(store.record_status(status(SID, "in-progress")))
            for _ in range(20):  # let the callback run as far as it can: to the call's turn
                await asyncio.sleep(0)
            assert not callback.done()  # it waits for the first webhook instead of dropping
            session.save(new_call(), event(new_call(), "start"))
        assert await callback == ("contract", "menu")
        assert [e.kind for e in await store.call_events(SID)] == ["start", "status"]
        assert (await store.load(SID)).status == "in-progress"


async def test_a_call_goes_on_after_a_restart_mid_call(database_url):
    async with fresh_store(database_url) as store:
        await store_call(store, new_call(when=date(2026, 12, 2)))
        await take_step(store, SID, 1)
    async with opened_store(database_url) as restarted:  # close and reopen: a new process
        await take_step(restarted, SID, 2)
        record = await restarted.load(SID)
        assert (record.step, record.data) == (2, {"when": date(2026, 12, 2), "seen": [1, 2]})
        kinds = [(e.kind, e.step) for e in await restarted.call_events(SID)]
        assert kinds == [("start", 0), ("action", 1), ("action", 2)]


# -- final status ---------------------------------------------------------------------------


async def test_a_final_status_sticks_against_a_late_status_callback(database_url):
    async with fresh_store(database_url) as store:
        await store_call(store, new_call())
        await store.record_status(status(SID, "completed", duration=42))
        ended = await store.load(SID)
        await store.record_status(status(SID, "in-progress", duration=7))
        await store.record_status(status(SID, "busy", duration=9))
        late = await store.load(SID)
        assert (late.status, late.ended_at, late.duration) == ("completed", ended.ended_at, 42)
        kinds = [e.kind for e in await store.call_events(SID)]
        assert kinds == ["start", "status", "status", "status"]  # logged, not applied


async def test_a_late_action_webhook_keeps_the_final_status(serve):
    async with serve([SupportLine]) as (app, client):
        call = phone(client, "support_line")
        await call.start()
        menu = call.last
        assert (await call.status("completed", 30)).status == 204
        call.last = menu  # the menu's Gather answered after the hang-up was reported
        answer = await call.press("1")
        assert answer.status == 200
        record = await app.state.ivr.store.load(call.sid)
        assert (record.status, record.duration) == ("completed", 30)
        assert record.ended_at is not None


# -- data round-trip ------------------------------------------------------------------------

EVERY_TYPE: dict[str, Any] = {
    "text": 'é ✓ "$date"',
    "small": -7,
    "big": 2**80,
    "negative_big": -(2**70),
    "u64": 2**64 - 1,
    "ratio": 0.1,
    "yes": True,
    "nothing": None,
    "list": [1, "two", [date(2026, 12, 2)]],
    "when": date(2026, 12, 2),
    "at": datetime(2026, 12, 2, 9, 30, 15, 123456),
    "at_zoned": datetime(2026, 12, 2, 9, 30, tzinfo=timezone(timedelta(hours=-5))),
    "amount": Decimal("1234.50"),
    "lookalike": {"$date": "not a date"},
    "nested": {"$int": {"$decimal": "x"}},
    "empty": {},
}


async def test_call_data_of_every_documented_type_round_trips_warm_and_cold(database_url):
    async with fresh_store(database_url) as store:
        await store_call(store, new_call(**EVERY_TYPE))
        async with store.session(SID) as session:  # warm: SQLite's cache
            assert session.record.data == EVERY_TYPE
            assert type(session.record.data["big"]) is int
            assert type(session.record.data["when"]) is date
        assert (await store.load(SID)).data == EVERY_TYPE
    async with opened_store(database_url) as reopened:  # cold: a restart
        async with reopened.session(SID) as session:
            assert session.record.data == EVERY_TYPE
            assert type(session.record.data["at"]) is datetime
            assert type(session.record.data["amount"]) is Decimal
        assert [r.data for r in await reopened.recent_calls()] == [EVERY_TYPE]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"when": {1, 2}}, "call.data['when'] is a set"),
        ({"scores": [1.5, float("nan")]}, "call.data['scores'][1] is nan (a non-finite float)"),
        ({"pair": (1, 2)}, "call.data['pair'] is a tuple"),
        ({"by_id": {7: "x"}}, "call.data['by_id'] is a dict with the key 7; keys must be str"),
        ({"cost": Decimal("Infinity")}, "call.data['cost'] is Decimal('Infinity') (not finite)"),
    ],
)
async def test_save_refuses_data_it_cannot_keep_and_names_the_key(database_url, data, problem):
    async with fresh_store(database_url) as store:
        await store_call(store, new_call(kept="yes"))
        with pytest.raises(CallDataError) as refused:
            await change_call(store, step=2, data=data)
        assert str(refused.value) == (
            f"flow contract, state menu: {problem}; call.data holds str, int, float, bool, "
            "None, list, dict, date, datetime, Decimal"
        )
        async with store.session(SID) as session:  # nothing leaked, nothing kept
            assert (session.record.step, session.record.data) == (0, {"kept": "yes"})


async def test_the_error_names_the_flows_file_class_and_state(database_url):
    async with fresh_store(database_url) as store:
        record = CallRecord(call_sid=SID, flow="support_line", flow_version="v", state="sales")
        record.data["when"] = {"a set"}
        with pytest.raises(
            CallDataError, match=r"flow support_line, state sales: call\.data\['when'\] is a set"
        ):
            async with store.session(SID) as session:
                session.save(record)


# -- cache never ahead of the database ------------------------------------------------------


async def test_after_a_save_that_failed_to_encode_the_call_goes_on_from_what_is_stored(
    database_url,
):
    async with fresh_store(database_url) as store:
        await store_call(store, new_call())
        with pytest.raises(TypeError):  # CallDataError; before: whatever the encoder raised
            await change_call(store, step=2, state="goodbye", data={"when": {"a set"}})
        assert await store.record_status(status(SID, "completed")) == ("contract", "menu")
        async with store.session(SID) as session:
            assert (session.record.step, session.record.state) == (0, "menu")
            assert session.record.status == "completed"
            assert session.record.data == {}


async def test_a_failed_commit_leaves_no_change_in_the_cache(tmp_path):
    """SQLite: the commit itself fails (a trigger stands in for a full disk)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    async with fresh_store(url) as store:
        await store_call(store, new_call())
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON ivrkit_calls "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        with pytest.raises(sqlite3.IntegrityError, match="refused by the test"):
            await take_step(store, SID, 1)
        async with store.engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER refuse"))
        async with store.session(SID) as session:
            assert (session.record.step, session.record.data) == (0, {})


async def test_a_webhook_cancelled_while_its_save_commits_holds_the_call_until_then(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    async with fresh_store(url) as store:
        await store_call(store, new_call())
        first = asyncio.create_task(take_step(store, SID, 1))
        while not store._writes:  # queued, not yet committed
            await asyncio.sleep(0)
        first.cancel()
        await take_step(store, SID, 2)  # waits for the cancelled one's commit
        with pytest.raises(asyncio.CancelledError):
            await first
        record = await store.load(SID)
        assert (record.step, record.data["seen"]) == (2, [1, 2])


# -- rows it cannot read, health ------------------------------------------------------------


async def test_a_stored_row_it_cannot_decode_is_refused_and_nothing_leaks(database_url):
    async with fresh_store(database_url) as store:
        await store_call(store, new_call())
        async with store.engine.begin() as conn:  # as an older version wrote it
            await conn.execute(update(calls).values(data='{"x": NaN}'))
    async with opened_store(database_url) as store:
        async with asyncio.timeout(10):  # a leaked turn would hang here: fail instead
            for _ in range(2):
                with pytest.raises(StoredRowError, match=f"call {SID}: stored column"):
                    async with store.session(SID):
                        pass
        async with store.engine.begin() as conn:
            await conn.execute(update(calls).values(data='{"x": 1}'))
        async with store.session(SID) as session:
            assert session.record.data == {"x": 1}


async def refuse_health_writes(store: Any, reason: str) -> None:
    """A trigger makes the database refuse the health row's write, as a full disk would."""
    async with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON ivrkit_health "
                    f"BEGIN SELECT RAISE(ABORT, '{reason}'); END"
                )
            )
            return
        await conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION ivrkit_test_refuse() RETURNS trigger "
                f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{reason}'; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE UPDATE ON ivrkit_health "
                "FOR EACH ROW EXECUTE FUNCTION ivrkit_test_refuse()"
            )
        )


async def test_check_writable_proves_a_write_and_names_why_it_cannot(database_url):
    async with fresh_store(database_url) as store:
        await store.check_writable()
        await refuse_health_writes(store, "database or disk is full")
        with pytest.raises(
            StoreUnwritableError, match="store cannot write: .*database or disk is full"
        ):
            await store.check_writable()


async def test_healthz_is_503_with_the_reason_when_the_store_cannot_write(serve, caplog):
    async with serve([SupportLine]) as (app, client):
        assert (await client.get("/healthz")).status_code == 200
        await refuse_health_writes(app.state.ivr.store, "database or disk is full")
        caplog.clear()
        health = await client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["database"] == "cannot write"
    assert "database or disk is full" in health.json()["reason"]
    assert [r.levelname for r in caplog.records if r.name == "ivrkit.app"] == ["ERROR"]
    assert all(r.exc_info is None for r in caplog.records)


async def test_check_writable_commits_on_both_backends(database_url):
    async with fresh_store(database_url) as store:
        await store.check_writable()
        await store.check_writable()
        async with store.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id FROM ivrkit_health"))).all()
        assert [tuple(r) for r in rows] == [(1,)]


# -- outbound calls: the placed call's row (promise 9) --------------------------------------


def placed_call(sid: str = SID, **data: Any) -> CallRecord:
    return CallRecord(
        call_sid=sid, flow="contract", flow_version="v1", state="menu", status="queued", data=data
    )


async def test_a_placed_calls_row_and_data_are_there_before_its_first_webhook(database_url):
    async with two_writers(database_url) as (placer, server):
        assert await placer.prepare_call(placed_call(when=date(2026, 12, 3), name="Ana"))
        async with server.session(SID) as session:  # the first webhook, in another process
            record = session.record
            assert (record.step, record.status) == (0, "queued")
            assert record.data == {"when": date(2026, 12, 3), "name": "Ana"}
            record.step, record.status = 1, "in-progress"
            session.save(record, event(record, "start"))
        assert [e.kind for e in await server.call_events(SID)] == ["placed", "start"]


async def test_a_first_webhook_that_came_first_keeps_its_data_and_gains_the_placed_data(
    database_url,
):
    async with two_writers(database_url) as (placer, server):
        started = new_call(confirmed=True)
        started.step = 1
        await store_call(server, started)  # the webhook won the race and started the flow
        assert not await placer.prepare_call(placed_call(name="Ana", confirmed=False))
        record = await server.load(SID)
        assert record.step == 1
        assert record.state == "menu"
        assert record.data == {"confirmed": True, "name": "Ana"}  # the flow's value wins


async def test_prepare_call_waits_for_a_webhook_holding_the_call(database_url):
    async with two_writers(database_url) as (placer, server):
        async with server.session(SID) as session:
            placing = asyncio.create_task(placer.prepare_call(placed_call(name="Ana")))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not placing.done()  # the call's lock is held: it waits its turn
            started = new_call()
            started.step = 1
            session.save(started, event(started, "start"))
        assert await placing is False
        assert (await server.load(SID)).data == {"name": "Ana"}


async def test_prepare_call_refuses_a_started_record_and_data_it_cannot_keep(database_url):
    async with fresh_store(database_url) as store:
        started = placed_call()
        started.step = 2
        with pytest.raises(ValueError, match="step must be 0"):
            await store.prepare_call(started)
        with pytest.raises(CallDataError, match="is a set"):
            await store.prepare_call(placed_call(tags={"a"}))
        assert await store.load(SID) is None  # nothing half-written
        assert await store.prepare_call(placed_call(name="Ana"))  # and the call goes on
