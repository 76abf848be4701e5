"""Public API hygiene, the interactive caller, load-mode helpers, scenario parsing."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest
from sim_apps import TOKEN, demo_ivr

import simulator
from simulator import (
    DialOutcome,
    HangUp,
    InteractiveCaller,
    Press,
    RecordOutcome,
    Speak,
    Timeout,
    menu_choices,
    run_call,
    run_load,
)
from simulator.scenario import ScenarioError, parse_step

PACKAGE = Path(simulator.__file__).parent


def test_all_is_sorted_and_complete():
    # Same rule as the ivrkit package: constants first, then names in order.
    assert simulator.__all__ == sorted(simulator.__all__, key=lambda n: (not n.isupper(), n))
    public = {name for name in vars(simulator) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(simulator, name)).__name__ == "module"}
    assert set(simulator.__all__) == public - modules


def test_simulator_never_imports_ivrkit():
    for source in PACKAGE.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "ivrkit" or n.startswith("ivrkit.") for n in names), source


async def test_interactive_caller_drives_a_call():
    answers = iter(["", "1", "busy", "8 #"])
    out = io.StringIO()
    caller = InteractiveCaller(read=lambda prompt: (out.write(prompt), next(answers))[1], out=out)
    result = await run_call("/voice", caller, app=demo_ivr(), auth_token=TOKEN)
    assert "Got 8 seconds. Goodbye." in result.heard
    assert "keys, 's: words'" in out.getvalue()
    assert "[completed, busy, no-answer" in out.getvalue()


async def test_interactive_caller_speech_and_eof_hangs_up():
    answers = iter(["s: sales please"])

    def read(prompt: str) -> str:
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    caller = InteractiveCaller(read=read, out=io.StringIO())
    app = demo_ivr()
    result = await run_call("/voice", caller, app=app, auth_token=TOKEN)
    # The demo menu only takes keys, so speech is ignored like a timeout, then EOF hangs up.
    assert result.reason == "caller-hangup"
    assert "We did not hear a choice." in result.heard


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("For sales press 1. For support press 2.", ["1", "2"]),
        ("Press star to repeat, or press 0 for an operator", ["*", "0"]),
        ("3 for billing, 4 to hear this again", ["3", "4"]),
        ("Welcome.", []),
    ],
)
def test_menu_choices(text, keys):
    assert menu_choices(text) == keys


async def test_run_load_in_process_counts_and_time_bound():
    report = await run_load(
        "/voice", app=demo_ivr(), auth_token=TOKEN, calls=20, concurrency=4, no_input=0.25, seed=3
    )
    assert report.completed == 20
    assert report.behaviours["no-input"] == 5
    assert report.errors == {}
    assert report.requests > 20
    bounded = await run_load(
        "/voice", app=demo_ivr(), auth_token=TOKEN, calls=10, concurrency=2, max_seconds=0
    )
    assert bounded.not_started == 10
    assert bounded.completed == 0


async def test_run_load_rejects_shares_over_100_percent():
    with pytest.raises(ValueError, match="more than 100%"):
        await run_load("/voice", app=demo_ivr(), calls=10, wrong_input=0.6, hangup=0.6)


async def test_run_load_counts_errors_by_code():
    from sim_apps import TwimlApp

    app = TwimlApp({"/voice": "not xml"}, token=None)
    report = await run_load("/voice", app=app, calls=6, concurrency=3)
    assert report.completed == 6
    assert report.with_errors == 6
    assert report.errors == {"12100": 6}


@pytest.mark.parametrize(
    ("item", "step"),
    [
        ({"press": 1}, Press("1")),
        ({"press": {"digits": "12", "after": 0}}, Press("12", 0)),
        ({"speak": "billing"}, Speak("billing")),
        ("timeout", Timeout()),
        ({"wait": "timeout"}, Timeout()),
        ("hangup", HangUp()),
        ({"dial": "no-answer"}, DialOutcome("no-answer")),
        ({"dial": {"status": "completed", "duration": 5}}, DialOutcome("completed", 5)),
        ({"record": 7}, RecordOutcome(7)),
        ({"record": {"seconds": 3, "key": "#"}}, RecordOutcome(3, "#")),
    ],
)
def test_parse_step(item, step):
    assert parse_step(item) == step


def test_parse_step_error_names_the_fix():
    with pytest.raises(ScenarioError, match="unknown step 'presss'; use one of press, speak"):
        parse_step({"presss": "1"}, "f.yaml: s: step 2")
