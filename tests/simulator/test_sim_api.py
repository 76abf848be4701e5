"""The simulated Calls API driven by twilio-python's real Client, in-process and over HTTP."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sim_apps import LiveServer, Seen, TwimlApp, free_port, twiml
from starlette.responses import Response
from twilio.base.exceptions import TwilioRestException

from simulator.api import SimulatedApi
from simulator.api_server import ApiServer
from simulator.callees import Callee, CalleeModel, parse_callee, parse_ratios
from simulator.caller import HangUp, Press, QueueOutcome, Speak, Timeout
from simulator.cli import main
from simulator.pytest_plugin import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from simulator.scenario import ScenarioError, load_scenarios, run_scenarios
from simulator.twilio_client import twilio_client

pytest_plugins = ["pytester"]

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


# --- auth and validation ----------------------------------------------------------------------


def create_error(client: Any, **fields: Any) -> TwilioRestException:
    options = {"to": TO, "from_": FROM, "url": "http://testserver/voice", **fields}
    with pytest.raises(TwilioRestException) as raised:
        client.calls.create(**options)
    return raised.value


async def test_auth_failures_answer_401_20003(twilio_api: SimulatedApi) -> None:
    twilio_api.api_keys = {"SK" + "1" * 32: "key-secret"}
    wrong_token = twilio_client(twilio_api, TEST_ACCOUNT_SID, "not-the-token")
    other_account = twilio_client(twilio_api, "AC" + "9" * 32, TEST_AUTH_TOKEN)
    wrong_secret = twilio_client(twilio_api, api_key="SK" + "1" * 32, api_secret="nope")
    for client in (wrong_token, other_account, wrong_secret):
        error = create_error(client)
        assert (error.status, error.code) == (401, 20003)
    no_header = twilio_api.handle("POST", f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Calls.json",
                                  [("To", TO)], None)
    assert no_header == (401, {"code": 20003, "message": "Authentication Error - invalid username",
                               "more_info": "https://www.twilio.com/docs/errors/20003",
                               "status": 401})
    assert twilio_api.calls == {}
    with_key = twilio_client(twilio_api, api_key="SK" + "1" * 32, api_secret="key-secret")
    call = with_key.calls.create(to=TO, from_=FROM, url="http://127.0.0.1:9/voice")
    assert call.account_sid == TEST_ACCOUNT_SID


@pytest.mark.parametrize(
    ("fields", "status", "code", "words"),
    [
        ({"to": ""}, 400, 21201, "No 'To' number"),
        ({"to": "555-0100"}, 400, 21211, "Invalid 'To' Phone Number"),
        ({"from_": ""}, 400, 21213, "No 'From' number"),
        ({"from_": "twilio"}, 400, 21212, "Invalid 'From' Phone Number"),
        ({"from_": "+15550188888"}, 400, 21210, "not yet verified"),
        ({"url": "ftp://example.com/voice"}, 400, 21205, "Url is not a valid URL"),
        ({"url": "/voice"}, 400, 21205, "Url is not a valid URL"),
        ({"status_callback": "nowhere"}, 400, 21205, "StatusCallback is not a valid URL"),
        ({"url": None}, 400, 21200, "Url parameter is required"),
        ({"method": "PUT"}, 400, 21200, "Method must be GET or POST"),
        ({"status_callback_event": ["ringing", "hungup"]}, 400, 21200, "hungup"),
        ({"machine_detection": "Yes"}, 400, 21234, "MachineDetection"),
        ({"machine_detection_timeout": "soon"}, 400, 21234, "MachineDetectionTimeout"),
        ({"timeout": 601}, 400, 21208, "Timeout"),
        ({"send_digits": "12x"}, 400, 21206, "SendDigits"),
        ({"url": None, "twiml": "<Response><Say>hi</Response>"}, 400, 12100, "Twiml"),
        ({"url": None, "twiml": "<Response>" + "<Pause/>" * 600 + "</Response>"}, 400, 21200,
         "at most 4000"),
    ],
)
async def test_validation_errors_have_twilios_codes(
    twilio_api: SimulatedApi, fields: dict[str, Any], status: int, code: int, words: str
) -> None:
    twilio_api.from_numbers = frozenset({FROM})
    error = create_error(twilio_client(twilio_api), **fields)
    assert (error.status, error.code) == (status, code)
    assert words in error.msg
    assert twilio_api.calls == {}


async def test_unknown_call_and_rate_limit(twilio_api: SimulatedApi) -> None:
    client = twilio_client(twilio_api)
    with pytest.raises(TwilioRestException) as raised:
        client.calls("CA" + "0" * 32).fetch()
    assert (raised.value.status, raised.value.code) == (404, 20404)
    twilio_api.request_rate = 3
    codes = []
    for _ in range(6):
        try:
            client.calls.create(to=TO, from_=FROM, url="http://127.0.0.1:9/voice")
            codes.append(201)
        except TwilioRestException as error:
            codes.append(error.code)
    # A burst of 3 is allowed; the next ones come faster than 3 per second.
    assert codes[:3] == [201, 201, 201]
    assert 20429 in codes[3:]
    assert len(twilio_api.calls) == codes.count(201)


async def test_phone_numbers_are_masked_in_error_messages(twilio_api: SimulatedApi) -> None:
    error = create_error(twilio_client(twilio_api), to="+1555010000123456")
    assert "0123456" not in error.msg
    assert error.msg.endswith("3456")


# --- callee outcomes ----------------------------------------------------------------------------


async def place(twilio_api: SimulatedApi, app: TwimlApp, to: str = TO, **fields: Any) -> Any:
    """Create a call through the twilio Client (in a thread, as blocking code would) and wait
    for it to end."""
    twilio_api.app = app
    client = twilio_client(twilio_api)
    options = {"to": to, "from_": FROM, "url": "http://testserver/voice",
               "status_callback": "http://testserver/status",
               "status_callback_event": ALL_EVENTS, **fields}
    created = await asyncio.to_thread(client.calls.create, **options)
    return await twilio_api.wait(created.sid)


@pytest.mark.parametrize(
    ("callee", "status"),
    [
        (Callee(outcome="busy"), "busy"),
        (Callee(outcome="no-answer"), "no-answer"),
        (Callee(outcome="failed"), "failed"),
        (Callee(ring_seconds=25), "no-answer"),  # rings past the call's Timeout of 20
    ],
)
async def test_unanswered_calls_never_fetch_the_url(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp], callee: Callee, status: str
) -> None:
    app = reminder_app(make_app)
    twilio_api.callees = CalleeModel(numbers={TO: callee})
    ended = await place(twilio_api, app, timeout=20)
    assert ended.status == status
    assert "/voice" not in app.paths()
    callbacks = [(s.params["CallStatus"], s.params["SequenceNumber"]) for s in app.seen]
    assert callbacks == [("initiated", "0"), ("ringing", "1"), (status, "2")]
    assert app.seen[-1].params["CallDuration"] == "0"
    assert ended.start_time is None
    resource = twilio_api.resource(ended)
    assert resource["status"] == status
    assert resource["duration"] == "0"
    assert resource["end_time"] is not None


async def test_successive_attempts_and_seeded_ratios(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp]
) -> None:
    app = reminder_app(make_app)
    twilio_api.callees = CalleeModel().with_number(
        TO, Callee(outcome="busy"), Callee(steps=(Press("1"),)))
    first = await place(twilio_api, app)
    second = await place(twilio_api, app)
    third = await place(twilio_api, app)
    assert [first.status, second.status, third.status] == ["busy", "completed", "completed"]
    assert [first.attempt, second.attempt, third.attempt] == [0, 1, 2]

    model = CalleeModel(ratios={"human": 2, "machine": 1, "busy": 1}, seed=42)
    numbers = [f"+1555020{i:04d}" for i in range(400)]
    drawn = [model.callee(number) for number in numbers]
    again = [CalleeModel(ratios={"busy": 1, "machine": 1, "human": 2}, seed=42).callee(n)
             for n in reversed(numbers)]
    assert drawn == list(reversed(again))  # same seed: same callee whatever the order
    kinds = Counter("busy" if c.outcome == "busy" else c.who for c in drawn)
    assert set(kinds) == {"human", "machine", "busy"}
    assert kinds["human"] > kinds["machine"]  # 2:1 weights over 400 draws
    reseeded = [CalleeModel(ratios=model.ratios, seed=43).callee(n) for n in numbers]
    assert reseeded != drawn
    assert all(2.0 <= c.ring_seconds <= 8.0 for c in drawn)


# --- answering machine detection ------------------------------------------------------------------


def voicemail_app(make_app: Callable[..., TwimlApp], client: list[Any]) -> TwimlApp:
    """Reminder with a voicemail drop: the async AMD callback redirects machines to /drop
    through the API, as an app using AsyncAmd would."""

    async def amd(seen: Seen) -> str:
        if client and seen.params["AnsweredBy"].startswith("machine"):
            await asyncio.to_thread(client[0].calls(seen.params["CallSid"]).update,
                                    url="http://testserver/drop")
        return ""

    def voice(seen: Seen) -> str:
        if seen.params.get("AnsweredBy", "human").startswith("machine"):
            return twiml("<Say>This is a message for you after the beep.</Say>")
        return twiml(
            "<Say>Hello, this is your reminder for tomorrow morning.</Say>"
            '<Gather action="/confirm" numDigits="1"><Say>Press 1 to confirm.</Say></Gather>'
        )

    return make_app({
        "/voice": voice,
        "/confirm": lambda seen: twiml("<Say>Confirmed.</Say>"),
        "/drop": twiml("<Say>Reminder left after the beep.</Say><Hangup/>"),
        "/amd": amd,
        "/status": "",
    }, token=TEST_AUTH_TOKEN)


@pytest.mark.parametrize(
    ("mode", "who", "answered_by"),
    [
        ("Enable", "human", "human"),
        ("Enable", "machine", "machine_start"),
        ("Enable", "fax", "fax"),
        ("Enable", "unknown", "unknown"),
        ("DetectMessageEnd", "human", "human"),
        ("DetectMessageEnd", "machine", "machine_end_beep"),
        ("DetectMessageEnd", "machine_end_silence", "machine_end_silence"),
        ("DetectMessageEnd", "machine_start", "machine_end_beep"),
    ],
)
async def test_sync_amd_tells_the_first_url_request(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp], mode: str, who: str,
    answered_by: str,
) -> None:
    app = voicemail_app(make_app, [])
    twilio_api.callees = CalleeModel(numbers={TO: Callee(who=who, steps=(Press("1"),),
                                                         greeting_seconds=14)})
    ended = await place(twilio_api, app, machine_detection=mode)
    assert ended.answered_by == answered_by
    voice = next(s for s in app.seen if s.path == "/voice")
    assert voice.params["AnsweredBy"] == answered_by
    assert "/amd" not in app.paths()
    person = who in ("human", "unknown")  # detection unsure; a person still answers
    assert ("/confirm" in app.paths()) is person
    completed = app.seen[-1].params
    assert completed["CallStatus"] == "completed"
    assert completed["AnsweredBy"] == answered_by
    resource = await asyncio.to_thread(twilio_client(twilio_api).calls(ended.sid).fetch)
    assert resource.answered_by == answered_by
    if who == "machine" and mode == "DetectMessageEnd":
        # Detection listened to the whole greeting: the call lasted at least that long.
        assert ended.duration >= 14


async def test_async_amd_redirects_a_machine_to_the_voicemail_drop(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp]
) -> None:
    client: list[Any] = [twilio_client(twilio_api)]
    app = voicemail_app(make_app, client)
    twilio_api.callees = CalleeModel(numbers={
        TO: Callee(who="machine", greeting_seconds=9),
        "+15550100002": Callee(steps=(Press("1"),)),
    })
    amd = {"machine_detection": "DetectMessageEnd", "async_amd": "true",
           "async_amd_status_callback": "http://testserver/amd"}
    machine = await place(twilio_api, app, **amd)
    assert machine.status == "completed"
    assert [s.path for s in app.seen] == [
        "/status", "/status", "/status", "/voice", "/amd", "/drop", "/status"]
    assert "AnsweredBy" not in app.seen[3].params  # the Url is fetched at answer
    result = app.seen[4].params
    assert result["AnsweredBy"] == "machine_end_beep"
    assert result["MachineDetectionDuration"] == "9000"
    assert result["CallSid"] == machine.sid
    assert app.seen[5].params["CallStatus"] == "in-progress"
    assert [c["_event"] for c in machine.callbacks] == [
        "initiated", "ringing", "answered", "amd", "completed"]

    app.seen.clear()
    person = await place(twilio_api, app, to="+15550100002", **amd)
    assert [s.path for s in app.seen] == [
        "/status", "/status", "/status", "/voice", "/amd", "/confirm", "/status"]
    assert app.seen[4].params["AnsweredBy"] == "human"
    assert person.answered_by == "human"


# --- live updates -------------------------------------------------------------------------------


async def test_live_updates_end_or_redirect_a_call(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp]
) -> None:
    client = twilio_client(twilio_api)

    def hang_up_now(seen: Seen) -> str:
        # Blocking, on the event loop itself: the in-process client must not deadlock.
        client.calls(seen.params["CallSid"]).update(status="completed")
        return twiml("<Say>One.</Say><Say>Two.</Say><Say>Three.</Say>")

    def inline(seen: Seen) -> str:
        client.calls(seen.params["CallSid"]).update(
            twiml="<Response><Say>Replaced.</Say></Response>")
        return twiml("<Say>Original.</Say><Say>Never heard.</Say>")

    app = make_app({"/voice": hang_up_now, "/inline": inline, "/status": ""},
                   token=TEST_AUTH_TOKEN)
    ended = await place(twilio_api, app)
    assert ended.status == "completed"
    heard = [getattr(e, "text", None) for e in ended.events if e.type == "say"]
    assert heard == []  # the update came before the first verb ran
    with pytest.raises(TwilioRestException) as raised:
        await asyncio.to_thread(client.calls(ended.sid).update, url="http://testserver/voice")
    assert (raised.value.status, raised.value.code) == (400, 21220)

    replaced = await place(twilio_api, app, url="http://testserver/inline")
    heard = [getattr(e, "text", None) for e in replaced.events if e.type == "say"]
    assert heard == ["Replaced."]


async def test_calls_beyond_the_cps_wait_queued_and_can_be_canceled(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp]
) -> None:
    app = reminder_app(make_app)
    twilio_api.app = app
    twilio_api.cps = 0.5  # one call every 2 s: the second waits queued
    client = twilio_client(twilio_api)
    first = client.calls.create(to=TO, from_=FROM, url="http://testserver/voice",
                                status_callback="http://testserver/status")
    second = client.calls.create(to="+15550100002", from_=FROM, url="http://testserver/voice",
                                 status_callback="http://testserver/status",
                                 status_callback_event=ALL_EVENTS)
    assert first.queue_time == "0"
    assert int(second.queue_time) > 0
    assert second.status == "queued"
    canceled = client.calls(second.sid).update(status="canceled")
    assert canceled.status == "queued"  # takes effect when the call next looks
    assert twilio_api.live == twilio_api.peak_live == 2
    assert first.sid in twilio_api.calls
    assert twilio_api.calls[second.sid].created_at >= twilio_api.calls[first.sid].created_at
    ended = await twilio_api.wait(second.sid)
    assert ended.status == "canceled"
    assert ended.callbacks[-1]["CallStatus"] == "canceled"
    assert [c["_event"] for c in ended.callbacks] == ["completed"]
    assert (await twilio_api.wait(first.sid)).status == "completed"
    await twilio_api.wait_idle()
    assert (twilio_api.live, twilio_api.peak_live) == (0, 2)


# --- failure paths ----------------------------------------------------------------------------


async def test_unreachable_url_and_failing_callbacks_still_end_the_call(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp],
    serve: Callable[[Any], LiveServer],
) -> None:
    app = reminder_app(make_app)
    twilio_api.callees = CalleeModel(numbers={TO: Callee(steps=(Press("1"),))})
    broken = make_app({"/status": lambda seen: Response("down", status_code=500)},
                      token=TEST_AUTH_TOKEN)
    site = serve(broken)
    # Over real HTTP (an in-process app would answer every URL): nothing listens on the Url.
    client = twilio_client(twilio_api)
    created = await asyncio.to_thread(
        client.calls.create, to=TO, from_=FROM, url=f"http://127.0.0.1:{free_port()}/voice",
        status_callback=f"{site.url}/status", status_callback_event=ALL_EVENTS)
    dead = await twilio_api.wait(created.sid)
    assert dead.status == "completed"
    codes = [getattr(e, "code", None) for e in dead.events if e.type == "error"]
    assert 11205 in codes  # connection failure on the Url
    assert 15003 in codes  # the status callback answered 500
    assert [c["_status"] for c in dead.callbacks] == ["500"] * 4
    assert codes.count(15003) == 4
    assert broken.paths() == ["/status"] * 4
    # The next call is served as usual.
    ok = await twilio_api.wait(client.calls.create(
        to=TO, from_=FROM, url=f"{serve(app).url}/voice").sid)
    assert ok.status == "completed"
    assert app.paths() == ["/voice", "/confirm"]


class ExplodingModel(CalleeModel):
    def callee(self, number: str, attempt: int = 0) -> Callee:
        if number == TO:
            raise RuntimeError("model bug")
        return super().callee(number, attempt)


async def test_a_crashing_call_is_recorded_failed_and_released(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp]
) -> None:
    app = reminder_app(make_app)
    twilio_api.callees = ExplodingModel()
    crashed = await place(twilio_api, app)
    assert crashed.status == "failed"
    assert crashed.error == "RuntimeError: model bug"
    assert crashed.done.is_set()
    fine = await place(twilio_api, app, to="+15550100002")
    assert fine.status == "completed"
    await twilio_api.wait_idle()
    assert not twilio_api._active
    assert twilio_api.live == 0


async def test_closing_the_api_cancels_calls_still_ringing(
    make_app: Callable[..., TwimlApp]
) -> None:
    app = reminder_app(make_app)
    api = SimulatedApi(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN, app=app,
                       speed=1.0, callees=CalleeModel(numbers={TO: Callee(ring_seconds=600)}))
    async with api:
        client = twilio_client(api)
        created = client.calls.create(to=TO, from_=FROM, url="http://testserver/voice",
                                      timeout=600)
        call = api.calls[created.sid]
        with pytest.raises(TimeoutError):
            await api.wait(created.sid, timeout=0.05)
        assert not call.done.is_set()
    assert call.done.is_set()
    assert call.status == "canceled"
    assert not api._active
    assert api.live == 0
    assert "/voice" not in app.paths()


def test_the_in_process_client_needs_a_running_loop() -> None:
    api = SimulatedApi(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN)
    client = twilio_client(api)
    with pytest.raises(RuntimeError, match="no event loop"):
        client.calls.create(to=TO, from_=FROM, url="http://127.0.0.1:9/voice")
    loop = asyncio.new_event_loop()
    api.bind(loop)
    try:
        with pytest.raises(RuntimeError, match="loop is not running"):
            client.calls.create(to=TO, from_=FROM, url="http://127.0.0.1:9/voice")
    finally:
        loop.close()
    assert api.calls == {}


def test_the_served_fixture_for_sync_tests(
    twilio_api: SimulatedApi, twilio_api_server: ApiServer, make_app: Callable[..., TwimlApp],
    serve: Callable[[Any], LiveServer],
) -> None:
    app = reminder_app(make_app)
    site = serve(app)
    twilio_api.callees = CalleeModel(numbers={TO: Callee(steps=(Press("1"),))})
    over_http = twilio_client(twilio_api_server.url, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    in_process = twilio_client(twilio_api)  # from this thread: handed to the server's loop
    one = over_http.calls.create(to=TO, from_=FROM, url=f"{site.url}/voice",
                                 status_callback=f"{site.url}/status",
                                 status_callback_event=ALL_EVENTS)
    two = in_process.calls.create(to=TO, from_=FROM, url=f"{site.url}/voice")
    twilio_api_server.wait_idle()
    assert in_process.calls(one.sid).fetch().status == "completed"
    assert over_http.calls(two.sid).fetch().status == "completed"
    events = [s.params["CallStatus"] for s in app.seen if s.path == "/status"]
    assert events == ["initiated", "ringing", "in-progress", "completed"]  # repeated keys kept
    assert app.paths().count("/confirm") == 2


# --- command line and callee specs ---------------------------------------------------------------


def test_ivrkit_sim_api_serves_calls(
    make_app: Callable[..., TwimlApp], serve: Callable[[Any], LiveServer]
) -> None:
    app = reminder_app(make_app)
    site = serve(app)
    port = free_port()
    command = [sys.executable, "-m", "simulator", "api", "--port", str(port),
               "--account-sid", TEST_ACCOUNT_SID, "--auth-token", TEST_AUTH_TOKEN,
               "--cps", "0", "--callee", f"{TO}=human,press=1", "--callee", f"{TO}=busy"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"on http://127.0.0.1:{port}" in banner
        assert TEST_AUTH_TOKEN not in banner
        client = twilio_client(f"http://127.0.0.1:{port}", TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        for _ in range(100):  # the banner comes just before uvicorn listens
            try:
                first = client.calls.create(to=TO, from_=FROM, url=f"{site.url}/voice")
                break
            except Exception:
                time.sleep(0.05)
        lines = [process.stdout.readline()]
        second = client.calls.create(to=TO, from_=FROM, url=f"{site.url}/voice")
        lines.append(process.stdout.readline())
        third = client.calls.create(to="+15550100003", from_=FROM,
                                    url=f"http://127.0.0.1:{free_port()}/voice")
        lines.append(process.stdout.readline())
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert lines[0].startswith(f"{first.sid} to ********0001: completed")
    assert lines[1].startswith(f"{second.sid} to ********0001: busy")
    assert lines[2].startswith(f"{third.sid} to ********0003: completed")
    assert lines[2].endswith("(Twilio errors 11205)\n")  # nothing listens on its Url
    assert app.paths() == ["/voice", "/confirm"]
    assert TEST_AUTH_TOKEN not in errors
    assert "Traceback" not in errors


def test_ivrkit_sim_api_usage_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    assert main(["api", "--auth-token", "x"]) == 2
    assert "--account-sid" in capsys.readouterr().err
    assert main(["api", "--account-sid", TEST_ACCOUNT_SID, "--auth-token", "x",
                 "--api-key", "SKabc"]) == 2
    assert "SK...:SECRET" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        main(["api", "--callee", "+15550100001=shouting"])
    assert raised.value.code == 2
    assert "callee 'shouting'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["api", "--ratio", "human=1,robot=2"])
    assert "robot=2" in capsys.readouterr().err


def test_callee_specs() -> None:
    callee = parse_callee("human,press=1,speak=yes please,press=timeout,hangup,ring=3")
    assert callee == Callee(steps=(Press("1"), Speak("yes please"), Timeout(), HangUp()),
                            ring_seconds=3.0)
    assert parse_callee("busy").outcome == "busy"
    machine = parse_callee("machine_end_silence,greeting=20")
    assert (machine.who, machine.greeting_seconds, machine.is_machine) == (
        "machine_end_silence", 20.0, True)
    for bad in ("", "human,ring=soon", "human,dance=1", "robot"):
        with pytest.raises(ValueError, match=r"callee|ring|press=|empty"):
            parse_callee(bad)
    assert parse_ratios("human=70%,machine=20,busy=10") == {
        "human": 70.0, "machine": 20.0, "busy": 10.0}
    with pytest.raises(ValueError, match="KIND=WEIGHT"):
        parse_ratios("human=-1")
    with pytest.raises(ValueError, match="positive"):
        CalleeModel(ratios={"human": 0})
    with pytest.raises(ValueError, match="ring range"):
        CalleeModel(ring=(5, 1))


def test_readme_simulated_api_example_passes_as_a_test_file(pytester: pytest.Pytester) -> None:
    """The README's ``twilio_api`` example, pasted into a test file as printed."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(r"<!-- readme-sim-api[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert found, "README.md lost its readme-sim-api block"
    pytester.makepyfile(test_reminder=found.group(1))
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings =\n    error\n"
        "    ignore:Module already imported:pytest.PytestAssertRewriteWarning\n"
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)


async def test_long_runs_can_skip_recording_events(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp]
) -> None:
    app = reminder_app(make_app)
    twilio_api.record_events = False
    twilio_api.callees = CalleeModel(numbers={TO: Callee(steps=(Press("1"),))})
    ended = await place(twilio_api, app)
    assert ended.status == "completed"
    assert ended.duration is not None
    assert ended.duration > 0
    assert (ended.events, ended.callbacks) == ([], [])
    assert app.paths() == ["/status", "/status", "/status", "/voice", "/confirm", "/status"]


# --- scenario files -------------------------------------------------------------------------------

OUTBOUND_SCENARIOS = """
url: /voice
auth_token: %s
status_callback: /status
scenarios:
  - name: a person confirms
    outbound: {machine_detection: Enable}
    steps: [{press: "1"}]
    expect: {heard: ["Confirmed."], answered_by: human, ended: completed}
  - name: a machine gets the message after the beep
    outbound: {answer: machine, machine_detection: DetectMessageEnd}
    expect: {heard: ["after the beep"], not_heard: ["Press 1"], answered_by: machine_end_beep}
  - name: async detection tells the callback
    outbound: {answer: machine, async_amd_callback: /amd, greeting: 5}
    expect: {reached: ["/amd"], answered_by: machine_end_beep}
  - name: busy never reaches the flow
    outbound: {answer: busy}
    expect: {ended: busy, not_heard: ["reminder"]}
  - name: wrong on purpose
    outbound: {answer: fax, machine_detection: Enable}
    expect: {answered_by: human}
"""


async def test_scenario_files_describe_outbound_calls(
    make_app: Callable[..., TwimlApp], tmp_path: Path
) -> None:
    app = voicemail_app(make_app, [])
    path = tmp_path / "outbound.yaml"
    path.write_text(OUTBOUND_SCENARIOS % TEST_AUTH_TOKEN)
    out = io.StringIO()
    report = await run_scenarios(load_scenarios(path), app=app, out=out)
    assert report.passed == [
        "a person confirms", "a machine gets the message after the beep",
        "async detection tells the callback", "busy never reaches the flow",
    ], out.getvalue()
    assert report.failed == {"wrong on purpose": [
        "expected AnsweredBy='human'; requests carried ['fax']"]}
    voices = [s for s in app.seen if s.path == "/voice"]
    assert {s.params["Direction"] for s in voices} == {"outbound-api"}
    statuses = [s.params["CallStatus"] for s in app.seen if s.path == "/status"]
    assert statuses == ["completed", "completed", "completed", "busy", "completed"]


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ("{answer: robot}", "outbound answer 'robot'"),
        ("{machine_detection: Maybe}", "machine_detection 'Maybe'"),
        ("{ring: soon}", "are seconds"),
        ("{callee: human}", "'outbound' is a mapping"),
    ],
)
def test_bad_outbound_blocks_name_the_fix(tmp_path: Path, block: str, words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"url: /voice\nscenarios:\n  - name: x\n    outbound: {block}\n")
    with pytest.raises(ScenarioError, match=re.escape(words)):
        load_scenarios(path)


async def test_an_update_while_waiting_in_a_queue_applies_when_the_wait_ends(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp]
) -> None:
    client = twilio_client(twilio_api)

    def hold(seen: Seen) -> str:
        if seen.params["QueueTime"] == "0":
            client.calls(seen.params["CallSid"]).update(url="http://testserver/moved")
        return twiml("<Say>Please hold.</Say>")

    app = make_app({
        "/voice": twiml('<Enqueue waitUrl="/hold" action="/after">support</Enqueue>'),
        "/hold": hold,
        "/after": twiml("<Say>Queue done.</Say>"),
        "/moved": twiml("<Say>Moved by the API.</Say>"),
    }, token=TEST_AUTH_TOKEN)
    twilio_api.callees = CalleeModel(numbers={TO: Callee(steps=(QueueOutcome("leave", 2),))})
    ended = await place(twilio_api, app, status_callback=None, status_callback_event=None)
    assert app.paths() == ["/voice", "/hold", "/hold", "/moved"]
    assert ended.status == "completed"
    assert "Moved by the API." in [getattr(e, "text", "") for e in ended.events]


async def test_a_paced_call_hangs_up_as_soon_as_the_api_says_so(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp]
) -> None:
    app = make_app({"/voice": twiml('<Say>Hello.</Say><Pause length="600"/><Say>Late.</Say>')},
                   token=TEST_AUTH_TOKEN)
    twilio_api.app = app
    twilio_api.speed = 10.0  # the Pause takes 60 real seconds
    client = twilio_client(twilio_api)
    created = client.calls.create(to=TO, from_=FROM, url="http://testserver/voice")
    while "/voice" not in app.paths():
        await asyncio.sleep(0.01)
    client.calls(created.sid).update(status="completed")
    ended = await twilio_api.wait(created.sid, timeout=30)
    assert ended.status == "completed"
    heard = [getattr(e, "text", "") for e in ended.events if e.type == "say"]
    assert heard == ["Hello."]
    assert ended.events[-1].reason == "api-update"


async def test_the_asgi_app_answers_like_twilios_api(twilio_api: SimulatedApi) -> None:
    transport = httpx.ASGITransport(app=twilio_api.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.twilio.com") as http:
        calls = f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Calls.json"
        unauthorized = await http.post(calls, data={"To": TO})
        assert unauthorized.status_code == 401
        assert unauthorized.headers["www-authenticate"].startswith("Basic")
        assert unauthorized.json()["code"] == 20003
        auth = (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        listing = await http.get(calls, auth=auth)
        assert (listing.status_code, listing.json()["code"]) == (405, 20004)
        elsewhere = await http.get("/2010-04-01/Accounts/x/Messages.json", auth=auth)
        assert (elsewhere.status_code, elsewhere.json()["code"]) == (404, 20404)
        flood = await http.post(calls, auth=auth, content=b"To=" + b"1" * (2 * 1024 * 1024))
        assert flood.status_code == 413
        created = await http.post(calls, auth=auth, content=(
            "To=%2B15550100001&From=%2B15550199999&Url=http%3A%2F%2F127.0.0.1%3A9%2Fv"
            "&StatusCallbackEvent=initiated&StatusCallbackEvent=completed"))
        assert created.status_code == 201
        assert created.headers["content-type"] == "application/json"
        body = created.json()
        assert body["uri"] == f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Calls/{body['sid']}.json"
        assert twilio_api.calls[body["sid"]].values("StatusCallbackEvent") == [
            "initiated", "completed"]
        await twilio_api.wait(body["sid"])
        fetched = await http.get(body["uri"], auth=auth)
        assert fetched.json()["status"] == "completed"
    assert twilio_api.calls.keys() == {body["sid"]}


async def test_a_failing_amd_callback_is_a_warning_and_the_call_goes_on(
    twilio_api: SimulatedApi, make_app: Callable[..., TwimlApp]
) -> None:
    app = reminder_app(make_app)
    app.routes["/amd"] = lambda seen: Response("down", status_code=503)
    twilio_api.callees = CalleeModel(numbers={TO: Callee(steps=(Press("1"),))})
    ended = await place(twilio_api, app, status_callback=None, status_callback_event=None,
                        machine_detection="Enable", async_amd="true",
                        async_amd_status_callback="http://testserver/amd")
    assert app.paths() == ["/voice", "/amd", "/confirm"]
    assert ended.status == "completed"
    assert [(e.code, e.message[:30]) for e in ended.events if e.type == "error"] == [
        (15003, "AsyncAmdStatusCallback failed:")]
    assert ended.answered_by == "human"


class LifespanApp:
    """A TwiML app with a slow (or failing) lifespan start-up, counting starts."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.starts = 0
        self.ready = False
        self.early: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.starts += 1
                    await asyncio.sleep(0.05)
                    if self.fail:
                        await send({"type": "lifespan.startup.failed", "message": "no database"})
                        return
                    self.ready = True
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if not self.ready:
            self.early.append(scope["path"])
        body = twiml("<Say>Ready.</Say>").encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/xml")]})
        await send({"type": "http.response.body", "body": body})


async def test_calls_wait_for_the_apps_one_lifespan_start(twilio_api: SimulatedApi) -> None:
    app = LifespanApp()
    twilio_api.app = app
    client = twilio_client(twilio_api)
    sids = [client.calls.create(to=f"+1555010000{i}", from_=FROM, url="http://testserver/voice")
            .sid for i in range(5)]
    ended = [await twilio_api.wait(sid) for sid in sids]
    assert [call.status for call in ended] == ["completed"] * 5
    assert app.starts == 1
    assert app.early == []  # no request reached the app before its start-up completed
    assert all("Ready." in [getattr(e, "text", "") for e in call.events] for call in ended)


async def test_a_failing_lifespan_fails_the_calls_and_is_retried(
    twilio_api: SimulatedApi,
) -> None:
    app = LifespanApp(fail=True)
    twilio_api.app = app
    client = twilio_client(twilio_api)
    sids = [client.calls.create(to=TO, from_=FROM, url="http://testserver/voice").sid
            for _ in range(3)]
    ended = [await twilio_api.wait(sid) for sid in sids]
    assert [call.status for call in ended] == ["failed"] * 3
    assert all("no database" in (call.error or "") for call in ended)
    assert app.starts == 1  # the three waited for the same start
    app.fail = False
    retried = await twilio_api.wait(
        client.calls.create(to=TO, from_=FROM, url="http://testserver/voice").sid)
    assert retried.status == "completed"
    assert app.starts == 2
    await twilio_api.wait_idle()
    assert (twilio_api.live, twilio_api._active) == (0, set())
