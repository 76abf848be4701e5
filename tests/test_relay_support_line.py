"""support_line's assistant end to end: real uvicorn, a real WebSocket client speaking
Twilio's side of ConversationRelay, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from flows.support_line import SupportLine
from ivrkit import Settings, create_app
from ivrkit.sensitive import reveal
from tests.conftest import OPEN_HOURS, reset_database
from tests.driver import TOKEN, PhoneCall
from tests.relay_support import call_at_agent, relay_of, twilio_side, uvicorn_serving

ACCOUNT = "40718263"
OPENING = "Say what you need, or press 0 for an operator."


@pytest.fixture
def live(database_url: str) -> Callable[..., Any]:
    """``async with live(flows) as (app, base, client)``: the app under real uvicorn."""

    @asynccontextmanager
    async def running(flows: list[Any], **settings: Any) -> AsyncIterator[Any]:
        await reset_database(database_url)
        settings.setdefault("auth_token", TOKEN)
        config = Settings(database_url=database_url, **settings)
        app = create_app(flows, settings=config, clock=lambda: OPEN_HOURS)
        async with uvicorn_serving(app) as base, httpx.AsyncClient(timeout=30) as client:
            yield app, base, client

    return running


async def test_billing_question_hands_the_account_to_the_billing_menu(live):
    async with live([SupportLine]) as (app, base, client):
        call, url, action = await call_at_agent(client, base)
        assert url.startswith("ws://127.0.0.1:")
        assert f"call={call.sid}" in url
        async with twilio_side(url, call.sid) as twilio:
            assert await twilio.utterance() == OPENING  # "I have a question" names no intent
            await twilio.say("I have a question about my bill")
            assert await twilio.utterance() == "I can help with your bill."
            assert await twilio.utterance() == "What is your eight digit account number?"
            await twilio.say("it is four oh seven one 8 2 6 3")
            handoff = await twilio.until_end()
        # The account was checked and kept by ivrkit: it does not travel through Twilio.
        assert handoff == '{"handoff": "billing", "account": "ivrkit:kept"}'
        menu = await call.post(action, **twilio.action_params())
        assert menu.said() == ["Billing. To hear your balance press 1. For an operator press 0."]
        balance = await call.press("1")
        assert balance.said()[0] == "The balance of the account ending in 6, 3 is 42 dollars."
        record = await app.ivr.store.load(call.sid)
        assert record.state == "billing_menu"
        assert reveal(record.data["account"]) == ACCOUNT  # kept encrypted, readable with the key
        assert record.data["agent_session"]["handoff"] == "billing"
        events = await app.ivr.store.call_events(call.sid)
        turns = [(e.kind, e.params["text"]) for e in events if e.kind in ("caller", "agent")]
        assert turns == [
            ("agent", "Say what you need, or press **** for an operator."),  # numbers masked
            ("caller", "I have a question about my bill"),
            ("agent", "I can help with your bill."),
            ("agent", "What is your **** digit account number?"),
            ("caller", "it is ****"),
            ("agent", "(hand-off billing)"),
        ]
        (relay,) = [e for e in events if e.kind == "relay"]
        assert relay.params["outcome"] == "ended"
        # The account number is nowhere in clear: not in the row, the events, the TwiML.
        text = repr(record) + repr(events)
        assert ACCOUNT not in text
        assert "4 0 7 1" not in text
        assert app.ivr.relay.active == 0
        assert not app.ivr.relay.tasks


async def test_simple_question_is_answered_and_pressing_0_reaches_the_operator(live):
    async with live([SupportLine]) as (app, base, client):
        call, url, action = await call_at_agent(client, base)
        async with twilio_side(url, call.sid) as twilio:
            assert await twilio.utterance() == OPENING  # "I have a question" names no intent
            await twilio.say("When are you open?")
            assert await twilio.utterance() == (
                "Support is open Monday to Friday 9 to 5, and Saturday 10 to 2."
            )
            await twilio.press("0")
            assert await twilio.until_end() == '{"handoff": "operator"}'
        answer = await call.post(action, **twilio.action_params())
        assert answer.find("Dial").find("Number").text == "+15005550199"


async def test_asking_for_a_person_reaches_the_operator(live):
    async with live([SupportLine]) as (app, base, client):
        call, url, action = await call_at_agent(client, base)
        async with twilio_side(url, call.sid) as twilio:
            assert await twilio.utterance() == OPENING  # "I have a question" names no intent
            await twilio.say("Can I talk to a person")
            assert await twilio.utterance() == "Sure, let me put you through."
            assert await twilio.until_end() == '{"handoff": "operator"}'
        answer = await call.post(action, **twilio.action_params())
        assert answer.verbs == ["Dial"]


async def test_a_caller_not_understood_three_times_is_passed_on(live):
    async with live([SupportLine]) as (app, base, client):
        call, url, action = await call_at_agent(client, base)
        async with twilio_side(url, call.sid) as twilio:
            assert await twilio.utterance() == OPENING  # "I have a question" names no intent
            for _ in range(2):
                await twilio.say("blue elephants")
                assert (await twilio.utterance()).startswith("Sorry, I did not get that.")
            await twilio.say("purple")
            assert await twilio.utterance() == "Let me pass you to someone who can help."
            assert await twilio.until_end() == '{"handoff": "operator"}'


async def test_caller_hanging_up_mid_session_releases_it_and_saves_the_transcript(live):
    async with live([SupportLine]) as (app, base, client):
        call, url, action = await call_at_agent(client, base)
        async with twilio_side(url, call.sid) as twilio:
            assert await twilio.utterance() == OPENING  # "I have a question" names no intent
            await twilio.say("I have a question about my bill")
            await twilio.utterance()
        # The caller hung up: Twilio closed the socket and reports the session completed.
        for _ in range(200):
            if app.ivr.relay.active == 0:
                break
            await asyncio.sleep(0.02)
        assert app.ivr.relay.active == 0
        assert not app.ivr.relay.tasks
        answer = await call.post(action, **twilio.action_params("completed"))
        assert answer.verbs == ["Hangup"]
        events = await app.ivr.store.call_events(call.sid)
        (relay,) = [e for e in events if e.kind == "relay"]
        assert relay.params["outcome"] == "caller left"
        assert ("caller", "I have a question about my bill") in [
            (e.kind, e.params.get("text")) for e in events
        ]


async def test_a_failed_session_goes_to_the_operator(live):
    async with live([SupportLine]) as (app, base, client):
        call, _, action = await call_at_agent(client, base)
        failed = await call.post(
            action,
            SessionId="VX" + "a" * 32,
            SessionStatus="failed",
            SessionDuration="3",
            ErrorCode="39001",
        )
        assert failed.verbs == ["Dial"]
        record = await app.ivr.store.load(call.sid)
        assert record.data["agent_session"]["error"] == "39001"


async def test_an_invalid_handoff_goes_to_star_with_one_log_line(live, caplog):
    async with live([SupportLine]) as (app, base, client):
        call, _, action = await call_at_agent(client, base)
        caplog.set_level(logging.WARNING, logger="ivrkit.relay")
        answer = await call.post(
            action,
            SessionId="VX" + "b" * 32,
            SessionStatus="ended",
            SessionDuration="9",
            HandoffData='{"handoff": "billing", "account": "123"}',  # not 8 digits
        )
        assert answer.find("Gather").find("Say").text.startswith("For sales press 1.")
        lines = [r.getMessage() for r in caplog.records if r.name == "ivrkit.relay"]
        assert len(lines) == 1
        assert "BillingHandoff refused it: account is 8 digits" in lines[0]
        assert "123" not in lines[0].replace(call.sid, "")
        record = await app.ivr.store.load(call.sid)
        assert "account" not in record.data


@pytest.mark.parametrize(
    ("handoff", "reason"),
    [
        ("not json", "HandoffData is not JSON"),
        ("[1]", "not a JSON object"),
        ('{"handoff": "sales"}', "hand-off key 'sales' is not one of billing, operator"),
        ('{"account": "12345678"}', "hand-off key missing"),
        ('{"handoff": "billing"}', "BillingHandoff needs field 'account'"),
        ('{"handoff": "billing", "account": 12345678}', "field 'account' of BillingHandoff"),
        ('{"handoff": "billing", "account": "12345678", "x": 1}', "field 'x' is not in"),
    ],
)
async def test_handoffs_that_do_not_fit_go_to_star(serve, caplog, handoff, reason):
    async with serve([SupportLine]) as (app, client):
        call = PhoneCall(client=client, flow="support_line")
        await call.start()
        answer = await call.speak("question")
        _, action, _ = relay_of(answer.body)
        caplog.set_level(logging.WARNING, logger="ivrkit.relay")
        back = await call.post(
            action,
            SessionId="VX" + "c" * 32,
            SessionStatus="ended",
            SessionDuration="1",
            HandoffData=handoff,
        )
        assert back.find("Gather").attrib["action"].endswith("state=main_menu&step=3")
        (line,) = [r.getMessage() for r in caplog.records if r.name == "ivrkit.relay"]
        assert reason in line


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("SessionId", "CA" + "0" * 32, "SessionId"),
        ("SessionId", "VX123", "SessionId"),
        ("SessionStatus", "done", "SessionStatus 'done' is not one of Twilio's"),
        ("SessionDuration", "1.5", "SessionDuration '1.5' is not a whole number"),
    ],
)
async def test_connect_action_fields_are_checked_before_the_store(serve, field, value, reason):
    async with serve([SupportLine]) as (app, client):
        call = PhoneCall(client=client, flow="support_line")
        await call.start()
        answer = await call.speak("question")
        _, action, _ = relay_of(answer.body)
        fields = {"SessionId": "VX" + "d" * 32, "SessionStatus": "ended", "SessionDuration": "1"}
        fields[field] = value
        refused = await call.post(action, **fields)
        assert refused.status == 400
        assert reason in refused.body
        record = await app.ivr.store.load(call.sid)
        assert record.state == "assistant"  # nothing moved


async def test_billing_menu_paths(serve):
    """The billing menu's own outcomes: silence, a wrong key, star, 0 and giving up."""
    async with serve([SupportLine]) as (app, client):
        call = PhoneCall(client=client, flow="support_line")
        await call.start()
        answer = await call.speak("my bill please")
        _, action, _ = relay_of(answer.body)
        await call.post(
            action,
            SessionId="VX" + "e" * 32,
            SessionStatus="ended",
            SessionDuration="5",
            HandoffData=f'{{"handoff": "billing", "account": "{ACCOUNT}"}}',
        )
        assert (await call.press("*")).said() == [
            "Billing. To hear your balance press 1. For an operator press 0."
        ]
        assert (await call.silence()).said()[0] == "Sorry, I didn't hear anything."
        assert (await call.press("7")).said()[0] == "Sorry, that is not a valid choice."
        assert (await call.press("8")).verbs == ["Dial"]  # second wrong key: give up
        record = await app.ivr.store.load(call.sid)
        assert record.state == "operator"


async def test_zero_in_the_billing_menu_reaches_the_operator(serve):
    async with serve([SupportLine]) as (app, client):
        call = PhoneCall(client=client, flow="support_line")
        await call.start()
        answer = await call.speak("bill")
        _, action, _ = relay_of(answer.body)
        await call.post(
            action,
            SessionId="VX" + "f" * 32,
            SessionStatus="ended",
            SessionDuration="5",
            HandoffData=f'{{"handoff": "billing", "account": "{ACCOUNT}"}}',
        )
        assert (await call.press("0")).verbs == ["Dial"]


async def test_the_assistant_twiml(serve):
    async with serve([SupportLine]) as (app, client):
        call = PhoneCall(client=client, flow="support_line")
        await call.start()
        answer = await call.speak("I have a question")
        assert answer.status == 200
        assert answer.body == (
            '<?xml version="1.0" encoding="UTF-8"?><Response>'
            '<Connect action="http://testserver/voice/support_line/action?state=assistant&amp;'
            'step=2" method="POST"><ConversationRelay dtmfDetection="true" '
            'hints="bill, invoice, opening hours" url="ws://testserver/voice/support_line/'
            f'relay?state=assistant&amp;step=2&amp;call={call.sid}" welcomeGreeting="Sure.">'
            '<Parameter name="request" value="I have a question" /></ConversationRelay>'
            "</Connect></Response>"
        )


async def test_the_words_that_reached_the_assistant_are_acted_on_at_once(live):
    async with live([SupportLine]) as (app, base, client):
        call = PhoneCall(client=client, flow="support_line")
        await call.post(f"{base}/voice/support_line")
        answer = await call.speak("I have a question about my bill")
        url, action, relay = relay_of(answer.body)
        (request,) = relay.findall("Parameter")
        assert request.attrib == {"name": "request", "value": "I have a question about my bill"}
        parameters = {request.attrib["name"]: request.attrib["value"]}
        async with twilio_side(url, call.sid, parameters=parameters) as twilio:
            assert await twilio.utterance() == "I can help with your bill."
            assert await twilio.utterance() == "What is your eight digit account number?"
            await twilio.say(" ".join(ACCOUNT))
            await twilio.until_end()
        menu = await call.post(action, **twilio.action_params())
        assert menu.said() == ["Billing. To hear your balance press 1. For an operator press 0."]


async def test_a_kept_marker_without_a_kept_secret_goes_to_star(serve, caplog):
    """A forged (or replayed) <Connect action> cannot claim a secret the session never kept."""
    async with serve([SupportLine]) as (app, client):
        call = PhoneCall(client=client, flow="support_line")
        await call.start()
        _, action, _ = relay_of((await call.speak("bill")).body)
        caplog.set_level(logging.WARNING, logger="ivrkit.relay")
        back = await call.post(
            action,
            SessionId="VX" + "9" * 32,
            SessionStatus="ended",
            SessionDuration="1",
            HandoffData='{"handoff": "billing", "account": "ivrkit:kept"}',
        )
        assert back.find("Gather").attrib["action"].endswith("state=main_menu&step=3")
        (line,) = [r.getMessage() for r in caplog.records if r.name == "ivrkit.relay"]
        assert "field 'account' was not kept by the session" in line
        assert "account" not in (await app.ivr.store.load(call.sid)).data
