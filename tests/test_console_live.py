"""The live call list's server-sent events, over real HTTP (uvicorn in this event loop)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from flows.support_line import SupportLine
from ivrkit import Settings, create_app
from tests.conftest import OPEN_HOURS
from tests.driver import TOKEN, PhoneCall
from tests.test_console import CONSOLE_TOKEN, csrf_of


@asynccontextmanager
async def served(tmp_path: Any) -> AsyncIterator[tuple[Any, str]]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
                        auth_token=TOKEN, console_token=CONSOLE_TOKEN)
    app = create_app([SupportLine], settings=settings, clock=lambda: OPEN_HOURS)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@asynccontextmanager
async def signed_in_client(base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        page = await client.get("/console/login")
        answer = await client.post("/console/login",
                                   data={"csrf": csrf_of(page.text), "secret": CONSOLE_TOKEN})
        assert answer.status_code == 303
        yield client


async def test_live_stream_sends_calls_as_they_change_and_lets_go_on_disconnect(tmp_path):
    async with served(tmp_path) as (app, base):
        console = app.state.console
        async with signed_in_client(base) as client:
            async with client.stream("GET", "/console/calls/live") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                assert stream.headers["x-content-type-options"] == "nosniff"
                assert console.streams == 1
                call = PhoneCall(client=client, flow="support_line",
                                 from_number="+14155550123")
                call_twilio = httpx.AsyncClient(base_url=base)
                async with call_twilio:
                    call.client = call_twilio
                    # the driver signs for http://testserver; sign for the real URL instead
                    await _start(call, base)
                seen = None
                lines = stream.aiter_lines()
                async with asyncio.timeout(15):
                    async for line in lines:
                        if line.startswith("data: ") and call.sid in line:
                            seen = json.loads(line[6:])
                            break
                assert seen is not None
                assert seen["flow"] == "support_line"
                assert seen["caller"] == "+1415*****23"
                assert "4155550123" not in json.dumps(seen)
            # the browser went away: the stream ends and holds nothing
            async with asyncio.timeout(10):
                while console.streams:
                    await asyncio.sleep(0.05)
            assert (await client.get("/console/api/calls")).status_code == 200


async def test_live_stream_refuses_a_signed_out_visitor_and_bad_filters(tmp_path):
    async with served(tmp_path) as (app, base):
        async with httpx.AsyncClient(base_url=base) as anonymous:
            assert (await anonymous.get("/console/calls/live")).status_code == 401
        async with signed_in_client(base) as client:
            answer = await client.get("/console/calls/live", params={"digits": "12345"})
            assert answer.status_code == 400
        assert app.state.console.streams == 0


async def test_live_stream_reports_store_trouble_and_carries_on(tmp_path, monkeypatch):
    from ivrkit.console import routes

    failures = 0

    async def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        failures += 1
        raise OSError("database went away")

    async with served(tmp_path) as (app, base):
        console = app.state.console
        monkeypatch.setattr(routes, "find_calls", failing)
        stream = console._stream(routes.CallFilter(), poll=0.01)
        chunks = [await anext(stream) for _ in range(3)]
        assert "event: trouble" in chunks[1]
        assert "event: trouble" in chunks[2]  # it keeps polling, it does not die
        assert failures == 2
        assert console.streams == 1
        await stream.aclose()  # what Starlette does when the browser goes away
        assert console.streams == 0
        monkeypatch.undo()
        async with signed_in_client(base) as client:
            assert (await client.get("/console/api/calls")).status_code == 200


async def _start(call: PhoneCall, base: str) -> None:
    from tests.driver import signed_headers

    url = f"{base}/voice/support_line"
    params = call.params()
    answer = await call.client.post(url, data=params, headers=signed_headers(url, params))
    assert answer.status_code == 200, answer.text


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets.*")
