"""The ``phone`` fixture (pytest11 plugin), driving in-process ASGI apps step by step."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from sim_apps import TOKEN, TwimlApp, demo_ivr, twiml

from simulator import CallEnded, Phone, WrongInput
from simulator.pytest_plugin import close_phone

MENU = twiml(
    '<Gather action="/menu?state=choice" numDigits="1">'
    "<Say>For sales press 1. For support press 2.</Say></Gather>"
    "<Say>We did not hear you.</Say><Redirect>/voice</Redirect>"
)


def menu_app() -> TwimlApp:
    def choice(seen):
        if seen.params.get("Digits") == "1":
            return twiml(
                '<Say>Connecting you to sales.</Say><Dial action="/menu?state=after">'
                "+15550111</Dial>"
            )
        if seen.params.get("Digits") == "2":
            return twiml('<Say>Leave a message.</Say><Record action="/menu?state=saved"/>')
        return twiml("<Say>Sorry.</Say><Redirect>/voice</Redirect>")

    def menu(seen):
        state = seen.query.get("state")
        if state == "choice":
            return choice(seen)
        if state == "after":
            return twiml(f"<Say>Call status {seen.params['DialCallStatus']}.</Say>")
        return twiml("<Say>Message saved. Goodbye.</Say><Hangup/>")

    return TwimlApp({"/voice": MENU, "/menu": menu})


@pytest.fixture(autouse=True)
def _signed(phone):
    phone.auth_token = TOKEN


def test_phone_fixture_is_a_phone(phone):
    assert isinstance(phone, Phone)


async def test_step_by_step_call(phone):
    app = menu_app()
    call = await phone.call("/voice", app=app).start()
    assert call.waiting_for == "gather"
    assert call.prompt.num_digits == 1
    call.assert_heard("For sales press 1")
    await call.press("1")
    assert call.waiting_for == "dial"
    await call.dial("busy")
    assert call.ended
    assert call.status == "completed"
    call.assert_heard("Call status busy.")
    assert [r.url.split("testserver")[1] for r in call.requests] == [
        "/voice",
        "/menu?state=choice",
        "/menu?state=after",
    ]
    assert call.states == ["choice", "after"]
    assert not app.bad_signatures


async def test_timeout_then_record(phone):
    call = await phone.call("/voice", app=menu_app()).start()
    await call.timeout()
    call.assert_heard("We did not hear you.")
    assert call.waiting_for == "gather"  # redirected back to the menu
    await call.press("2")
    await call.record(12, key="#")
    assert call.ended
    assert call.said[-1] == "Message saved. Goodbye."
    assert call.result.reason == "hangup"


async def test_assert_heard_failure_shows_transcript(phone):
    call = await phone.call("/voice", app=menu_app()).start()
    with pytest.raises(AssertionError, match=r"(?s)expected to hear 'Goodbye'.*For sales press 1"):
        call.assert_heard("Goodbye")
    await call.hangup()
    assert call.ended
    assert call.result.reason == "caller-hangup"


async def test_wrong_input_and_after_end_errors_name_the_fix(phone):
    call = await phone.call("/voice", app=menu_app()).start()
    with pytest.raises(WrongInput, match=r"waiting at a Gather, not a Dial; answer it with press"):
        await call.dial("busy")
    await call.hangup()
    with pytest.raises(CallEnded, match="already ended"):
        await call.press("1")


async def test_unfinished_call_is_closed_by_async_with(phone):
    async with phone.call("/voice", app=menu_app()) as call:
        assert call.waiting_for == "gather"
    assert call.waiting_for is None  # hung up by closing, never reached an end
    assert not call.ended


async def test_custom_params_reach_the_app(phone):
    app = TwimlApp({"/voice": twiml("<Say>Hi</Say>")}, token=None)
    placed = phone.call("/voice", app=app, from_="+15551234567", extra={"FromCity": "X"})
    call = await placed.start()
    assert call.ended
    assert app.seen[0].params["From"] == "+15551234567"
    assert app.seen[0].params["FromCity"] == "X"


def test_sync_call(phone):
    phone.app = menu_app()
    call = phone.sync("/voice")
    call.press("1")
    call.dial("completed", duration=40)
    assert call.ended
    call.assert_heard("Call status completed.")


async def test_phone_run_whole_script(phone):
    from simulator import Press

    result = await phone.run("/voice", app=menu_app(), steps=[Press("9"), Press("1")])
    assert "Sorry." in result.heard
    assert result.reason == "caller-hangup"  # no Dial outcome scripted


def test_calls_left_waiting_over_http_are_closed_by_the_fixtures_teardown(serve):
    """A test may end while its calls wait at a Gather: the teardown hangs them up and closes
    their HTTP clients, so no socket is left for the garbage collector to find."""
    server = serve(demo_ivr())
    phone = Phone(auth_token=TOKEN)
    loop = asyncio.new_event_loop()
    try:
        waiting = loop.run_until_complete(phone.call(f"{server.url}/voice").start())
        sync_waiting = phone.sync(f"{server.url}/voice")
        assert waiting.waiting_for == sync_waiting.waiting_for == "gather"
        close_phone(phone)  # what the phone fixture runs after a test
        assert waiting._transport.client.is_closed
        assert sync_waiting._call._transport.client.is_closed
        assert waiting.waiting_for is None
        assert not waiting.ended
    finally:
        loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_reuse_a_client_with_base_url(phone):
    import httpx

    app = menu_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://ivr.example.com") as client:
        call = await phone.call("/voice", client=client).start()
        await call.press("1")
        await call.dial("completed")
        assert not client.is_closed  # a borrowed client is left open for its owner
    assert call.ended
    assert call.requests[0].url == "https://ivr.example.com/voice"
    assert not app.bad_signatures  # signed for the https URL without a port
