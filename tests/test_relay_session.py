"""The relay WebSocket's failure paths: every one releases the session and its tasks, and
the next session is served. Real uvicorn, a real WebSocket client, SQLite (the paths do not
depend on the store; the store side is covered on both in test_relay_support_line)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ivrkit import (
    Agent,
    AgentSession,
    Flow,
    Hangup,
    Language,
    Say,
    Settings,
    create_app,
    matches,
)
from ivrkit.relay.protocol import Dtmf, Interrupt, Message, Prompt
from tests.conftest import OPEN_HOURS
from tests.driver import TOKEN, PhoneCall, signed_headers
from tests.relay_support import relay_of, signature, twilio_side, uvicorn_serving


def lab_flow(agent: Any, **options: Any) -> type[Flow]:
    options.setdefault("reply_timeout", 0.5)

    class Lab(Flow):
        name = "lab"
        hello = Say("Hi.", then="talk")
        talk = Agent(
            agent,
            welcome="Go ahead.",
            on={"done": "bye", "*": "bye"},
            on_failure="sorry",
            on_hangup=Hangup(),
            **options,
        )
        bye = Hangup("Bye.")
        sorry = Hangup("Sorry, something went wrong.")

    return Lab


@asynccontextmanager
async def lab(agent: Any, tmp_path: Any, **options: Any) -> AsyncIterator[Any]:
    settings: dict[str, Any] = {"auth_token": TOKEN}
    settings.update(options.pop("settings", {}))
    config = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", **settings)
    app = create_app([lab_flow(agent, **options)], settings=config, clock=lambda: OPEN_HOURS)
    async with uvicorn_serving(app) as base, httpx.AsyncClient(timeout=30) as client:
        yield app, base, client


async def new_call(client: httpx.AsyncClient, base: str, token: str = TOKEN) -> Any:
    call = PhoneCall(client=client, flow="lab", token=token)
    answer = await call.post(f"{base}/voice/lab")
    url, action, element = relay_of(answer.body)
    return call, url, action, element


async def released(app: Any) -> None:
    """Wait (bounded) for the session to give everything back, then assert it did."""
    for _ in range(250):
        if app.ivr.relay.active == 0 and not app.ivr.relay.tasks:
            break
        await asyncio.sleep(0.02)
    assert app.ivr.relay.active == 0
    assert not app.ivr.relay.tasks


async def echo(session: AgentSession, message: Message) -> None:
    if isinstance(message, Prompt):
        if message.text == "done":
            session.end("done", said=len(session.transcript.turns))
            return
        await session.say(f"You said {message.text}.")


async def next_session_works(app: Any, base: str, client: httpx.AsyncClient) -> None:
    """A fresh call gets a working session (only for labs whose agent echoes)."""
    call, url, action, _ = await new_call(client, base)
    async with twilio_side(url, call.sid) as twilio:
        await twilio.say("done")
        assert json.loads(await twilio.until_end())["handoff"] == "done"
    assert (await call.post(action, **twilio.action_params())).said() == ["Bye."]
    await released(app)


async def test_twiml_carries_the_typed_attributes(tmp_path):
    async with lab(
        echo,
        tmp_path,
        language="en-GB",
        languages=[Language("sv-SE", tts_provider="Google", voice="sv-SE-Standard-A")],
        tts_provider="Google",
        voice="en-GB-Journey-D",
        transcription_provider="Deepgram",
        speech_model="nova-3-general",
        interruptible="speech",
        welcome_interruptible=False,
        interrupt_sensitivity="low",
        parameters=["customer"],
        settings={"public_url": "https://ivr.example.com"},
    ) as (app, base, client):
        call = PhoneCall(client=client, flow="lab")
        params = call.params()
        url = "https://ivr.example.com/voice/lab"
        response = await client.post(
            f"{base}/voice/lab", data=params, headers=signed_headers(url, params)
        )
        _, action, element = relay_of(response.text)
        assert element.attrib == {
            "url": f"wss://ivr.example.com/voice/lab/relay?state=talk&step=1&call={call.sid}",
            "welcomeGreeting": "Go ahead.",
            "welcomeGreetingInterruptible": "none",
            "language": "en-GB",
            "ttsProvider": "Google",
            "voice": "en-GB-Journey-D",
            "transcriptionProvider": "Deepgram",
            "speechModel": "nova-3-general",
            "interruptible": "speech",
            "interruptSensitivity": "low",
        }
        (language,) = element.findall("Language")
        assert language.attrib == {
            "code": "sv-SE",
            "ttsProvider": "Google",
            "voice": "sv-SE-Standard-A",
        }
        assert element.findall("Parameter") == []  # call.data has no "customer" yet
        assert action == "https://ivr.example.com/voice/lab/action?state=talk&step=1"


async def test_agent_that_raises_ends_the_session_as_failed(tmp_path, caplog):
    async def broken(session: AgentSession, message: Message) -> None:
        raise ValueError("no model today")

    async with lab(broken, tmp_path) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        caplog.set_level(logging.ERROR, logger="ivrkit.relay")
        async with twilio_side(url, call.sid) as twilio:
            await twilio.say("hello")
            handoff = json.loads(await twilio.until_end())
        assert handoff == {
            "handoff": "ivrkit_failed",
            "reason": "agent raised ValueError: no model today",
        }
        (line,) = [r.getMessage() for r in caplog.records if r.name == "ivrkit.relay"]
        assert "agent talk failed: agent raised ValueError: no model today" in line
        await released(app)
        answer = await call.post(action, **twilio.action_params())
        assert answer.said() == ["Sorry, something went wrong."]
        record = await app.ivr.store.load(call.sid)
        assert record.data["agent_session"]["error"].startswith("agent raised ValueError")


async def test_agent_that_hangs_is_cut_off_at_its_reply_timeout(tmp_path):
    stuck = asyncio.Event()

    async def hanging(session: AgentSession, message: Message) -> None:
        if isinstance(message, Prompt) and message.text == "done":
            session.end("done")
            return
        try:
            await asyncio.sleep(3600)
        finally:
            stuck.set()  # it was cancelled, not left running

    async with lab(hanging, tmp_path, reply_timeout=0.3) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        async with twilio_side(url, call.sid) as twilio:
            await twilio.say("hello")
            handoff = json.loads(await twilio.until_end())
        assert handoff["reason"] == "no answer within reply_timeout=0.3 s"
        assert stuck.is_set()
        await released(app)
        assert (await call.post(action, **twilio.action_params())).said()[0].startswith("Sorry")
        await next_session_works(app, base, client)


async def test_interrupt_cancels_the_reply_being_spoken(tmp_path):
    cancelled = asyncio.Event()
    seen: list[str] = []

    async def talker(session: AgentSession, message: Message) -> None:
        seen.append(type(message).__name__)
        if isinstance(message, Prompt) and message.text == "done":
            session.end("done")
        elif isinstance(message, Prompt):
            try:
                for index in range(1000):
                    await session.say(f"word{index} ", last=False)
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    async with lab(talker, tmp_path, reply_timeout=30) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        async with twilio_side(url, call.sid) as twilio:
            await twilio.say("tell me a story")
            first = json.loads(await twilio.socket.recv())
            assert first == {"type": "text", "token": "word0 ", "last": False}
            await twilio.interrupt("word0")
            await asyncio.wait_for(cancelled.wait(), 10)
            await twilio.say("done")
            while True:  # tokens already on their way, then the end
                message = json.loads(await twilio.socket.recv())
                if message["type"] == "end":
                    break
        assert seen == ["Prompt", "Interrupt", "Prompt"]
        await released(app)
        events = await app.ivr.store.call_events(call.sid)
        kinds = [(e.kind, e.params.get("text", "")) for e in events if e.kind != "relay"]
        agent_lines = [text for kind, text in kinds if kind == "agent"]
        assert agent_lines[0].startswith("word0")
        assert agent_lines[0].endswith(" ...")
        assert ("caller", "(interrupted)") in kinds


async def test_bad_messages_are_dropped_until_ten_in_a_row(tmp_path, caplog):
    async with lab(echo, tmp_path) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        caplog.set_level(logging.WARNING, logger="ivrkit")
        async with twilio_side(url, call.sid) as twilio:
            for garbage in ("{", "[]", '{"type": "prompt"}', '{"type": "dtmf", "digit": "12"}'):
                await twilio.socket.send(garbage)
            await twilio.say("still here")
            assert await twilio.utterance() == "You said still here."
            for _ in range(10):
                await twilio.socket.send("not json")
            handoff = json.loads(await twilio.until_end())
        assert handoff["reason"] == "10 bad messages from Twilio in a row"
        await released(app)
        await next_session_works(app, base, client)


async def test_unsigned_and_wrongly_signed_upgrades_are_refused_with_403(tmp_path, caplog):
    async with lab(echo, tmp_path) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        caplog.set_level(logging.WARNING, logger="ivrkit")
        for headers in ({}, {"X-Twilio-Signature": signature(url, "another-token")}):
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403
        # Signed, but for another call: the URL's call is signed, so it cannot be swapped.
        other = url.replace(call.sid, "CA" + "9" * 32)
        with pytest.raises(InvalidStatus):
            async with websockets.connect(
                other, additional_headers={"X-Twilio-Signature": signature(url)}
            ):
                pass
        lines = [r.getMessage() for r in caplog.records if "refused relay" in r.getMessage()]
        assert len(lines) >= 1
        assert all("X-Twilio-Signature missing or wrong" in line for line in lines)
        assert app.ivr.relay.active == 0
        await next_session_works(app, base, client)


async def test_insecure_dev_accepts_unsigned_sessions(tmp_path):
    settings = {"auth_token": None, "insecure_dev": True}
    async with lab(echo, tmp_path, settings=settings) as (app, base, client):
        call, url, action, _ = await new_call(client, base, token="unused")
        async with twilio_side(url, call.sid, token=None) as twilio:
            await twilio.say("hi")
            assert await twilio.utterance() == "You said hi."


@pytest.mark.parametrize(
    "setup",
    [
        {"type": "setup", "sessionId": "VX" + "1" * 32, "callSid": "CA" + "2" * 32},
        {"type": "prompt", "voicePrompt": "hi"},
        "not json",
    ],
)
async def test_a_wrong_first_message_closes_the_socket(tmp_path, setup):
    async with lab(echo, tmp_path) as (app, base, client):
        call, url, _, _ = await new_call(client, base)
        async with twilio_side(url, call.sid, setup=False) as twilio:
            await twilio.socket.send(setup if isinstance(setup, str) else json.dumps(setup))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(twilio.socket.recv(), 10)
            assert closed.value.rcvd.code == 1008
        await released(app)
        await next_session_works(app, base, client)


async def test_no_setup_in_time_closes_the_socket(tmp_path):
    async with lab(echo, tmp_path) as (app, base, client):
        app.ivr.relay.setup_timeout = 0.2
        call, url, _, _ = await new_call(client, base)
        async with twilio_side(url, call.sid, setup=False) as twilio:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(twilio.socket.recv(), 10)
            assert closed.value.rcvd.code == 1008
        await released(app)


async def test_a_session_for_a_step_already_left_is_refused(tmp_path):
    async with lab(echo, tmp_path) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        async with twilio_side(url, call.sid) as twilio:
            await twilio.say("done")
            await twilio.until_end()
        await call.post(action, **twilio.action_params())
        async with twilio_side(url, call.sid) as again:  # the same signed URL, replayed
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(again.socket.recv(), 10)
            assert closed.value.rcvd.code == 1008
        await released(app)


async def test_server_shutdown_mid_session_releases_it(tmp_path):
    started = asyncio.Event()

    async def slow(session: AgentSession, message: Message) -> None:
        started.set()
        await asyncio.sleep(3600)

    async with lab(slow, tmp_path, reply_timeout=120) as (app, base, client):
        call, url, _, _ = await new_call(client, base)
        socket = await websockets.connect(
            url, additional_headers={"X-Twilio-Signature": signature(url)}
        )
        await socket.send(
            json.dumps({"type": "setup", "sessionId": "VX" + "3" * 32, "callSid": call.sid})
        )
        await socket.send(json.dumps({"type": "prompt", "voicePrompt": "hi", "last": True}))
        await asyncio.wait_for(started.wait(), 10)
        assert app.ivr.relay.active == 1
    # uvicorn has shut down: the session was closed and everything given back.
    assert app.ivr.relay.active == 0
    assert not app.ivr.relay.tasks
    await socket.close()


class Concierge:
    """A class agent: speaks first (start), then plays, sends digits, switches language."""

    async def start(self, session: AgentSession) -> None:
        await session.say(f"Hello {session.parameters.get('customer', 'there')}.")

    async def handle(self, session: AgentSession, message: Message) -> None:
        if isinstance(message, Dtmf):
            await session.send_digits("1w2#")
        elif isinstance(message, Prompt) and message.text == "music":
            await session.play("https://example.com/jingle.mp3", loop=2)
        elif isinstance(message, Prompt) and message.text == "svenska":
            await session.switch_language(tts="sv-SE", transcription="sv-SE")
        elif isinstance(message, Prompt) and message.text == "bad digits":
            await session.send_digits("12x")
        elif isinstance(message, Interrupt):
            return
        else:
            session.end("done")


async def test_a_class_agent_plays_sends_digits_and_switches_language(tmp_path):
    async with lab(Concierge, tmp_path, dtmf_detection=True) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        async with twilio_side(url, call.sid) as twilio:
            assert await twilio.utterance() == "Hello there."
            await twilio.say("music")
            await twilio.press("5")
            await twilio.say("svenska")
            await twilio.say("bad digits")
            handoff = json.loads(await twilio.until_end())
        assert twilio.other == [
            {"type": "play", "source": "https://example.com/jingle.mp3", "loop": 2},
            {"type": "sendDigits", "digits": "1w2#"},
            {"type": "language", "ttsLanguage": "sv-SE", "transcriptionLanguage": "sv-SE"},
        ]
        assert handoff["reason"].startswith("agent raised ValueError: send_digits takes only")
        await released(app)


async def test_caller_leaving_while_the_agent_speaks_is_not_an_agent_failure(tmp_path, caplog):
    speaking = asyncio.Event()

    async def talker(session: AgentSession, message: Message) -> None:
        if isinstance(message, Prompt):
            for index in range(10_000):
                await session.say(f"word{index} ", last=False)
                speaking.set()
                await asyncio.sleep(0.005)

    async with lab(talker, tmp_path, reply_timeout=60) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        caplog.set_level(logging.ERROR, logger="ivrkit.relay")
        async with twilio_side(url, call.sid) as twilio:
            await twilio.say("talk to me")
            await asyncio.wait_for(speaking.wait(), 10)
        await released(app)
        assert not [r for r in caplog.records if r.name == "ivrkit.relay"]
        events = await app.ivr.store.call_events(call.sid)
        (relay,) = [e for e in events if e.kind == "relay"]
        assert relay.params["outcome"] == "caller left"
        answer = await call.post(action, **twilio.action_params("completed"))
        assert answer.verbs == ["Hangup"]


async def test_twilio_error_messages_are_logged_and_the_session_goes_on(tmp_path, caplog):
    async with lab(echo, tmp_path) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        caplog.set_level(logging.WARNING, logger="ivrkit")
        async with twilio_side(url, call.sid) as twilio:
            await twilio.socket.send(
                json.dumps({"type": "error", "description": "Invalid message received: x"})
            )
            await twilio.say("hi")
            assert await twilio.utterance() == "You said hi."
        lines = [r.getMessage() for r in caplog.records if "Twilio says" in r.getMessage()]
        assert lines == [
            f"call {call.sid}: Twilio says a message of agent talk was wrong: "
            "Invalid message received: x"
        ]
        await released(app)


class Unmakeable:
    def __init__(self) -> None:
        raise RuntimeError("no API key")

    async def handle(self, session: AgentSession, message: Message) -> None:
        """Never reached."""


async def test_an_agent_class_that_cannot_be_made_fails_the_session(tmp_path, caplog):
    async with lab(Unmakeable, tmp_path) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        caplog.set_level(logging.ERROR, logger="ivrkit.relay")
        async with twilio_side(url, call.sid) as twilio:
            handoff = json.loads(await twilio.until_end())
        assert handoff == {
            "handoff": "ivrkit_failed",
            "reason": "agent could not be created: RuntimeError: no API key",
        }
        (line,) = [r.getMessage() for r in caplog.records if r.name == "ivrkit.relay"]
        assert line.endswith("agent talk: agent could not be created: RuntimeError: no API key")
        await released(app)
        assert (await call.post(action, **twilio.action_params())).said()[0].startswith("Sorry")


async def test_a_second_socket_for_a_call_in_session_is_refused(tmp_path):
    async with lab(echo, tmp_path) as (app, base, client):
        call, url, action, _ = await new_call(client, base)
        async with twilio_side(url, call.sid) as first:
            await first.say("hi")
            assert await first.utterance() == "You said hi."
            async with twilio_side(url, call.sid) as second:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(second.socket.recv(), 10)
                assert closed.value.rcvd.code == 1008
            await first.say("still me")
            assert await first.utterance() == "You said still me."
            await first.say("done")
            await first.until_end()
        await released(app)
        assert not app.ivr.relay.calls


@dataclass
class Card:
    account: str
    note: str = ""

    def __post_init__(self) -> None:
        if len(self.account) != 8:
            raise ValueError("account is 8 digits")


async def test_secrets_are_kept_by_the_session_and_never_sent_to_twilio(tmp_path, caplog):
    async def hand(session: AgentSession, message: Message) -> None:
        if isinstance(message, Prompt):
            session.end("done", account=message.text, note="n")

    async with lab(
        hand, tmp_path, handoff={"done": Card, "*": Card}, secrets=("account",), keep="hash"
    ) as (app, base, client):
        for account, outcome in (("24681357", "Bye."), ("1357", "Bye.")):
            call, url, action, _ = await new_call(client, base)
            async with twilio_side(url, call.sid) as twilio:
                await twilio.say(account)
                handoff = json.loads(await twilio.until_end())
            assert account not in json.dumps(handoff)
            answer = await call.post(action, **twilio.action_params())
            record = await app.ivr.store.load(call.sid)
            if len(account) == 8:  # valid: kept as a hash before `end` was sent
                assert handoff == {"handoff": "done", "account": "ivrkit:kept", "note": "n"}
                assert matches(record.data["account"], account)
            else:  # invalid: sent masked, refused at the action, "*"
                assert handoff == {"handoff": "done", "account": "****", "note": "n"}
                assert "account" not in record.data
            assert answer.said() == [outcome]
            await released(app)
