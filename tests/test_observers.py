"""The runtime reports what a call did to observers; coverage is one of them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from flows.support_line import SupportLine
from ivrkit import observers
from ivrkit.flow import Flow
from tests.conftest import phone


class Journal(observers.CallObserver):
    """Writes down every report, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.loaded: list[str] = []

    def flows_loaded(self, flows):  # type: ignore[no-untyped-def]
        self.loaded += [flow.name for flow in flows]

    def state_entered(self, flow: type[Flow], state: str, call_sid: str) -> None:
        self.lines.append(f"enter {state}")

    def trigger_taken(
        self, flow: type[Flow], source: str, trigger: str, dest: str, call_sid: str
    ) -> None:
        self.lines.append(f"{source} -{trigger}-> {dest}")

    def retried(self, flow: type[Flow], state: str, trigger: str, call_sid: str) -> None:
        self.lines.append(f"retry {state} after {trigger}")

    def gave_up(self, flow: type[Flow], state: str, dest: str, call_sid: str) -> None:
        self.lines.append(f"give up {state} -> {dest}")


@pytest.fixture
def journal() -> Iterator[Journal]:
    watcher = Journal()
    observers.add(watcher)
    try:
        yield watcher
    finally:
        observers.remove(watcher)


async def test_a_call_reports_states_triggers_retries_and_give_up(serve, journal):
    async with serve([SupportLine]) as (_, client):
        assert journal.loaded == ["support_line"]
        call = phone(client, "support_line")
        await call.start()
        for _ in range(3):
            await call.press("9")  # no such choice: a retry, then the give-up
        await call.dial_result("busy")
    assert journal.lines == [
        "enter welcome",
        "welcome -next-> main_menu",
        "enter main_menu",
        "main_menu -no_match-> main_menu",
        "retry main_menu after no_match",
        "enter main_menu",
        "main_menu -no_match-> main_menu",
        "retry main_menu after no_match",
        "enter main_menu",
        "main_menu -give_up-> operator",
        "give up main_menu -> operator",
        "enter operator",
        "operator -dial:busy-> voicemail",
        "enter voicemail",
    ]


async def test_a_removed_observer_hears_nothing(serve):
    quiet = Journal()
    observers.add(quiet)
    observers.add(quiet)  # twice is once
    assert observers.ACTIVE.count(quiet) == 1
    observers.remove(quiet)
    async with serve([SupportLine]) as (_, client):
        await phone(client, "support_line").start()
    assert quiet.lines == []
    assert quiet not in observers.ACTIVE


def test_the_runtime_does_not_import_the_coverage_tool():
    code = "import sys, ivrkit.runtime, ivrkit.app; print('ivrkit.coverage' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"


class Broken(observers.CallObserver):
    def state_entered(self, flow: type[Flow], state: str, call_sid: str) -> None:
        raise RuntimeError("metrics backend down")


async def test_an_observer_that_raises_is_logged_and_the_call_goes_on(serve, journal, caplog):
    broken = Broken()
    observers.add(broken)
    try:
        async with serve([SupportLine]) as (_, client):
            answer = await phone(client, "support_line").start()
    finally:
        observers.remove(broken)
    assert answer.verbs == ["Say", "Gather", "Redirect"]
    assert answer.said()[0] == "Thanks for calling Acme."
    assert journal.lines[:2] == ["enter welcome", "welcome -next-> main_menu"]
    failures = [r for r in caplog.records if r.name == "ivrkit.observers"]
    assert [r.getMessage() for r in failures][:1] == [
        "observer Broken failed in state_entered; the call goes on without it"
    ]
