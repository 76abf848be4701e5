"""A PostgreSQL outage during agent sessions (through a TCP proxy the test cuts): the
session still ends for the caller, in time, gives everything back, and leaves no lock."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import httpx
import pytest
from sqlalchemy.engine import make_url
from websockets.exceptions import ConnectionClosed

from ivrkit import Settings, create_app
from tests.conftest import OPEN_HOURS, PG_ENV
from tests.driver import TOKEN
from tests.relay_support import twilio_side, uvicorn_serving
from tests.test_call_lock import needs_postgres, settled_call_locks
from tests.test_pg_outage import proxy  # noqa: F401 (fixture)
from tests.test_relay_session import echo, lab_flow, new_call, released

pytestmark = needs_postgres


def through(proxy_port: int) -> Settings:
    url = make_url(os.environ[PG_ENV]).set(host="127.0.0.1", port=proxy_port)
    return Settings(
        database_url=url.render_as_string(hide_password=False),
        auth_token=TOKEN,
        webhook_deadline=1.0,
    )


async def test_store_lost_mid_session_still_ends_it_and_releases_it(proxy, caplog):  # noqa: F811
    app = create_app([lab_flow(echo)], settings=through(proxy.port), clock=lambda: OPEN_HOURS)
    async with uvicorn_serving(app) as base, httpx.AsyncClient(timeout=30) as client:
        call, url, _, _ = await new_call(client, base)
        caplog.set_level(logging.ERROR, logger="ivrkit")
        async with twilio_side(url, call.sid) as twilio:
            await twilio.say("hi")
            assert await twilio.utterance() == "You said hi."
            proxy.cut()
            await twilio.say("done")
            async with asyncio.timeout(10):  # the transcript write gives up in time
                handoff = json.loads(await twilio.until_end())
        assert handoff["handoff"] == "done"
        await released(app)
        assert any(
            "storage failed saving the agent transcript" in r.getMessage() for r in caplog.records
        )
        proxy.restore()
    assert await settled_call_locks() == 0


async def test_store_down_at_setup_closes_the_socket(proxy, caplog):  # noqa: F811
    app = create_app([lab_flow(echo)], settings=through(proxy.port), clock=lambda: OPEN_HOURS)
    async with uvicorn_serving(app) as base, httpx.AsyncClient(timeout=30) as client:
        call, url, _, _ = await new_call(client, base)
        caplog.set_level(logging.WARNING, logger="ivrkit")
        proxy.cut()
        async with twilio_side(url, call.sid) as twilio, asyncio.timeout(10):
            with pytest.raises(ConnectionClosed) as closed:
                await twilio.socket.recv()
        assert closed.value.rcvd.code == 1008
        await released(app)
        assert any("storage unavailable" in r.getMessage() for r in caplog.records)
        proxy.restore()
    assert await settled_call_locks() == 0
