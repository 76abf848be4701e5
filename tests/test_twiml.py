"""Each state kind's TwiML, parsed as XML and compared with the exact golden document."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from ivrkit import (
    Client,
    Collect,
    Conference,
    Dial,
    Enqueue,
    Flow,
    FlowDefinitionError,
    Hangup,
    Menu,
    Number,
    Pause,
    Play,
    Queue,
    Record,
    Redirect,
    Reject,
    Retries,
    Say,
    Sip,
)
from ivrkit.records import CallRecord
from ivrkit.runtime import FlowRegistry, Runtime

HEAD = '<?xml version="1.0" encoding="UTF-8"?>'
URL = "https://ivr.example.com/voice/kinds/action?state={state}&amp;step=1"
NONE = "https://ivr.example.com/voice/kinds/action?state={state}&amp;step=1&amp;input=none"


def first_answer(flow: type[Flow]) -> str:
    runtime = Runtime(FlowRegistry([flow]), clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    record = CallRecord(
        call_sid="CA" + "0" * 32,
        flow=flow.name,
        flow_version=flow.version(),
        state=flow.initial_state(),
    )
    import asyncio

    result = asyncio.run(
        runtime.begin(record, {"CallSid": record.call_sid}, "https://ivr.example.com")
    )
    ET.fromstring(result.twiml)  # well-formed XML, always
    return result.twiml


def flow_with(**states) -> type[Flow]:
    return type("Kinds", (Flow,), {"name": "kinds", "give_up": "bye", "bye": Hangup(), **states})


def test_say_play_pause_chain_into_hangup():
    flow = flow_with(
        a=Say("Hi.", voice="Polly.Joanna", language="en-GB", then="b"),
        b=Play("https://x.test/a.mp3", loop=2, then="c"),
        c=Pause(2, then="bye"),
        initial="a",
    )
    assert first_answer(flow) == (
        f'{HEAD}<Response><Say language="en-GB" voice="Polly.Joanna">Hi.</Say>'
        '<Play loop="2">https://x.test/a.mp3</Play><Pause length="2" /><Hangup /></Response>'
    )


def test_menu_gather_with_redirect_for_silence():
    flow = flow_with(
        m=Menu("Press 1 or 2.", choices={"1": "bye", "2": "bye"}, timeout=7), initial="m"
    )
    assert first_answer(flow) == (
        f'{HEAD}<Response><Gather action="{URL.format(state="m")}" finishOnKey="#" '
        'input="dtmf" method="POST" numDigits="1" timeout="7"><Say>Press 1 or 2.</Say>'
        f'</Gather><Redirect method="POST">{NONE.format(state="m")}</Redirect></Response>'
    )


def test_menu_with_words_listens_for_speech():
    flow = flow_with(
        m=Menu("Say sales.", choices={"1": "bye"}, words={"sales": "bye"}, language="es-MX"),
        initial="m",
    )
    gather = ET.fromstring(first_answer(flow)).find("Gather")
    assert gather.attrib["input"] == "dtmf speech"
    assert gather.attrib["hints"] == "sales"
    assert gather.attrib["speechTimeout"] == "auto"
    assert gather.attrib["language"] == "es-MX"


def test_collect_variable_length_has_no_num_digits():
    flow = flow_with(
        c=Collect("Enter digits.", digits=(4, 10), save_as="x", then="bye"), initial="c"
    )
    gather = ET.fromstring(first_answer(flow)).find("Gather")
    assert "numDigits" not in gather.attrib
    assert gather.attrib["finishOnKey"] == "#"


def test_dial_every_noun():
    flow = flow_with(
        d=Dial(
            Number("+15550001", send_digits="ww1"),
            Client("alice"),
            Sip("sip:a@x.test"),
            timeout=15,
            caller_id="+15550002",
            time_limit=600,
            record=True,
            on={"*": "bye"},
        ),
        initial="d",
    )
    assert first_answer(flow) == (
        f'{HEAD}<Response><Dial action="{URL.format(state="d")}" callerId="+15550002" '
        'method="POST" record="record-from-answer" timeLimit="600" timeout="15">'
        '<Number sendDigits="ww1">+15550001</Number><Client>alice</Client>'
        "<Sip>sip:a@x.test</Sip></Dial></Response>"
    )


@pytest.mark.parametrize(
    ("target", "xml"),
    [
        (
            Conference("room1"),
            '<Conference endConferenceOnExit="false" startConferenceOnEnter="true">'
            "room1</Conference>",
        ),
        (Queue("support"), "<Queue>support</Queue>"),
    ],
)
def test_dial_conference_and_queue(target, xml):
    flow = flow_with(d=Dial(target, on={"*": "bye"}), initial="d")
    assert xml in first_answer(flow)


def test_record_with_action_callback_and_fallthrough():
    flow = flow_with(r=Record("Speak.", max_length=60, transcribe=True, then="bye"), initial="r")
    assert first_answer(flow) == (
        f'{HEAD}<Response><Say>Speak.</Say><Record action="{URL.format(state="r")}" '
        'finishOnKey="1234567890*#" maxLength="60" method="POST" playBeep="true" '
        'recordingStatusCallback="https://ivr.example.com/voice/kinds/recording?state=r&amp;'
        'step=1" recordingStatusCallbackMethod="POST" timeout="5" transcribe="true" />'
        f'<Redirect method="POST">{NONE.format(state="r")}</Redirect></Response>'
    )


def test_enqueue_with_our_hold_endpoint():
    flow = flow_with(q=Enqueue("support", on={"*": "bye"}), initial="q")
    assert first_answer(flow) == (
        f'{HEAD}<Response><Enqueue action="{URL.format(state="q")}" method="POST" '
        'waitUrl="https://ivr.example.com/voice/kinds/hold?state=q&amp;step=1" '
        'waitUrlMethod="POST">support</Enqueue></Response>'
    )


def test_reject_redirect_and_hangup_with_goodbye():
    assert first_answer(flow_with(r=Reject("busy"), initial="r")) == (
        f'{HEAD}<Response><Reject reason="busy" /></Response>'
    )
    assert first_answer(flow_with(r=Redirect("https://other.test/twiml"), initial="r")) == (
        f'{HEAD}<Response><Redirect method="POST">https://other.test/twiml</Redirect></Response>'
    )
    assert first_answer(flow_with(h=Hangup("Bye & thanks."), initial="h")) == (
        f"{HEAD}<Response><Say>Bye &amp; thanks.</Say><Hangup /></Response>"
    )


def test_prompt_text_is_escaped_not_injected():
    flow = flow_with(s=Say("</Say><Dial>+1900</Dial>", then="bye"), initial="s")
    root = ET.fromstring(first_answer(flow))
    assert [child.tag for child in root] == ["Say", "Hangup"]


def test_menu_retries_limits_must_be_positive():
    with pytest.raises(FlowDefinitionError, match=r"m: retries.no_input: 0 is out of range"):
        flow_with(m=Menu("Press 1.", choices={"1": "bye"}, retries=Retries(no_input=0)))
