"""ConversationRelay in the simulator's tools: scenario files, replay, load mode."""

from __future__ import annotations

import io
import json
import textwrap

import pytest
from relay_app import GREETING, RelayApp
from sim_apps import TOKEN

from simulator import Interrupt, Press, Speak, load_scenarios, run_call, run_load, run_scenarios
from simulator.cli import main
from simulator.relay import RelayOptions
from simulator.replay import load_recording, replay
from simulator.scenario import ScenarioError, parse_step

FAST = RelayOptions(agent_silence=0.5, settle=0.05)


def write(tmp_path, text: str):
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_interrupt_steps():
    assert parse_step({"interrupt": "my bill"}) == Interrupt("my bill")
    assert parse_step({"interrupt": {"after": 3, "text": "stop"}}) == Interrupt("stop", 0.9, 3)
    assert parse_step({"interrupt": None}) == Interrupt("")


async def test_scenario_file_with_speak_interrupt_and_handoff(tmp_path):
    path = write(tmp_path, """
        url: /voice
        agent_silence: 0.5
        agent_settle: 0.05
        scenarios:
          - name: billing goes back to the menu
            steps:
              - speak: Hello
              - interrupt: {after: 1, text: "my bill"}
              - press: "1"
            expect:
              heard: ["How can I help", "You said: Hello", "Your balance is 42 dollars."]
              session: ended
              handoff: {intent: billing, account: "12345678"}
          - name: a wrong expectation fails
            steps:
              - speak: bye
            expect:
              session: failed
              handoff: billing
    """)
    app = RelayApp()
    out = io.StringIO()
    report = await run_scenarios(load_scenarios(path), app=app, auth_token=TOKEN, out=out)
    assert report.passed == ["billing goes back to the menu"], out.getvalue()
    assert report.failed == {"a wrong expectation fails": [
        "expected the session to end 'failed', it ended 'ended'",
        "expected HandoffData containing 'billing', got '{\"intent\": \"done\"}'",
    ]}
    interrupt = app.sessions[0].received[2]
    assert interrupt["type"] == "interrupt"
    assert interrupt["utteranceUntilInterrupt"] == "You"


def test_scenario_option_errors(tmp_path):
    path = write(tmp_path, """
        agent_silence: soon
        scenarios: []
    """)
    with pytest.raises(ScenarioError, match="agent_silence and agent_settle are seconds"):
        load_scenarios(path)


def test_scenario_expecting_a_session_where_there_was_none(tmp_path, serve):
    from sim_apps import demo_ivr

    server = serve(demo_ivr())
    path = write(tmp_path, f"""
        url: {server.url}/voice
        scenarios:
          - name: no agent here
            steps: [{{press: "9"}}]
            expect:
              session: ended
    """)
    out, err = io.StringIO(), io.StringIO()
    code = main(["run", str(path), "--auth-token", TOKEN], out=out, err=err)
    assert code == 1
    assert "expected a ConversationRelay session; the call had none" in out.getvalue()


async def test_replay_of_a_recorded_session(tmp_path):
    app = RelayApp()
    lines: list[str] = []
    await run_call("/voice", [Speak("Hello"), Interrupt("my bill", after_words=1)], app=app,
                   auth_token=TOKEN, relay=FAST,
                   on_event=lambda e: lines.append(json.dumps(e.to_json())))
    recording = tmp_path / "call.jsonl"
    recording.write_text("\n".join(lines) + "\n")
    loaded = load_recording(recording)
    assert loaded.steps == [Speak("Hello"), Interrupt("my bill", after_words=1)]
    assert f"agent {GREETING}" in loaded.expected

    again = RelayApp()
    report = await replay(loaded, "/voice", app=again, auth_token=TOKEN)
    assert report.ok, "\n".join(report.diff)
    assert again.sessions[0].received[2]["utteranceUntilInterrupt"] == "You"

    # A changed agent shows up in the diff.
    changed = RelayApp()
    report = await replay(loaded, "/voice?mode=silent", app=changed, auth_token=TOKEN)
    assert not report.ok
    assert "-agent You said: Hello" in report.diff


async def test_load_mode_against_an_agent():
    app = RelayApp()
    report = await run_load("/voice", calls=12, concurrency=4, app=app, auth_token=TOKEN,
                            relay=FAST, hangup=0.25, seed=7,
                            agent_lines=("Hello", "About my bill", "1"))
    assert report.completed == 12
    assert report.crashed == 0
    assert report.agent_sessions == 12
    # 9 callers talk: two replies each (the greeting is Twilio's, not measured).
    assert report.agent_replies == 18
    assert set(report.agent_latency_ms) == {"p50", "p99", "max"}
    assert report.errors == {}
    assert len(app.actions) == 12
    assert sum(a["SessionStatus"] == "ended" for a in app.actions) == 9
    assert "agent sessions    12, 18 replies" in report.format_text()
    assert all(session.closed for session in app.sessions)


def test_load_cli_json(serve):
    app = RelayApp()
    server = serve(app)
    out, err = io.StringIO(), io.StringIO()
    code = main(["load", f"{server.url}/voice", "--calls", "4", "--concurrency", "2",
                 "--auth-token", TOKEN, "--speak", "bye", "--agent-settle", "0.05", "--json"],
                out=out, err=err)
    assert code == 0, out.getvalue() + err.getvalue()
    report = json.loads(out.getvalue())
    assert report["agent_sessions"] == 4
    assert report["agent_replies"] == 4
    assert report["end_reasons"] == {"hangup": 4}


VOICE = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Connect action="/after">'
    '<ConversationRelay url="ws://testserver/relay/good" welcomeGreeting="'
    f'{GREETING}"><Parameter name="account" value="12345678"/></ConversationRelay>'
    "</Connect><Say>Back in the menu.</Say></Response>"
)
BILLING = (
    '<Response><Gather action="/billing" numDigits="1"><Say>Billing menu for account '
    "12345678. Press 1 for your balance.</Say></Gather></Response>"
)


def ivrkit_export(tmp_path, *, agent_reply: str = "You said: Hello"):
    """An agent call as `ivrkit events CALLSID` exports it: webhooks and the transcript."""
    call = {"CallSid": "CA" + "1" * 32, "From": "+15005550006", "To": "+15005550001"}
    rows = [
        {"kind": "webhook", "event": "start", "params": call, "twiml": VOICE},
        {"kind": "caller", "params": {"text": "Hello"}},
        {"kind": "agent", "params": {"text": agent_reply}},
        {"kind": "caller", "params": {"text": "(interrupted)"}},
        {"kind": "caller", "params": {"text": "my bill"}},
        {"kind": "agent", "params": {"text": "Let me connect you to billing."}},
        {"kind": "relay", "params": {"session": "VX" + "2" * 32, "outcome": "billing"}},
        {"kind": "webhook", "event": "action", "twiml": BILLING, "params": {
            **call, "SessionStatus": "ended",
            "HandoffData": '{"intent": "billing", "account": "12345678"}'}},
        {"kind": "webhook", "event": "action", "params": {**call, "Digits": "1"},
         "twiml": "<Response><Say>Your balance is 42 dollars.</Say><Hangup/></Response>"},
    ]
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


async def test_replay_of_an_ivrkit_export_with_an_agent_session(tmp_path):
    recording = load_recording(ivrkit_export(tmp_path))
    assert recording.steps == [Speak("Hello"), Interrupt("my bill"), Press("1")]
    assert [s.status for s in recording.sessions] == ["ended"]
    app = RelayApp()
    report = await replay(recording, "/voice", app=app, auth_token=TOKEN)
    assert report.ok, "\n".join(report.diff)
    assert "agent Let me connect you to billing." in report.expected
    assert "say  Your balance is 42 dollars." in report.actual
    assert [m["type"] for m in app.sessions[0].received] == [
        "setup", "prompt", "interrupt", "prompt"]

    # The recorded agent said something else: the replay shows it.
    recording = load_recording(ivrkit_export(tmp_path, agent_reply="Hi there"))
    report = await replay(recording, "/voice", app=RelayApp(), auth_token=TOKEN)
    assert not report.ok
    assert "-agent Hi there" in report.diff
    assert "+agent You said: Hello" in report.diff
