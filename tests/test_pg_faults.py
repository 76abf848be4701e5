"""PostgreSQL when things go wrong after a claim: no lock or turn left behind, ever.

Every path out of a store session (a row the decoder refuses, a value the encoder refuses,
a cancellation at each await, a dying keeper task, a full queue, a bad CallSid, a row or a
call locked by another session) ends with no call lock held by the app's connections and
the call's next webhook answered. Status callbacks: recorded when they race a call's first
webhook, a final status sticks, a broken connection is tried again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from flows.support_line import SupportLine
from ivrkit import Settings, create_app, twiml
from ivrkit.records import CallEvent, CallRecord
from ivrkit.store import StatusUpdate
from ivrkit.store.keeper import KeeperLost, RowLocked, StoreBusy
from ivrkit.store.postgres import (
    CALL_LOCK_SPACE,
    CallHeldElsewhere,
    LockingStore,
    PostgresLimits,
)
from tests.conftest import OPEN_HOURS, PG_ENV, phone, reset_database
from tests.driver import TOKEN, signed_headers
from tests.test_call_lock import (
    Watched,
    app_call_locks,
    dsn,
    needs_postgres,
    settled_call_locks,
)

pytestmark = needs_postgres

APOLOGY = twiml.apology(SupportLine.apology, SupportLine.fallback_number)
QUICK = PostgresLimits(statement_timeout=2, lock_timeout=0.3, connect_timeout=1)


@asynccontextmanager
async def pg_store(limits: PostgresLimits = QUICK, **kwargs: Any) -> AsyncIterator[LockingStore]:
    url = os.environ[PG_ENV]
    await reset_database(url)
    store = LockingStore.from_url(url, limits=limits, **kwargs)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def started(sid: str, step: int = 1) -> tuple[CallRecord, CallEvent]:
    record = CallRecord(call_sid=sid, flow="f", flow_version="v1", state="menu", step=step)
    return record, CallEvent(call_sid=sid, step=step, kind="start", state="menu")


async def store_call(store: LockingStore, sid: str) -> None:
    async with store.session(sid) as session:
        session.save(*started(sid))


async def next_step(store: LockingStore, sid: str) -> int:
    """The call's next webhook: answered (never left hanging), its step moved on."""
    async with asyncio.timeout(10), store.session(sid) as session:
        record = session.record
        assert record is not None
        record.step += 1
        session.save(record, CallEvent(call_sid=sid, step=record.step, kind="action", state="x"))
        return record.step


def sid_of(n: int) -> str:
    return f"CA{n:032x}"


# --- defect 1: a lock and a turn leak when anything fails after a claim ---------------


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_row_the_decoder_refuses_gets_the_apology_and_leaks_nothing(serve, database_url):
    """``{"1": NaN}`` (the stdlib fallback wrote it; orjson cannot read it) used to leave
    the call's lock and turn held for good: its next webhook hung."""
    async with serve([SupportLine]) as (app, client):
        call = phone(client, "support_line")
        menu = await call.start()
        async with app.state.ivr.store.engine.begin() as conn:
            await conn.exec_driver_sql(
                "UPDATE ivrkit_calls SET data = '{\"1\": NaN}' WHERE call_sid = $1", (call.sid,)
            )
        async with asyncio.timeout(10):
            assert (await call.press("1")).body == APOLOGY
            assert await settled_call_locks() == 0
            call.last = menu
            assert (await call.press("1")).body == APOLOGY  # answered, not left hanging
            assert (await call.status("completed", 9)).status == 204
        record_status = await app.state.ivr.store.engine.connect()
        try:
            row = await record_status.exec_driver_sql(
                "SELECT status, duration FROM ivrkit_calls WHERE call_sid = $1", (call.sid,)
            )
            assert tuple(row.one()) == ("completed", 9)
        finally:
            await record_status.close()
        assert await settled_call_locks() == 0


async def test_a_value_the_encoder_refuses_gives_the_lock_back():
    async with pg_store() as store:
        sid = sid_of(1)
        await store_call(store, sid)

        async def save_unencodable() -> None:
            async with store.session(sid) as session:
                record = session.record
                record.data["handle"] = object()
                session.save(record)

        with pytest.raises(TypeError):
            await save_unencodable()
        assert await settled_call_locks() == 0
        assert await next_step(store, sid) == 2


class Instrumented:
    """Runs a hook whenever the store's keeper is handed a claim or a finish."""

    def __init__(self, store: LockingStore) -> None:
        self.keeper = store._keeper
        self.on_claim: Any = None
        self.on_finish: Any = None
        claim, finish = self.keeper.claim, self.keeper.finish

        def claimed(request: Any) -> None:
            claim(request)
            if self.on_claim:
                self.on_claim(request)

        def finished(request: Any) -> None:
            finish(request)
            if self.on_finish:
                self.on_finish(request)

        self.keeper.claim, self.keeper.finish = claimed, finished


CANCEL_POINTS = [
    "waiting for the turn",
    "claim queued",
    "claim answered, not yet resumed",
    "inside the session",
    "finish queued",
    "finish answered, not yet resumed",
]


@pytest.mark.parametrize("point", CANCEL_POINTS)
async def test_cancelled_at_any_await_gives_lock_and_turn_back(point):
    """The app cancels a session at its deadline: a CancelledError can arrive anywhere."""
    async with pg_store() as store:
        sid = sid_of(2)
        await store_call(store, sid)
        hooks = Instrumented(store)
        inside = asyncio.Event()
        task: asyncio.Task[None] | None = None

        def cancel_now(_: Any = None) -> None:
            assert task is not None
            task.cancel()

        def cancel_when_answered(request: Any) -> None:
            request.future.add_done_callback(cancel_now)

        async def webhook() -> None:
            async with store.session(sid) as session:
                inside.set()
                await asyncio.sleep(0)
                record = session.record
                record.step += 1
                session.save(record)

        holder_go = asyncio.Event()

        async def holder() -> None:  # an earlier webhook of the call in this process
            async with store.session(sid):
                await holder_go.wait()

        earlier = None
        if point == "waiting for the turn":
            earlier = asyncio.create_task(holder())
            async with asyncio.timeout(10):
                while sid not in store._turns._busy:
                    await asyncio.sleep(0)
        elif point == "claim queued":
            hooks.on_claim = cancel_now
        elif point == "claim answered, not yet resumed":
            hooks.on_claim = cancel_when_answered
        elif point == "finish queued":
            hooks.on_finish = cancel_now
        elif point == "finish answered, not yet resumed":
            hooks.on_finish = cancel_when_answered
        task = asyncio.create_task(webhook())
        if point == "waiting for the turn":
            async with asyncio.timeout(10):
                while not store._turns._busy[sid]:
                    await asyncio.sleep(0)
            task.cancel()
            holder_go.set()
            await earlier
        elif point == "inside the session":
            await asyncio.wait_for(inside.wait(), 10)
            task.cancel()
        try:
            await asyncio.wait_for(task, 10)
        except asyncio.CancelledError:
            pass
        hooks.on_claim = hooks.on_finish = None
        assert await settled_call_locks() == 0
        # Cancelled once saved, the change stays; cancelled before, nothing is written.
        saved = point == "finish answered, not yet resumed"
        assert await next_step(store, sid) == (3 if saved else 2)
        assert sid not in store._turns._busy  # no turn left behind either
        assert await settled_call_locks() == 0


# --- defect 2: one bad input never breaks the shared lock connection -------------------


async def test_a_nul_callsid_fails_only_its_own_session():
    """A NUL byte in a CallSid killed the keeper's connection, and every call it held."""
    async with pg_store() as store:
        good = [sid_of(10 + n) for n in range(4)]
        for sid in good[:2]:
            await store_call(store, sid)  # calls in progress, holding nothing now
        generation = store._keeper.generation
        bad = "CA" + "a" * 15 + "\x00" + "a" * 16

        async def webhook(sid: str) -> str:
            async with store.session(sid) as session:
                record = session.record or started(sid)[0]
                record.step += 1
                session.save(record)
            return sid

        # Started together: their claims go to the server in one batch.
        results = await asyncio.gather(
            *(webhook(sid) for sid in [*good[:2], bad, *good[2:]]), return_exceptions=True
        )
        assert isinstance(results[2], asyncpg.DataError)
        assert [r for r in results if isinstance(r, str)] == good
        assert store._keeper.generation == generation  # the connection was never reset
        assert [(await store.load(sid)).step for sid in good] == [2, 2, 2, 2]
        assert await settled_call_locks() == 0


# --- defect 3: deadlines; an outside lock stalls no other call -----------------------


async def test_the_store_connections_carry_the_timeouts():
    limits = PostgresLimits(statement_timeout=1.5, lock_timeout=0.25, connect_timeout=1)
    async with pg_store(limits) as store:
        keeper_conn, pool_conn = store._keeper._connection, await store._pool.acquire()
        try:
            for connection in (keeper_conn, pool_conn):
                assert await connection.fetchval("SHOW statement_timeout") == "1500ms"
                assert await connection.fetchval("SHOW lock_timeout") == "250ms"
        finally:
            store._pool.release(pool_conn)


def test_limits_from_the_environment_name_the_variable():
    limits = PostgresLimits.from_env({"IVRKIT_PG_LOCK_TIMEOUT": "0.5"})
    assert (limits.lock_timeout, limits.statement_timeout) == (0.5, 3.0)
    with pytest.raises(ValueError, match="IVRKIT_PG_STATEMENT_TIMEOUT must be a number"):
        PostgresLimits.from_env({"IVRKIT_PG_STATEMENT_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="IVRKIT_PG_CONNECT_TIMEOUT must be over 0"):
        PostgresLimits.from_env({"IVRKIT_PG_CONNECT_TIMEOUT": "60"})


@asynccontextmanager
async def row_locked_elsewhere(sid: str) -> AsyncIterator[None]:
    """Another session's open transaction holding ``SELECT ... FOR UPDATE`` on the row."""
    outside = await asyncpg.connect(dsn())
    transaction = outside.transaction()
    await transaction.start()
    try:
        await outside.execute("SELECT * FROM ivrkit_calls WHERE call_sid = $1 FOR UPDATE", sid)
        yield
    finally:
        await transaction.rollback()
        await outside.close()


@asynccontextmanager
async def call_locked_elsewhere(sid: str) -> AsyncIterator[None]:
    """Another session holding the call's advisory lock (an older release, a DBA)."""
    outside = await asyncpg.connect(dsn())
    try:
        await outside.execute(f"SELECT pg_advisory_lock({CALL_LOCK_SPACE}, hashtext($1))", sid)
        yield
    finally:
        await outside.close()


async def test_a_row_locked_elsewhere_stalls_no_other_call_and_fails_its_own_in_time():
    """Before, the UPDATE waited on the keeper's connection: every call of the process
    stalled behind it, indefinitely."""
    async with pg_store() as store:
        locked, other = sid_of(20), sid_of(21)
        await store_call(store, locked)
        await store_call(store, other)
        async with row_locked_elsewhere(locked):
            stuck = asyncio.create_task(next_step(store, locked))
            # Unrelated calls, old and new, are answered while the row stays locked.
            for _ in range(3):
                assert await asyncio.wait_for(next_step(store, other), 10) > 1
            await asyncio.wait_for(store_call(store, sid_of(22)), 10)
            assert not stuck.done()
            with pytest.raises(RowLocked, match="stayed locked by another session"):
                await asyncio.wait_for(stuck, 10)  # after lock_timeout, without waiting
            assert await settled_call_locks() == 0  # on the row's outside lock
        assert (await store.load(locked)).step == 1  # nothing of it was written
        assert [e.kind for e in await store.call_events(locked)] == ["start"]
        assert await next_step(store, locked) == 2


async def test_a_webhook_cancelled_at_its_deadline_on_a_locked_row_releases_everything():
    async with pg_store(PostgresLimits(lock_timeout=5)) as store:
        locked = sid_of(23)
        await store_call(store, locked)
        async with row_locked_elsewhere(locked):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):  # the app's deadline, shorter than the limit
                    await next_step(store, locked)
            assert await settled_call_locks() == 0
            assert locked not in store._turns._busy
        assert await next_step(store, locked) == 2


async def test_a_status_callback_waits_for_a_held_call_within_the_lock_timeout():
    async with pg_store() as store:
        sid = sid_of(24)
        await store_call(store, sid)
        async with call_locked_elsewhere(sid):
            with pytest.raises(asyncpg.LockNotAvailableError):
                await asyncio.wait_for(store.record_status(status_update(sid, "completed")), 10)
        assert await store.record_status(status_update(sid, "completed")) == ("f", "menu")


async def test_a_call_lock_held_elsewhere_fails_the_session_within_the_lock_timeout():
    """Before, a webhook asked for the lock again and again, for as long as it was held."""
    async with pg_store() as store:
        sid = sid_of(25)
        await store_call(store, sid)
        async with call_locked_elsewhere(sid):
            with pytest.raises(CallHeldElsewhere, match="stayed held elsewhere for 0.3 s"):
                await asyncio.wait_for(next_step(store, sid), 10)
            assert sid not in store._turns._busy
            await asyncio.wait_for(store_call(store, sid_of(26)), 10)  # others go on
        assert await next_step(store, sid) == 2
        assert await settled_call_locks() == 0


# --- supervision and back-pressure ----------------------------------------------------


async def test_a_dead_keeper_task_answers_every_waiter_and_is_restarted():
    async with pg_store() as store:
        keeper = store._keeper
        holding, waiting = sid_of(30), sid_of(31)
        await store_call(store, holding)
        inside, go = asyncio.Event(), asyncio.Event()

        async def held() -> None:
            async with store.session(holding) as session:
                inside.set()
                await go.wait()
                session.save(session.record)

        in_progress = asyncio.create_task(held())
        await asyncio.wait_for(inside.wait(), 10)
        queued = asyncio.create_task(store_call(store, waiting))
        async with asyncio.timeout(10):
            while not keeper._claims:
                await asyncio.sleep(0)
        keeper._task.cancel()  # the task dies with a claim queued and a call held
        with pytest.raises(KeeperLost):
            await asyncio.wait_for(queued, 10)
        go.set()
        with pytest.raises(KeeperLost):  # its lock went with the connection
            await asyncio.wait_for(in_progress, 10)
        assert keeper.restarts == 1
        assert await settled_call_locks() == 0
        assert await next_step(store, holding) == 2
        await store_call(store, waiting)
        assert await settled_call_locks() == 0


async def test_a_terminated_lock_connection_is_replaced_for_the_next_webhooks():
    async with pg_store() as store:
        sid = sid_of(32)
        await store_call(store, sid)
        conn = await asyncpg.connect(dsn())
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'ivrkit-call-locks' AND datname = current_database()"
            )
        finally:
            await conn.close()
        assert await next_step(store, sid) == 2
        assert await settled_call_locks() == 0


async def test_a_full_claim_queue_refuses_at_once():
    limits = PostgresLimits(lock_timeout=1, max_waiting=2)
    async with pg_store(limits) as store:
        sids = [sid_of(40 + n) for n in range(5)]
        # Started in one turn of the loop: five claims meet a queue of two.
        results = await asyncio.gather(
            *(store_call(store, sid) for sid in sids), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, StoreBusy)]
        assert len(refused) == 3
        assert "refusing more" in str(refused[0])
        for sid in sids:  # no turn was kept by a refused claim
            await asyncio.wait_for(store_call(store, sid), 10)
        assert await settled_call_locks() == 0


# --- defect 6: status callbacks lost or contradicted ----------------------------------


def status_update(sid: str, status: str, duration: int | None = None) -> StatusUpdate:
    final = status in ("completed", "busy", "failed", "no-answer", "canceled")
    return StatusUpdate(
        call_sid=sid,
        status=status,
        final=final,
        duration=duration,
        at=datetime.now(UTC).replace(tzinfo=None),
        params={"CallStatus": status},
    )


async def test_a_status_callback_during_the_first_webhook_is_recorded():
    """It was dropped: the row did not exist yet, so the update matched nothing."""
    async with pg_store(PostgresLimits(lock_timeout=5)) as store:
        sid = sid_of(50)
        inside, go = asyncio.Event(), asyncio.Event()

        async def first_webhook() -> None:
            async with store.session(sid) as session:
                assert session.record is None
                inside.set()
                await go.wait()
                session.save(*started(sid))

        starting = asyncio.create_task(first_webhook())
        await asyncio.wait_for(inside.wait(), 10)
        status = asyncio.create_task(store.record_status(status_update(sid, "completed", 7)))
        await until_status_waits(sid)
        go.set()
        await starting
        assert await asyncio.wait_for(status, 10) == ("f", "menu")
        record = await store.load(sid)
        assert (record.status, record.duration) == ("completed", 7)
        assert [e.kind for e in await store.call_events(sid)] == ["start", "status"]
        # A call nobody is handling: no row, answered at once.
        assert await store.record_status(status_update(sid_of(51), "completed")) is None


async def until_status_waits(sid: str) -> None:
    conn = await asyncpg.connect(dsn())
    try:
        async with asyncio.timeout(10):
            while not await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                f"AND classid = {CALL_LOCK_SPACE} AND objid::int4 = hashtext($1) AND NOT granted",
                sid,
            ):
                await asyncio.sleep(0.005)
    finally:
        await conn.close()


async def test_a_final_status_is_not_overwritten_by_a_later_non_final_one():
    async with pg_store() as store:
        sid = sid_of(52)
        await store_call(store, sid)
        await store.record_status(status_update(sid, "completed", 30))
        await store.record_status(status_update(sid, "in-progress"))
        record = await store.load(sid)
        assert (record.status, record.duration) == ("completed", 30)
        assert record.ended_at is not None
        # The contract: the first final status is the call's last word, as on SQLite.
        await store.record_status(status_update(sid, "canceled", 31))
        late = await store.load(sid)
        assert (late.status, late.duration, late.ended_at) == ("completed", 30, record.ended_at)


async def test_a_status_callback_on_a_broken_connection_is_tried_again():
    """During recovery one got ``InterfaceError: connection is closed`` and was lost."""
    async with pg_store(pool_size=2) as store:
        sid = sid_of(53)
        await store_call(store, sid)
        await store.record_status(status_update(sid, "ringing"))  # the pool has a connection
        conn = await asyncpg.connect(dsn())
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'ivrkit-webhooks' AND datname = current_database()"
            )
        finally:
            await conn.close()
        assert await store.record_status(status_update(sid, "completed", 5)) == ("f", "menu")
        assert (await store.load(sid)).status == "completed"


# --- a caller's webhook whose client goes away mid-answer -----------------------------


async def test_a_client_gone_mid_webhook_over_real_http_leaves_nothing_held():
    """uvicorn does not cancel the app when Twilio's connection drops: the webhook runs
    to its end; its lock and turn must go back all the same, and a retry is answered."""
    url = os.environ[PG_ENV]
    await reset_database(url)
    app = create_app(
        [Watched], settings=Settings(database_url=url, auth_token=TOKEN), clock=lambda: OPEN_HOURS
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        voice = f"http://127.0.0.1:{port}/voice/watched"
        sid = "CA" + "d" * 32
        params = {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": "+14155550100",
                  "To": "+15005550006", "CallStatus": "ringing", "Direction": "inbound"}
        inside, gate = Watched.hold(f"{sid}:lookup")
        async with httpx.AsyncClient() as client:
            hanging_up = asyncio.create_task(
                client.post(voice, data=params, headers=signed_headers(voice, params))
            )
            await asyncio.wait_for(inside.wait(), 10)
            hanging_up.cancel()  # closes the connection: the caller's side is gone
            with pytest.raises(asyncio.CancelledError):
                await hanging_up
        gate.set()
        async with httpx.AsyncClient() as client, asyncio.timeout(10):
            while (await app_call_locks()) or sid in app.state.ivr.store._turns._busy:
                await asyncio.sleep(0.01)  # the webhook finishes on its own
            retry = await client.post(voice, data=params, headers=signed_headers(voice, params))
        assert retry.status_code == 200
        assert "Press 1." in retry.text  # the answer the gone client never received
        assert await settled_call_locks() == 0
    finally:
        server.should_exit = True
        await serving
