"""One call, one webhook at a time: across app processes, for first webhooks and callbacks.

The PostgreSQL cases run two apps (two stores, two connection pools: two processes, as
far as the database can tell) on one database.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from ivrkit import Call, Flow, Hangup, Menu, Retries, Settings, create_app, decision
from ivrkit.records import CallEvent, CallRecord
from ivrkit.store import calls, create_store
from ivrkit.store.postgres import CALL_LOCK_SPACE, LockingStore
from tests.conftest import OPEN_HOURS, PG_ENV, phone, reset_database
from tests.driver import BASE, TOKEN

needs_postgres = pytest.mark.skipif(
    not os.environ.get(PG_ENV),
    reason=f"PostgreSQL run skipped: set {PG_ENV} (CI sets it when 127.0.0.1:5432 answers)",
)


class Watched(Flow):
    """Its decisions note how many run at once, per call; a test may hold one at a gate.

    Without a gate a decision takes 0.1 s, so that two webhooks of a call would overlap if
    the lock let them (nothing asserts a time); with a gate it waits for the test.
    """

    initial = "lookup"
    welcome = Menu("Press 1.", choices={"1": "check"}, retries=Retries(give_up="bye"))
    done = Menu("Checked. Press 1 to hear it again.", choices={"1": "done"},
                retries=Retries(give_up="bye"))
    bye = Hangup()

    runs: Counter[str] = Counter()
    running: Counter[str] = Counter()
    most_at_once: Counter[str] = Counter()
    inside: dict[str, asyncio.Event] = {}
    gates: dict[str, asyncio.Event] = {}

    @classmethod
    def hold(cls, key: str) -> tuple[asyncio.Event, asyncio.Event]:
        """(set once the decision ``key`` runs, set it to let the decision go on)."""
        cls.gates[key] = asyncio.Event()
        return cls.inside.setdefault(key, asyncio.Event()), cls.gates[key]

    @classmethod
    async def _watch(cls, key: str) -> None:
        cls.runs[key] += 1
        cls.running[key] += 1
        cls.most_at_once[key] = max(cls.most_at_once[key], cls.running[key])
        cls.inside.setdefault(key, asyncio.Event()).set()
        try:
            gate = cls.gates.get(key)
            await (gate.wait() if gate is not None else asyncio.sleep(0.1))
        finally:
            cls.running[key] -= 1

    @decision("lookup", targets=["welcome"])
    async def lookup(self, call: Call) -> str:
        await self._watch(f"{call.sid}:lookup")
        return "welcome"

    @decision("check", targets=["done"])
    async def check(self, call: Call) -> str:
        await self._watch(f"{call.sid}:check")
        return "done"


@asynccontextmanager
async def app_on(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """One more app process on the same database."""
    settings = Settings(database_url=database_url, auth_token=TOKEN)
    app = create_app([Watched], settings=settings, clock=lambda: OPEN_HOURS)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client


async def test_a_retried_first_webhook_racing_the_original_runs_the_flow_once(serve):
    """Before the call lock, PostgreSQL ran the start state's code once per request."""
    async with serve([Watched]) as (app, client):
        call = phone(client, "watched")
        first, retry = await asyncio.gather(call.start(), call.start())
        assert first.body == retry.body
        assert first.said() == ["Press 1."]
        assert Watched.runs[f"{call.sid}:lookup"] == 1
        kinds = sorted(e.kind for e in await app.state.ivr.store.call_events(call.sid))
        assert kinds == ["replay", "start"]


@needs_postgres
async def test_two_app_processes_never_handle_one_call_at_once():
    url = os.environ[PG_ENV]
    await reset_database(url)
    async with app_on(url) as one, app_on(url) as other:
        call = phone(one, "watched")
        retry = phone(other, "watched", sid=call.sid)
        started = await asyncio.gather(call.start(), retry.start())
        assert started[0].body == started[1].body
        retry.last = call.last
        pressed = await asyncio.gather(call.press("1"), retry.press("1"))
        assert pressed[0].body == pressed[1].body
        assert pressed[0].said() == ["Checked. Press 1 to hear it again."]
    for step in ("lookup", "check"):
        assert Watched.runs[f"{call.sid}:{step}"] == 1
        assert Watched.most_at_once[f"{call.sid}:{step}"] == 1
    store = create_store(url)
    await store.open()
    try:
        kinds = sorted(e.kind for e in await store.call_events(call.sid))
        record = await store.load(call.sid)
    finally:
        await store.close()
    assert kinds == ["action", "replay", "replay", "start"]
    assert (record.state, record.step) == ("done", 2)


async def until_waiting_for_call(store: Any, sid: str) -> None:
    """Until another writer of call ``sid`` waits for the webhook holding it."""
    async with asyncio.timeout(10):
        while True:
            if isinstance(store, LockingStore):
                async with store.engine.connect() as conn:
                    waiting = await conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        f"AND classid = {CALL_LOCK_SPACE} AND objid::int4 = hashtext($1) "
                        "AND NOT granted",
                        (sid,),
                    )
                    if waiting.scalar_one():
                        return
            elif store._turns._busy.get(sid):
                return
            await asyncio.sleep(0.005)


async def test_a_status_callback_during_a_webhook_is_applied_after_it(serve):
    """The webhook's save must not overwrite the final status that arrived meanwhile."""
    async with serve([Watched]) as (app, client):
        call = phone(client, "watched")
        await call.start()
        inside, gate = Watched.hold(f"{call.sid}:check")
        pressing = asyncio.create_task(call.press("1"))
        await asyncio.wait_for(inside.wait(), 10)  # the webhook is in the flow's decision
        ending = asyncio.create_task(call.status("completed", duration=42))
        await until_waiting_for_call(app.state.ivr.store, call.sid)
        gate.set()
        ended, answer = await ending, await pressing
        assert ended.status == 204
        assert answer.said() == ["Checked. Press 1 to hear it again."]
        record = await app.state.ivr.store.load(call.sid)
        assert (record.state, record.status, record.duration) == ("done", "completed", 42)
        assert record.ended_at is not None
        kinds = [e.kind for e in await app.state.ivr.store.call_events(call.sid)]
        assert kinds == ["start", "action", "status"]


async def held_call_locks(store: Any) -> int:
    """Call locks granted in this test's database (pg_locks lists every database's)."""
    async with store.engine.connect() as conn:
        held = await conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks "
            f"WHERE locktype = 'advisory' AND classid = {CALL_LOCK_SPACE} AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return int(held.scalar_one())


async def wait_for_no_call_locks(store: Any, seconds: float = 5) -> int:
    """A closed connection's backend frees its locks as it exits, a moment later."""
    for _ in range(int(seconds / 0.05)):
        if await held_call_locks(store) == 0:
            return 0
        await asyncio.sleep(0.05)
    return await held_call_locks(store)


def started_call(sid: str) -> tuple[CallRecord, CallEvent]:
    record = CallRecord(call_sid=sid, flow="f", flow_version="v1", state="menu", step=1)
    return record, CallEvent(call_sid=sid, step=1, kind="start", state="menu")


@needs_postgres
async def test_every_way_out_of_a_session_gives_the_call_lock_back():
    url = os.environ[PG_ENV]
    await reset_database(url)
    store = create_store(url, pool_size=1)  # one connection: a leaked lock would show
    await store.open()
    sid = "CA" + "7" * 32
    try:
        async with store.session(sid) as session:
            assert await held_call_locks(store) == 1
            session.save(*started_call(sid))
        assert await held_call_locks(store) == 0

        async with store.session(sid) as session:  # a replayed retry: one event, no change
            session.log(CallEvent(call_sid=sid, step=1, kind="replay", state="menu"))
        async with store.session(sid):  # nothing to write
            pass
        with pytest.raises(RuntimeError):
            async with store.session(sid):
                raise RuntimeError("the caller's code failed")
        async with store.session(sid) as session:  # several events: the general path
            record = session.record
            record.step = 2
            session.save(
                record,
                CallEvent(call_sid=sid, step=2, kind="action", state="menu"),
                CallEvent(call_sid=sid, step=2, kind="note", state="menu"),
            )
        assert await held_call_locks(store) == 0

        holding = asyncio.Event()

        async def hold_until_cancelled() -> None:
            async with store.session(sid):
                holding.set()
                await asyncio.Event().wait()  # until cancelled

        task = asyncio.create_task(hold_until_cancelled())
        await asyncio.wait_for(holding.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wait_for_no_call_locks(store) == 0
        async with asyncio.timeout(5), store.session(sid) as session:
            assert session.record is not None
            assert session.record.step == 2
        kinds = [e.kind for e in await store.call_events(sid)]
        assert kinds == ["start", "replay", "action", "note"]
    finally:
        await store.close()


@needs_postgres
async def test_a_call_stored_meanwhile_by_a_writer_without_the_lock_is_replayed():
    """An older release mid-deploy takes no call lock: its row wins, and is not overwritten."""
    url = os.environ[PG_ENV]
    await reset_database(url)
    theirs = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Old hello.</Say></Response>'
    async with app_on(url) as client:
        call = phone(client, "watched")
        other = create_store(url)
        await other.open()
        inside, gate = Watched.hold(f"{call.sid}:lookup")
        starting = asyncio.create_task(call.start())
        try:
            await asyncio.wait_for(inside.wait(), 10)  # the start state's decision runs
            async with other.engine.begin() as conn:
                now = datetime.now(UTC).replace(tzinfo=None)
                await conn.execute(
                    calls.insert().values(
                        call_sid=call.sid, flow="watched", flow_version="old", state="welcome",
                        step=1, status="ringing", caller="", data="{}", counters="{}",
                        stack="[]", last_twiml=theirs, created_at=now, updated_at=now,
                    )
                )
            gate.set()
            answer = await starting
            record = await other.load(call.sid)
            kinds = [e.kind for e in await other.call_events(call.sid)]
        finally:
            await other.close()
    assert answer.said() == ["Old hello."]
    assert (record.flow_version, record.last_twiml) == ("old", theirs)
    assert kinds == ["replay"]


def dsn() -> str:
    url = make_url(os.environ[PG_ENV]).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def app_call_locks() -> int:
    """Call locks granted to ivrkit's own connections in this database (not the test's)."""
    conn = await asyncpg.connect(dsn())
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                f"WHERE l.locktype = 'advisory' AND l.classid = {CALL_LOCK_SPACE} AND l.granted "
                "AND a.application_name LIKE 'ivrkit%' AND a.datname = current_database()"
            )
        )
    finally:
        await conn.close()


async def settled_call_locks() -> int:
    """The app's call locks once idle: a lock goes back a round trip after the session
    ends, and a terminated connection's backend frees its locks as it exits."""
    held = 0
    for _ in range(200):
        held = await app_call_locks()
        if held == 0:
            return 0
        await asyncio.sleep(0.02)
    return held
