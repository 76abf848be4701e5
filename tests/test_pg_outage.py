"""A PostgreSQL outage and its recovery, through a TCP proxy the test cuts and restores.

Without restarting the app: during the outage every call webhook gets the flow's apology
and fallback and every status callback a 503, each at once (the store's own connect and
statement limits; nothing waits for TCP timeouts); once restored, new calls and calls in
progress continue, nothing committed is lost, and no call lock is left behind.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import make_url

from flows.support_line import SupportLine
from ivrkit import Settings, create_app, twiml
from ivrkit.store import create_store, keeper
from ivrkit.store.postgres import LockingStore, PostgresLimits
from tests.conftest import OPEN_HOURS, PG_ENV, phone, reset_database
from tests.driver import BASE, TOKEN
from tests.pgproxy import PgProxy, running_proxy
from tests.test_call_lock import needs_postgres, settled_call_locks
from tests.test_pg_faults import next_step, status_update, store_call

pytestmark = needs_postgres

APOLOGY = twiml.apology(SupportLine.apology, SupportLine.fallback_number)
SALES = "+15005550111"


@pytest.fixture
async def proxy() -> AsyncIterator[PgProxy]:
    url = make_url(os.environ[PG_ENV])
    await reset_database(os.environ[PG_ENV])
    async with running_proxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


async def test_outage_and_recovery_without_restarting_the_app(proxy):
    direct = make_url(os.environ[PG_ENV])
    through_proxy = direct.set(host="127.0.0.1", port=proxy.port)
    settings = Settings(
        database_url=through_proxy.render_as_string(hide_password=False), auth_token=TOKEN
    )
    app = create_app([SupportLine], settings=settings, clock=lambda: OPEN_HOURS)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client,
    ):
        in_progress = [phone(client, "support_line") for _ in range(3)]
        menus = [await call.start() for call in in_progress]
        assert all(m.said()[0] == "Thanks for calling Acme." for m in menus)
        done = phone(client, "support_line")
        await done.start()
        assert (await done.press("1")).find("Dial/Number").text == SALES
        assert (await done.status("completed", 12)).status == 204
        # Status callbacks at once: the pool holds several connections when the cut comes.
        ringing = await asyncio.gather(*(c.status("in-progress", 0) for c in in_progress))
        assert [a.status for a in ringing] == [204] * 3

        for call, menu in zip(in_progress, menus, strict=True):
            call.last = menu  # a status callback's answer is no menu to press on

        proxy.cut()
        async with asyncio.timeout(20):  # a hang fails the test instead of stalling it
            during = await asyncio.gather(
                *(call.press("1") for call in in_progress[:2]),
                phone(client, "support_line").start(),
            )
            assert [a.body for a in during] == [APOLOGY] * 3
            status = await in_progress[2].status("in-progress", 0)
            assert status.status == 503

        proxy.restore()
        async with asyncio.timeout(20):
            # The first webhook after the outage may still find the lock connection's
            # reconnect back-off running (at most a couple of seconds): ask until answered.
            newcomer = phone(client, "support_line")
            while (await newcomer.start()).body == APOLOGY:
                await asyncio.sleep(0.05)
            # From then on the calls in progress continue where they were.
            for call, menu in zip(in_progress, menus, strict=True):
                call.last = menu
                assert (await call.press("1")).find("Dial/Number").text == SALES
            assert (await in_progress[2].status("completed", 30)).status == 204
            assert (await newcomer.press("2")).status == 200

    store = create_store(os.environ[PG_ENV])
    await store.open()
    try:
        ended = await store.load(done.sid)
        assert (ended.state, ended.status, ended.duration) == ("sales", "completed", 12)
        for call in in_progress:
            assert (await store.load(call.sid)).state == "sales"
        assert (await store.load(in_progress[2].sid)).status == "completed"
        assert (await store.load(newcomer.sid)).step == 2
    finally:
        await store.close()
    assert await settled_call_locks() == 0


async def test_a_network_that_drops_packets_fails_webhooks_in_time_then_recovers(proxy):
    """No answer and no reset: only the driver's own limits (connect, command) end the
    wait; before, the lock connection waited for the network for good."""
    url = make_url(os.environ[PG_ENV]).set(host="127.0.0.1", port=proxy.port)
    limits = PostgresLimits(statement_timeout=0.3, lock_timeout=0.3, connect_timeout=0.3)
    store = LockingStore.from_url(url.render_as_string(hide_password=False), limits=limits)
    await store.open()
    try:
        sid = "CA" + "e" * 32
        await store_call(store, sid)
        proxy.stall()
        async with asyncio.timeout(20) as guard:  # a hang fails the test, not the store
            with pytest.raises((TimeoutError, OSError)):
                await next_step(store, sid)
            with pytest.raises((TimeoutError, OSError)):
                await store.record_status(status_update(sid, "completed", 3))
        assert not guard.expired()
        proxy.resume()
        async with asyncio.timeout(20):
            while True:  # the lock connection's reconnect back-off may still run
                try:
                    step = await next_step(store, sid)
                except (TimeoutError, OSError):
                    await asyncio.sleep(0.05)
                else:
                    break
        assert step == 2
        assert await store.record_status(status_update(sid, "completed", 3)) == ("f", "menu")
    finally:
        await store.close()
    assert await settled_call_locks() == 0


async def test_reconnecting_backs_off_instead_of_hammering_a_server_that_is_down(
    proxy, monkeypatch
):
    """After a failed connect the next webhooks are refused at once for a while (recovery
    after the back-off is the outage test's); a long back-off here keeps this test from
    depending on how quickly the machine runs it."""
    monkeypatch.setattr(keeper, "RECONNECT_FIRST", 60.0)
    url = make_url(os.environ[PG_ENV]).set(host="127.0.0.1", port=proxy.port)
    limits = PostgresLimits(statement_timeout=1, lock_timeout=0.3, connect_timeout=0.5)
    store = LockingStore.from_url(url.render_as_string(hide_password=False), limits=limits)
    await store.open()
    try:
        proxy.cut()
        before = proxy.attempts
        with pytest.raises(OSError):  # noqa: PT011 (refused or reset: the OS says which)
            await store_call(store, "CA" + "b" * 32)
        tried = proxy.attempts - before
        assert tried >= 1
        with pytest.raises(ConnectionError, match="next attempt in"):
            await store_call(store, "CA" + "c" * 32)
        assert proxy.attempts - before == tried  # refused at once, without connecting
    finally:
        await store.close()
    assert await settled_call_locks() == 0
