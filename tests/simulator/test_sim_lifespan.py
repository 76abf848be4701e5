"""The ``phone`` fixture serves an in-process app as a server would: lifespan, then requests."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flows.support_line import SupportLine
from ivrkit import Settings, create_app
from simulator import Phone
from simulator.asgi import LifespanError

pytest_plugins = ["pytester"]

TOKEN = "lifespan-token-0123456789abcdef"

# A plain ASGI app (no framework) that writes what happened to it into events.txt.
INNER_APP = '''
from pathlib import Path

LOG = Path("events.txt")


def note(text):
    with LOG.open("a") as log:
        log.write(text + "\\n")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].split(".")[1]
            note(kind)
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await receive()
    note("request " + scope["path"])
    body = b"<Response><Say>Hello.</Say></Response>"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/xml")]})
    await send({"type": "http.response.body", "body": body})


async def no_lifespan(scope, receive, send):
    assert scope["type"] == "http", "this app knows nothing of lifespans"
    await app(scope, receive, send)
'''

INNER_TESTS = '''
from inner_app import app, no_lifespan, note


async def test_async(phone):
    note("test async")
    for _ in range(2):
        call = await phone.call("/voice", app=app).start()
        assert call.said == ["Hello."]


def test_sync(phone):
    note("test sync")
    for _ in range(2):
        assert phone.sync("/voice", app=app).said == ["Hello."]


async def test_app_without_lifespan(phone):
    note("test without")
    call = await phone.call("/voice", app=no_lifespan).start()
    assert call.said == ["Hello."]
'''


def test_lifespan_starts_before_the_first_call_and_stops_after_the_test(pytester):
    pytester.makepyfile(inner_app=INNER_APP, test_inner=INNER_TESTS)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)
    events = (pytester.path / "events.txt").read_text().splitlines()
    once = ["startup", "request /voice", "request /voice", "shutdown"]
    assert events == [
        "test async", *once,
        "test sync", *once,
        "test without", "request /voice",
    ]


def ivrkit_app(tmp_path, **settings):
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    return create_app(
        [SupportLine], settings=Settings(database_url=database_url, auth_token=TOKEN, **settings)
    )


async def test_an_app_from_create_app_answers_without_any_set_up(phone, tmp_path):
    """Before: the store never opened and every call heard the apology."""
    phone.auth_token = TOKEN
    call = await phone.call("/voice/support_line", app=ivrkit_app(tmp_path)).start()
    call.assert_not_heard("trouble")
    call.assert_heard("Thanks for calling Acme.")
    await call.press("3")
    await call.record(5, key="#")
    call.assert_heard("Thank you, we will call you back.")
    assert call.states == ["main_menu", "voicemail"]


async def test_phone_and_the_callers_own_lifespan_share_one_store(tmp_path):
    """Scaffolded tests run the lifespan themselves and pass app= too: both must work."""
    app = ivrkit_app(tmp_path)
    async with app.router.lifespan_context(app):
        phone = Phone(auth_token=TOKEN)
        call = await phone.call("/voice/support_line", app=app).start()
        call.assert_heard("Thanks for calling Acme.")
        await phone.aclose()  # the phone's lifespan ends; the caller's still holds the store
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            health = await client.get("/healthz")
        assert health.json()["database"] == "ok"


async def test_a_failed_start_up_is_reported_and_leaves_nothing_running():
    async def broken(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database at db.internal"})

    phone = Phone()
    before = asyncio.all_tasks()
    with pytest.raises(LifespanError, match=r"start-up failed: no database at db.internal"):
        await phone.call("/voice", app=broken).start()
    await phone.aclose()
    assert asyncio.all_tasks() == before


async def test_a_failed_shut_down_is_reported():
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.failed", "message": "disk full"})
            return
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/xml")]})
        await send({"type": "http.response.body", "body": b"<Response/>"})

    phone = Phone()
    await phone.call("/voice", app=app).start()
    before = asyncio.all_tasks()
    with pytest.raises(LifespanError, match="shut-down failed: disk full"):
        await phone.aclose()
    assert asyncio.all_tasks() <= before


async def test_a_start_up_cancelled_midway_leaves_nothing_running():
    """A test cancelled (or timed out) while the app starts: the lifespan task is ended."""
    starting = asyncio.Event()

    async def slow(scope, receive, send):
        await receive()
        starting.set()
        await asyncio.Event().wait()  # never completes its start-up

    phone = Phone()
    before = asyncio.all_tasks()
    placing = asyncio.ensure_future(phone.call("/voice", app=slow).start())
    await starting.wait()
    placing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await placing
    await phone.aclose()
    assert asyncio.all_tasks() == before


async def test_a_starlette_apps_lifespan_state_reaches_its_requests(phone):
    """Lifespan state (Starlette's ``yield {...}``) is copied into each request, as uvicorn does."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    @asynccontextmanager
    async def lifespan(app):
        yield {"greeting": "Hello from the lifespan."}

    async def voice(request):
        twiml = f"<Response><Say>{request.state.greeting}</Say></Response>"
        return Response(twiml, media_type="text/xml")

    app = Starlette(routes=[Route("/voice", voice, methods=["POST"])], lifespan=lifespan)
    call = await phone.call("/voice", app=app).start()
    assert call.said == ["Hello from the lifespan."]
