"""Every webhook is answered within its deadline, whatever the store is waiting for.

A lock held outside ivrkit (a tool's transaction, a stuck session) makes the store wait;
the call's webhook then gets the flow's apology and fallback, a status callback a 503,
each with one log line, and the call carries on normally once the lock is gone.
The tests tell the deadline's answer from a storage failure by its log line, never by a
measured time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from flows.support_line import SupportLine
from ivrkit import Settings, twiml
from ivrkit.errors import ConfigError
from ivrkit.store.postgres import CALL_LOCK_SPACE
from tests.conftest import PG_ENV, phone
from tests.driver import BASE, signed_headers
from tests.test_call_lock import settled_call_locks

DEADLINE = 0.5
APOLOGY = twiml.apology(SupportLine.apology, SupportLine.fallback_number)
MISSED = "deadline (IVRKIT_WEBHOOK_DEADLINE)"


def missed_deadlines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if MISSED in r.getMessage()]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_write_lock_held_elsewhere_gets_the_apology_in_time(
    serve, database_url, caplog
):
    async with serve([SupportLine], webhook_deadline=DEADLINE) as (app, client):
        call = phone(client, "support_line")
        menu = await call.start()
        other = sqlite3.connect(make_url(database_url).database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the file's write lock, held by someone else
        try:
            with caplog.at_level(logging.ERROR, "ivrkit.app"):
                late = await call.press("1")
                newcomer = phone(client, "support_line")
                late_start = await newcomer.start()
                late_status = await call.status("in-progress", 0)
                recording_url = f"{BASE}/voice/support_line/recording?state=voicemail"
                fields = call.params(RecordingSid="RE" + "3" * 32, RecordingDuration="4")
                late_recording = await client.post(
                    recording_url, data=fields, headers=signed_headers(recording_url, fields)
                )
        finally:
            other.execute("COMMIT")
            other.close()
        assert (late.status, late.body) == (200, APOLOGY)
        assert (late_start.status, late_start.body) == (200, APOLOGY)
        assert (late_status.status, late_status.body) == (503, "storage unavailable\n")
        assert late_recording.status_code == 503
        assert len(missed_deadlines(caplog)) == 4
        assert not any(r.exc_info for r in caplog.records)

        # The lock is gone: the call's next webhook is answered by the flow (the sales
        # Dial, replayed if the late save landed after all), and so is a new call.
        call.last = menu
        again = await call.press("1")
        assert again.find("Dial/Number").text == "+15005550111"
        assert (await newcomer.start()).said()[0] == "Thanks for calling Acme."


def _pg_dsn() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL run skipped: set {PG_ENV}")
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_call_lock_held_elsewhere_gets_the_apology_in_time(
    serve, database_url, caplog
):
    dsn = _pg_dsn()
    async with serve([SupportLine], webhook_deadline=DEADLINE) as (app, client):
        call, unrelated = phone(client, "support_line"), phone(client, "support_line")
        menu = await call.start()
        await unrelated.start()
        outside = await asyncpg.connect(dsn)
        try:
            await outside.execute(
                f"SELECT pg_advisory_lock({CALL_LOCK_SPACE}, hashtext($1))", call.sid
            )
            status_url = f"{BASE}/voice/support_line/status"
            status_params = call.params(CallStatus="in-progress")
            with caplog.at_level(logging.ERROR, "ivrkit.app"):
                late, other, status = await asyncio.gather(
                    call.press("1"),
                    unrelated.press("1"),
                    client.post(
                        status_url,
                        data=status_params,
                        headers=signed_headers(status_url, status_params),
                    ),
                )
        finally:
            await outside.close()  # gives the lock back
        assert (late.status, late.body) == (200, APOLOGY)
        assert other.find("Dial/Number").text == "+15005550111"  # answered meanwhile
        assert (status.status_code, status.text) == (503, "storage unavailable\n")
        assert len(missed_deadlines(caplog)) == 2
        assert not any(r.exc_info for r in caplog.records)

        assert await settled_call_locks() == 0
        call.last = menu
        again = await call.press("1")
        assert again.find("Dial/Number").text == "+15005550111"
        assert (await app.state.ivr.store.load(call.sid)).state == "sales"
        # The status callback's connection, cancelled mid-statement, serves again.
        for _ in range(3):
            assert (await call.status("in-progress", 0)).status == 204
        assert (await call.status("completed", 30)).status == 204
        assert (await app.state.ivr.store.load(call.sid)).duration == 30
        assert await settled_call_locks() == 0


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_row_locked_elsewhere_gets_the_apology_in_time(serve, database_url, caplog):
    """An outside ``SELECT ... FOR UPDATE`` on one call's row."""
    dsn = _pg_dsn()
    async with serve([SupportLine], webhook_deadline=DEADLINE) as (app, client):
        call, unrelated = phone(client, "support_line"), phone(client, "support_line")
        menu = await call.start()
        await unrelated.start()
        outside = await asyncpg.connect(dsn)
        transaction = outside.transaction()
        await transaction.start()
        try:
            await outside.execute(
                "SELECT * FROM ivrkit_calls WHERE call_sid = $1 FOR UPDATE", call.sid
            )
            with caplog.at_level(logging.ERROR, "ivrkit.app"):
                late = await call.press("1")
                other = await unrelated.press("1")
        finally:
            await transaction.rollback()
            await outside.close()
        assert (late.status, late.body) == (200, APOLOGY)
        assert other.find("Dial/Number").text == "+15005550111"  # unaffected
        assert missed_deadlines(caplog)

        assert await settled_call_locks() == 0
        call.last = menu
        again = await call.press("1")
        assert again.find("Dial/Number").text == "+15005550111"
        assert await settled_call_locks() == 0


def test_deadline_and_header_limit_settings_from_the_environment():
    assert Settings.from_env({}).webhook_deadline == 5.0
    assert Settings.from_env({"IVRKIT_WEBHOOK_DEADLINE": "2.5"}).webhook_deadline == 2.5
    for bad in ("0", "15", "soon", "nan", "inf"):
        with pytest.raises(ConfigError, match="IVRKIT_WEBHOOK_DEADLINE must be"):
            Settings.from_env({"IVRKIT_WEBHOOK_DEADLINE": bad})
    assert Settings.from_env({}).max_header_bytes == 16 * 1024
    assert Settings.from_env({"IVRKIT_MAX_HEADER_BYTES": "8192"}).max_header_bytes == 8192
