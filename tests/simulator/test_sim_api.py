"""The simulated Calls API driven by twilio-python's real Client, in-process and over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sim_apps import LiveServer, Seen, TwimlApp, twiml
from twilio.base.exceptions import TwilioRestException

from simulator.api import SimulatedApi
from simulator.api_server import ApiServer
from simulator.callees import Callee, CalleeModel
from simulator.caller import Press
from simulator.pytest_plugin import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from simulator.twilio_client import twilio_client

TO = "+15550100001"
FROM = "+15550199999"
ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


def reminder_app(make_app: Callable[..., TwimlApp]) -> TwimlApp:
    """An outbound reminder: press 1 to confirm."""

    def voice(seen: Seen) -> str:
        return twiml(
            '<Gather action="/confirm" numDigits="1">'
            "<Say>Your appointment is tomorrow. Press 1 to confirm.</Say></Gather>"
            "<Say>Goodbye.</Say>"
        )

    def confirm(seen: Seen) -> str:
        return twiml(f"<Say>Confirmed with {seen.params.get('Digits')}.</Say>")

    return make_app({"/voice": voice, "/confirm": confirm, "/status": ""},
                    token=TEST_AUTH_TOKEN)


async def test_a_person_answers_and_confirms_in_process(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp]
) -> None:
    app = reminder_app(make_app)
    twilio_api.app = app
    twilio_api.callees = CalleeModel(numbers={TO: Callee(steps=(Press("1"),))})
    client = twilio_client(twilio_api)
    call = await asyncio.to_thread(
        client.calls.create, to=TO, from_=FROM, url="http://testserver/voice",
        status_callback="http://testserver/status", status_callback_event=ALL_EVENTS,
    )
    assert call.sid.startswith("CA")
    assert call.status == "queued"
    assert call._from == FROM
    assert call.direction == "outbound-api"
    ended = await twilio_api.wait(call.sid)
    assert ended.status == "completed"
    assert app.paths() == ["/status", "/status", "/status", "/voice", "/confirm", "/status"]
    voice = app.seen[3].params
    assert voice["Direction"] == "outbound-api"
    assert voice["CallStatus"] == "in-progress"
    assert voice["To"] == TO
    assert app.seen[4].params["Digits"] == "1"
    statuses = [(s.params["CallStatus"], s.params["SequenceNumber"])
                for s in app.seen if s.path == "/status"]
    assert statuses == [("initiated", "0"), ("ringing", "1"), ("in-progress", "2"),
                        ("completed", "3")]
    completed = app.seen[-1].params
    assert completed["CallbackSource"] == "call-progress-events"
    assert completed["CallDuration"] == str(ended.duration)
    assert completed["Timestamp"].endswith("GMT")
    fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
    assert fetched.status == "completed"
    assert fetched.duration == str(ended.duration)


def test_the_client_over_real_http(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp],
    serve: Callable[[Any], LiveServer],
) -> None:
    app = reminder_app(make_app)
    site = serve(app)
    twilio_api.callees = CalleeModel(numbers={TO: Callee(steps=(Press("1"),))})
    with ApiServer(twilio_api) as server:
        client = twilio_client(server.url, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        call = client.calls.create(to=TO, from_=FROM, url=f"{site.url}/voice",
                                   status_callback=f"{site.url}/status")
        server.wait_idle()
        assert client.calls(call.sid).fetch().status == "completed"
        with pytest.raises(TwilioRestException) as raised:
            twilio_client(server.url, TEST_ACCOUNT_SID, "wrong").calls.create(
                to=TO, from_=FROM, url=f"{site.url}/voice")
    assert raised.value.status == 401
    assert raised.value.code == 20003
    assert app.paths() == ["/voice", "/confirm", "/status"]
    assert app.seen[-1].params["CallStatus"] == "completed"
