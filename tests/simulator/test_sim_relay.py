"""ConversationRelay sessions: the simulator plays Twilio's side against the small agent app in
``relay_app`` (plain Starlette, no ivrkit), in-process and through a real uvicorn server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re

import pytest
from relay_app import GREETING, RelayApp
from sim_apps import TOKEN

from simulator import HangUp, Interrupt, Press, Speak, Timeout, run_call
from simulator.cli import main
from simulator.model import AgentEvent, ErrorEvent, InterruptEvent, LanguageEvent, PlayEvent
from simulator.relay import RelayOptions

FAST = RelayOptions(agent_silence=0.5, settle=0.05)
SESSION_ID = re.compile(r"^VX[0-9a-f]{32}$")


def signature(url: str) -> str:
    mac = hmac.new(TOKEN.encode(), url.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


async def call(app: RelayApp, query: str = "", steps=(), **options):
    options.setdefault("relay", FAST)
    return await run_call(f"/voice{query}", list(steps), app=app, auth_token=TOKEN, **options)


async def test_speak_through_a_session_to_the_action_and_on():
    app = RelayApp()
    result = await call(app, steps=[Speak("Hello there"), Speak("I have a question about my bill"),
                                    Press("1")])
    assert result.ok, result.transcript
    # The greeting is heard first, then one agent event per utterance (tokens joined).
    assert result.agent_said == [GREETING, "You said: Hello there",
                                 "Let me connect you to billing."]
    session = app.sessions[0]
    assert session.closed  # the simulator closed the socket after the end
    setup = session.setup
    assert setup is not None
    assert setup["customParameters"] == {"account": "12345678"}
    assert setup["callSid"] == result.call_sid
    assert (setup["from"], setup["to"], setup["direction"]) == (
        "+15005550006", "+15005550001", "inbound")
    assert SESSION_ID.match(setup["sessionId"])
    assert app.kinds() == ["setup", "prompt", "prompt"]
    assert session.received[1] == {"type": "prompt", "voicePrompt": "Hello there",
                                   "lang": "en-US", "last": True}
    # Signed like Twilio: Base64(HMAC-SHA1(token, url)), no params.
    assert session.signature == signature("ws://testserver/relay/good")
    assert app.bad_signatures == []
    # The action: SessionId/Status/Duration and HandoffData verbatim, plus the call's params.
    (action,) = app.actions
    assert action["SessionId"] == setup["sessionId"]
    assert action["SessionStatus"] == "ended"
    assert action["HandoffData"] == '{"intent": "billing", "account": "12345678"}'
    assert int(action["SessionDuration"]) > 0
    assert action["CallSid"] == result.call_sid
    assert action["CallStatus"] == "in-progress"
    assert "ErrorCode" not in action
    # ... and the TwiML it answered runs: the billing menu.
    assert "Your balance is 42 dollars." in result.heard
    assert result.reason == "hangup"


async def test_real_websocket_through_uvicorn(serve):
    app = RelayApp()
    server = serve(app)
    result = await run_call(f"{server.url}/voice", [Speak("Hi"), Speak("my bill please")],
                            auth_token=TOKEN, relay=FAST)
    assert result.ok, result.transcript
    assert result.agent_said[1:] == ["You said: Hi", "Let me connect you to billing."]
    assert app.sessions[0].signature == signature(f"ws{server.url[4:]}/relay/good")
    assert app.bad_signatures == []
    assert app.actions[0]["SessionStatus"] == "ended"
    assert "Billing menu for account 12345678" in result.heard


async def test_caller_hanging_up_when_the_script_runs_out():
    app = RelayApp()
    result = await call(app, steps=[Speak("Hello")])
    assert result.ok, result.transcript
    assert result.reason == "caller-hangup"
    (action,) = app.actions
    assert action["SessionStatus"] == "completed"
    assert action["CallStatus"] == "completed"
    assert "HandoffData" not in action
    assert app.sessions[0].closed
    assert "Sorry" not in result.heard  # the action's TwiML is ignored after a hang-up


async def test_without_action_the_next_verb_runs():
    app = RelayApp()
    result = await call(app, "?action=0", [Speak("bye")])
    assert result.ok, result.transcript
    assert app.actions == []
    assert result.said == ["Back in the menu."]
    assert result.agent_said[-1] == "Goodbye!"


async def test_phone_fixture_speak_returns_what_the_agent_said(phone):
    app = RelayApp()
    phone.relay = FAST
    live = await phone.call("/voice", app=app, auth_token=TOKEN).start()
    assert live.waiting_for == "agent"
    assert live.prompt.said == [GREETING]
    assert await live.speak("Hello") == "You said: Hello"
    reply = await live.speak("It is about my bill")
    assert reply.splitlines() == ["Let me connect you to billing.",
                                  "Billing menu for account 12345678. Press 1 for your balance."]
    assert live.waiting_for == "gather"
    assert await live.speak("one") == ""  # a DTMF-only Gather ignores speech
    assert live.ended


def test_phone_fixture_sync(phone):
    app = RelayApp()
    live = phone.sync("/voice", app=app, auth_token=TOKEN, relay=FAST)
    assert live.speak("Hi") == "You said: Hi"
    assert live.speak("bye") == "Goodbye!\nThanks for calling. Goodbye."
    assert live.ended


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_speak_json(serve):
    app = RelayApp()
    server = serve(app)
    code, out, err = run_cli(
        "call", f"{server.url}/voice", "--speak", "Hello", "--speak", "my bill", "--press", "1",
        "--json", "--auth-token", TOKEN, "--agent-settle", "0.05",
    )
    assert code == 0, out + err
    events = [json.loads(line) for line in out.splitlines()]
    agents = [e["text"] for e in events if e["type"] == "agent"]
    assert agents == [GREETING, "You said: Hello", "Let me connect you to billing."]
    (end,) = [e for e in events if e["type"] == "relay-end"]
    assert end["status"] == "ended"
    assert json.loads(end["handoff"]) == {"intent": "billing", "account": "12345678"}
    inputs = [e for e in events if e["type"] == "input"]
    assert inputs == [{"type": "input", "speech": "Hello"}, {"type": "input", "speech": "my bill"},
                      {"type": "input", "digits": "1"}]
    assert "Your balance is 42 dollars." in [e.get("text") for e in events]


def test_cli_text_and_script_running_out(serve):
    app = RelayApp()
    server = serve(app)
    code, out, err = run_cli("call", f"{server.url}/voice", "--speak", "Hello",
                             "--auth-token", TOKEN, "--agent-settle", "0.05")
    assert code == 0, out + err
    assert '   Agent: "You said: Hello"' in out.splitlines()
    assert "ConversationRelay ended: completed" in out
    assert err == "ivrkit-sim: no --press or --speak left for the agent's turn: the caller " \
                  "hangs up\n"


# --- keys, interrupts, media ---------------------------------------------------------------------


async def test_keys_reach_the_agent_only_with_dtmf_detection():
    app = RelayApp()
    result = await call(app, "?dtmf=1", [Press("42"), Speak("bye")])
    assert result.ok, result.transcript
    assert [m for m in app.sessions[0].received if m["type"] == "dtmf"] == [
        {"type": "dtmf", "digit": "4"}, {"type": "dtmf", "digit": "2"}]
    assert "You pressed 4." in result.agent_said

    app = RelayApp()
    result = await call(app, "", [Press("42"), Speak("bye")])
    assert result.ok, result.transcript
    assert app.kinds() == ["setup", "prompt"]  # Twilio passes no keys on
    assert result.agent_said == [GREETING, "Goodbye!"]


async def test_interrupt_cuts_the_last_utterance():
    app = RelayApp()
    result = await call(app, "", [Speak("Hello there"), Interrupt("bye", after_words=2)])
    assert result.ok, result.transcript
    interrupt = app.sessions[0].received[2]
    assert interrupt == {"type": "interrupt", "utteranceUntilInterrupt": "You said:",
                         "durationUntilInterruptMs": 800}
    assert app.kinds() == ["setup", "prompt", "interrupt", "prompt"]
    assert [e for e in result.events if isinstance(e, InterruptEvent)] == [
        InterruptEvent("You said:", 800)]


async def test_no_interrupt_where_the_agent_is_not_interruptible():
    app = RelayApp()
    result = await call(app, '?attrs=interruptible="none"', [Speak("Hi"), Interrupt("bye")])
    assert result.ok, result.transcript
    assert app.kinds() == ["setup", "prompt", "prompt"]


async def test_play_digits_and_language_are_followed():
    app = RelayApp()
    result = await call(app, "", [Speak("some music please")])
    assert result.ok, result.transcript
    plays = [e.url for e in result.events if isinstance(e, PlayEvent)]
    assert plays == ["https://example.com/hold.mp3", "digits:1w2"]
    assert [e for e in result.events if isinstance(e, LanguageEvent)] == [
        LanguageEvent("sv-SE", None)]
    assert result.agent_said[-1] == "Hej!"


async def test_silence_step_lets_the_agent_speak_up():
    app = RelayApp()
    result = await call(app, "", [Timeout(), Speak("bye")])
    assert result.ok, result.transcript  # no agent-silence error for the caller's own silence
    assert result.agent_said == [GREETING, "Goodbye!"]


# --- failure paths: each one reported, the call ends cleanly, the next call is answered ---------


def codes(result) -> list[int | str]:
    return [e.code for e in result.errors]


async def assert_next_call_answered(app: RelayApp) -> None:
    result = await call(app, "", [Speak("bye")])
    assert result.ok, result.transcript
    assert app.sessions[-1].closed


@pytest.mark.parametrize("transport", ["asgi", "uvicorn"])
async def test_upgrade_refused(transport, serve):
    app = RelayApp()
    url = f"{serve(app).url}/voice" if transport == "uvicorn" else "/voice"
    result = await run_call(url + "?mode=refuse", [Speak("Hi")], app=None if
                            transport == "uvicorn" else app, auth_token=TOKEN, relay=FAST)
    assert codes(result) == [64102]
    assert "HTTP 403" in result.errors[0].message
    (action,) = app.actions
    assert (action["SessionStatus"], action["ErrorCode"]) == ("failed", "64102")
    # Twilio goes on with the TwiML the action answered.
    assert result.said == ["Sorry, the assistant is unavailable (failed 64102)."]
    assert app.sessions[-1].closed


@pytest.mark.parametrize("transport", ["asgi", "uvicorn"])
async def test_upgrade_denied_with_a_response(transport, serve):
    app = RelayApp()
    url = f"{serve(app).url}/voice" if transport == "uvicorn" else "/voice"
    result = await run_call(url + "?mode=deny", [Speak("Hi")], app=None if
                            transport == "uvicorn" else app, auth_token=TOKEN, relay=FAST)
    assert codes(result) == [64102]
    assert "HTTP 401" in result.errors[0].message
    assert app.actions[0]["ErrorCode"] == "64102"


async def test_unsigned_upgrade_is_refused_by_a_checking_app():
    app = RelayApp()
    result = await run_call("/voice?mode=good", [Speak("Hi")],
                            app=_UnsignedUpgrade(app), auth_token=TOKEN, relay=FAST)
    assert codes(result) == [64102]
    assert app.bad_signatures == ["ws://testserver/relay/good"]


class _UnsignedUpgrade:
    """Strips X-Twilio-Signature from upgrades only (what an unsigned client would send)."""

    def __init__(self, app: RelayApp) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            scope = {**scope, "headers": [h for h in scope["headers"]
                                          if h[0] != b"x-twilio-signature"]}
        await self.app(scope, receive, send)


@pytest.mark.parametrize("transport", ["asgi", "uvicorn"])
async def test_app_closing_mid_session(transport, serve):
    app = RelayApp()
    url = f"{serve(app).url}/voice" if transport == "uvicorn" else "/voice"
    result = await run_call(url + "?mode=drop", [Speak("Hi"), Speak("bye")],
                            app=None if transport == "uvicorn" else app,
                            auth_token=TOKEN, relay=FAST)
    assert codes(result) == [64105]
    assert "code 1011" in result.errors[0].message
    (action,) = app.actions
    assert (action["SessionStatus"], action["ErrorCode"]) == ("failed", "64105")
    assert result.said == ["Sorry, the assistant is unavailable (failed 64105)."]
    assert app.sessions[-1].closed
    await assert_next_call_answered(app)


@pytest.mark.parametrize("transport", ["asgi", "uvicorn"])
async def test_agent_never_answering(transport, serve):
    app = RelayApp()
    url = f"{serve(app).url}/voice" if transport == "uvicorn" else "/voice"
    result = await run_call(url + "?mode=silent", [Speak("Hi"), Speak("anyone?")],
                            app=None if transport == "uvicorn" else app,
                            auth_token=TOKEN, relay=FAST)
    assert codes(result) == ["agent-silence"]
    assert result.reason == "caller-hangup"
    (action,) = app.actions
    assert action["SessionStatus"] == "completed"
    assert app.kinds() == ["setup", "prompt"]  # the caller gave up after the first silence
    await _until_closed(app)
    await assert_next_call_answered(app)


async def _until_closed(app: RelayApp) -> None:
    """The app's handler sees the close a moment after the simulator sends it (over TCP)."""
    import asyncio

    for _ in range(200):
        if app.sessions[0].closed:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the app's handler never saw the socket close")


async def test_bad_json_is_reported_and_dropped_and_the_session_goes_on():
    app = RelayApp()
    result = await call(app, "?mode=badjson", [Speak("Hi"), Speak("bye")])
    assert codes(result).count(64107) == 4  # two bad messages per prompt
    assert result.agent_said == [GREETING, "You said: Hi", "Goodbye!"]
    assert app.actions[0]["SessionStatus"] == "ended"
    errors = [m for m in app.sessions[0].received if m["type"] == "error"]
    assert errors[0]["description"].startswith("Invalid message received: {this is not json")


@pytest.mark.parametrize("transport", ["asgi", "uvicorn"])
async def test_ten_unknown_messages_close_the_socket(transport, serve):
    app = RelayApp()
    url = f"{serve(app).url}/voice" if transport == "uvicorn" else "/voice"
    result = await run_call(url + "?mode=unknown", [Speak("Hi"), Speak("bye")],
                            app=None if transport == "uvicorn" else app,
                            auth_token=TOKEN, relay=FAST)
    assert codes(result) == [64107] * 10 + [64105]
    assert "(1007)" in result.errors[-1].message
    (action,) = app.actions
    assert (action["SessionStatus"], action["ErrorCode"]) == ("failed", "64105")
    await _until_closed(app)
    await assert_next_call_answered(app)


async def test_agent_raising_in_process():
    app = RelayApp()
    result = await call(app, "?mode=crash", [Speak("Hi")])
    assert codes(result) == [64105]
    assert "the app raised RuntimeError: the agent crashed" in result.errors[0].message
    assert app.actions[0]["SessionStatus"] == "failed"
    await assert_next_call_answered(app)


async def test_nothing_listening():
    from urllib.parse import quote

    from sim_apps import free_port

    app = RelayApp()
    socket_url = f"ws://127.0.0.1:{free_port()}/relay"
    result = await call(app, f"?ws={quote(socket_url)}", [Speak("Hi")])
    assert codes(result) == [64102], result.transcript
    assert "could not connect" in result.errors[0].message
    assert app.actions[0]["ErrorCode"] == "64102"


async def test_wss_to_a_server_without_tls(serve):
    app = RelayApp()
    server = serve(app)
    result = await run_call(f"{server.url}/voice?scheme=wss", [Speak("Hi")], auth_token=TOKEN,
                            relay=FAST)
    assert codes(result) == [64102], result.transcript
    assert app.actions[0]["SessionStatus"] == "failed"
    await assert_next_call_answered(app)


# --- attributes Twilio refuses -----------------------------------------------------------------


@pytest.mark.parametrize(("attrs", "message"), [
    ('interruptible="sometimes"', "interruptible='sometimes'"),
    ('welcomeGreting="Hi"', "welcomeGreting"),
    ('ttsProvider="Nuance"', "ttsProvider='Nuance'"),
    ('dtmfDetection="yes"', "dtmfDetection='yes'"),
])
async def test_attributes_are_checked(attrs, message):
    app = RelayApp()
    result = await call(app, f"?attrs={attrs}", [Speak("Hi")])
    assert codes(result) == [64106]
    assert message in result.errors[0].message
    assert app.sessions == []  # no socket was opened
    assert app.actions[0]["SessionStatus"] == "failed"
    assert app.actions[0]["ErrorCode"] == "64106"


async def test_url_must_be_a_websocket():
    import xml.etree.ElementTree as ET

    from simulator.relay import parse_relay

    settings, problems = parse_relay(ET.fromstring('<ConversationRelay url="https://x/y"/>'))
    assert settings is None
    assert "must start with wss://" in problems[0]
    settings, problems = parse_relay(ET.fromstring('<ConversationRelay url="wss:///path"/>'))
    assert problems == ["<ConversationRelay url='wss:///path'>: the url names no host"]
    settings, problems = parse_relay(ET.fromstring("<ConversationRelay/>"))
    assert settings is None
    assert "needs url=" in problems[0]
    settings, problems = parse_relay(ET.fromstring(
        '<ConversationRelay url="wss://x/y"><Parameter value="1"/><Say>x</Say>'
        "</ConversationRelay>"))
    assert problems == ["<Parameter> inside <ConversationRelay> needs a name",
                        "<Say> is not allowed inside <ConversationRelay>; it may hold only "
                        "<Language> and <Parameter>"]


def test_agent_events_describe_and_round_trip():
    from simulator.model import describe, event_from_json

    event = AgentEvent("Hello", 12.5)
    assert describe(event) == '   Agent: "Hello"'
    assert event_from_json(event.to_json()) == event
    assert event_from_json(ErrorEvent(64107, "x").to_json()) == ErrorEvent(64107, "x")
    assert HangUp() == HangUp()


# --- what the simulator acquires is released: sockets, handler tasks ----------------------------


async def test_upgrade_never_answered_times_out():
    app = RelayApp()
    result = await call(app, "?mode=slowaccept", [Speak("Hi")],
                        relay=RelayOptions(connect_timeout=0.2, agent_silence=0.5, settle=0.05))
    assert codes(result) == [64102]
    assert "no answer to the upgrade within 0.2 s" in result.errors[0].message
    assert app.sessions[0].closed  # its handler task was cancelled, not left running
    await assert_next_call_answered(app)


async def test_tokens_without_last_are_heard_when_the_agent_goes_quiet():
    app = RelayApp()
    result = await call(app, "?mode=mumble", [Speak("Hi")])
    assert result.agent_said[-1] == "Well, let me think"
    assert codes(result) == []  # it said something: no silence error; the caller hangs up
    assert result.reason == "caller-hangup"


async def test_handler_ignoring_the_close_is_cancelled():
    app = RelayApp()
    result = await call(app, "?mode=stubborn", [Speak("Hi")])
    assert result.agent_said[-1] == "One moment."
    assert app.sessions[0].closed
    await assert_next_call_answered(app)


@pytest.mark.parametrize("transport", ["asgi", "uvicorn"])
async def test_closing_a_live_call_mid_session_releases_the_socket(transport, serve, phone):
    app = RelayApp()
    target = f"{serve(app).url}/voice" if transport == "uvicorn" else "/voice"
    live = phone.call(target, app=None if transport == "uvicorn" else app, auth_token=TOKEN,
                      relay=FAST)
    await live.start()
    assert await live.speak("Hello") == "You said: Hello"
    await live.aclose()  # the test walks away while the agent waits for the caller
    await _until_closed(app)
    assert app.actions == []  # a cancelled call requests nothing more
    await assert_next_call_answered(app)


async def test_interactive_caller_talks_and_interrupts():
    from simulator import InteractiveCaller

    answers = iter(["s: Hello", "i: bye"])
    out = io.StringIO()
    caller = InteractiveCaller(read=lambda question: next(answers), out=out)
    app = RelayApp()
    result = await run_call("/voice", caller, app=app, auth_token=TOKEN, relay=FAST)
    assert result.ok, result.transcript
    assert app.kinds() == ["setup", "prompt", "interrupt", "prompt"]
    assert result.agent_said[-1] == "Goodbye!"


async def test_an_httpx_asgi_client_reaches_the_socket_in_process(phone):
    import httpx

    app = RelayApp()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        live = await phone.call("/voice", client=client, auth_token=TOKEN, relay=FAST).start()
        assert await live.speak("bye") == "Goodbye!\nThanks for calling. Goodbye."
    assert app.sessions[0].signature == signature("ws://testserver/relay/good")
    assert app.bad_signatures == []


async def test_an_agent_streaming_without_end_is_cut_off(monkeypatch):
    import simulator.relay

    monkeypatch.setattr(simulator.relay, "MAX_MESSAGES", 20)
    app = RelayApp()
    result = await call(app, "?mode=flood", [Speak("Hi")])
    assert codes(result) == [64105]
    assert "more than 20 messages in one session" in result.errors[0].message
    assert result.agent_said[-1] == " ".join(["la"] * 20)  # what came was heard
    assert app.actions[0]["SessionStatus"] == "failed"
    await assert_next_call_answered(app)


def test_relay_options_are_checked():
    with pytest.raises(ValueError, match="agent_silence and connect_timeout must be more than 0"):
        RelayOptions(agent_silence=0)
    assert RelayOptions(settle=0).settle == 0


async def test_answering_the_wrong_question_at_an_agent(phone):
    from simulator import WrongInput

    live = await phone.call("/voice", app=RelayApp(), auth_token=TOKEN, relay=FAST).start()
    with pytest.raises(WrongInput, match="waiting at a ConversationRelay agent's turn, not a "
                                         "Dial; answer it with press"):
        await live.dial("busy")
    assert await live.speak("bye") == "Goodbye!\nThanks for calling. Goodbye."


async def test_interactive_question_names_the_agent():
    from simulator import InteractiveCaller

    asked: list[str] = []
    caller = InteractiveCaller(read=lambda question: asked.append(question) or "h",
                               out=io.StringIO())
    result = await run_call("/voice", caller, app=RelayApp(), auth_token=TOKEN, relay=FAST)
    assert result.reason == "caller-hangup"
    assert asked == ["  [agent] 's: words', 'i: words' to interrupt, keys, Enter = stay silent, "
                     "'h' = hang up > "]
