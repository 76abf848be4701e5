"""An Agent state is checked when its flow is defined: wrong arguments (IVR000) and the
agent rules (IVR060-IVR062) name the file, line, flow, state and fix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, TypedDict

import pytest

from ivrkit import Agent, Flow, FlowDefinitionError, Hangup, Intent, KeywordAgent, Language
from ivrkit.relay.handoff import HandoffProblem, check_schema
from ivrkit.rules import WARNING

AGENT = KeywordAgent([Intent("billing", words=("bill",), handoff="billing")], give_up="person")


def problems(**arguments: object) -> list[str]:
    options: dict[str, object] = {"on": {"billing": "bye", "person": "bye", "*": "bye"}}
    options.update(arguments)
    agent = options.pop("agent", AGENT)
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            talk = Agent(agent, on_failure="bye", on_hangup=Hangup(), **options)  # type: ignore[arg-type]
            bye = Hangup()

    findings = caught.value.findings
    assert all(f.code == "IVR000" for f in findings)
    assert all(f.file == "tests/test_relay_definition.py" and f.line > 0 for f in findings)
    assert all((f.flow, f.state) == ("Line", "talk") for f in findings)
    return [f"{f.message} ({f.fix})" for f in findings]


@dataclass
class Billing:
    account: str


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"on": {"billing": "bye"}}, 'on: no "*" (add "*": where an unknown key'),
        ({"on": {"Billing!": "bye", "*": "bye"}}, 'hand-off key "Billing!" is a str'),
        ({"on": {"ivrkit_failed": "bye", "*": "bye"}}, "use on_failure="),
        ({"on": ["bye"]}, "on: ['bye'] is a list (expected a dict like"),
        ({"on": {"billing": 3, "*": "bye"}}, "on['billing']: 3 is an int"),
        ({"agent": "not an agent"}, 'agent: "not an agent" is a str (expected an async function'),
        ({"interruptible": "sometimes"}, 'interruptible: "sometimes" is a str (expected one of'),
        ({"tts_provider": "Polly"}, 'expected one of "Google", "Amazon", "ElevenLabs"'),
        ({"reply_timeout": 0}, "reply_timeout: 0 is an int (expected seconds over 0"),
        ({"dtmf_detection": "yes"}, "dtmf_detection"),
        ({"handoff": {"sales": Billing}}, "handoff['sales']: is not a key of on="),
        ({"handoff": {"billing": dict}}, "expected a dataclass or a TypedDict class"),
        ({"handoff": 3}, "handoff: 3 is an int"),
        ({"languages": "sv-SE"}, 'languages: "sv-SE" is a str (expected a list of Language'),
        ({"languages": [Language("")]}, "languages[0].code"),
        ({"secrets": ["account"], "parameters": ["account"]}, "a secret never goes into TwiML"),
        ({"keep": "plain"}, 'keep: "plain" is a str (expected one of "verdict", "hash"'),
        ({"parameters": ["not a name"]}, 'parameters: item "not a name"'),
    ],
)
def test_wrong_arguments_fail_at_definition(arguments, expected):
    found = problems(**arguments)
    assert any(expected in line for line in found), found


def rules(**options: object) -> list[tuple[str, str]]:
    class Line(Flow):
        talk = Agent(AGENT, **options)  # type: ignore[arg-type]
        bye = Hangup()

    return [(f.code, f.message) for f in Line.findings() if f.severity == WARNING]


def test_ivr060_a_key_the_agent_sends_without_a_target_and_one_it_never_sends():
    found = rules(
        on={"billing": "bye", "sales": "bye", "*": "bye"}, on_failure="bye", on_hangup=Hangup()
    )
    assert found == [
        ("IVR060", 'hand-off key "person" of the agent has no target in on=: it goes to "*"'),
        ("IVR060", 'on= maps hand-off key "sales", which the agent never sends'),
    ]


def test_ivr061_no_failure_and_no_hangup_outcome():
    (found,) = rules(on={"billing": "bye", "person": "bye", "*": "bye"})
    assert found[0] == "IVR061"
    assert found[1].startswith("no on_failure and no on_hangup: a failed session goes to")


def test_ivr062_a_secret_looking_field_not_in_secrets():
    found = rules(
        on={"billing": "bye", "person": "bye", "*": "bye"},
        on_failure="bye",
        on_hangup=Hangup(),
        handoff={"billing": Billing},
    )
    assert found == [
        ("IVR062", 'hand-off field "account" looks like a caller secret but is not in secrets=')
    ]
    assert rules(
        on={"billing": "bye", "person": "bye", "*": "bye"},
        on_failure="bye",
        on_hangup=Hangup(),
        handoff={"billing": Billing},
        secrets=("account",),
    ) == []


class Escalation(TypedDict, total=False):
    reason: Literal["angry", "asked"]
    attempts: int
    score: float | None
    tags: list[str]


@pytest.mark.parametrize(
    "payload",
    [{}, {"reason": "angry"}, {"attempts": 2, "score": None, "tags": ["a"]}, {"score": 3}],
)
def test_typeddict_schemas_accept_what_fits(payload):
    check_schema(Escalation, payload)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"reason": "bored"}, "field 'reason' of Escalation is not Literal['angry', 'asked']"),
        ({"attempts": True}, "field 'attempts' of Escalation is not int (got bool)"),
        ({"attempts": "2"}, "is not int (got str)"),
        ({"tags": ["a", 1]}, "field 'tags'"),
        ({"other": 1}, "field 'other' is not in Escalation"),
    ],
)
def test_typeddict_schemas_refuse_what_does_not(payload, reason):
    with pytest.raises(HandoffProblem, match=re.escape(reason)):
        check_schema(Escalation, payload)
