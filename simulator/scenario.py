"""YAML scenario files: scripted callers with expectations, for QA and CI.

    url: http://127.0.0.1:8000/voice        # or --url on the command line
    from: "+15551230000"                     # optional call defaults: to, method, auth_token
    start: 2026-11-22T03:00:00-05:00         # when the calls happen (X-Ivrkit-Sim-Time)
    agent_silence: 5                         # ConversationRelay: seconds the agent may be silent
    scenarios:
      - name: sales is reachable
        steps:
          - press: "1"                        # also: speak, wait (timeout), dial, record, queue,
          - dial: no-answer                   #       hangup, interrupt
        expect:
          heard: ["Thanks for calling", "leave a message"]   # substrings of the spoken text
          not_heard: ["Sorry"]
          reached: ["/voicemail"]             # some request URL contains this
          state: voicemail                    # some request had ?state=voicemail
          ended: completed                    # or {status: completed, reason: hangup}
          errors: []                          # Twilio error codes expected (default: none)
      - name: the agent hands billing back
        steps:
          - speak: "I have a question about my bill"   # a prompt at the agent's turn
          - interrupt: {after: 3, text: "my bill"}     # cut the agent off after 3 words
        expect:
          heard: ["How can I help"]           # agent utterances count as heard
          session: ended                      # SessionStatus of the last ConversationRelay
          handoff: {intent: billing}          # keys of its HandoffData (JSON), or a substring
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import yaml  # type: ignore[import-untyped]

from simulator.caller import (
    Answer,
    DialOutcome,
    HangUp,
    Interrupt,
    Press,
    QueueOutcome,
    RecordOutcome,
    Speak,
    Timeout,
)
from simulator.engine import CallResult
from simulator.model import CallParams, RelayEndEvent
from simulator.phone import parse_start, run_call
from simulator.relay import RelayOptions
from simulator.transport import Transport

__all__ = [
    "Expectation",
    "Scenario",
    "ScenarioError",
    "ScenarioFile",
    "ScenarioReport",
    "check",
    "load_scenarios",
    "parse_step",
    "run_scenarios",
]

STEP_NAMES = (
    "press", "speak", "interrupt", "wait", "timeout", "dial", "record", "queue", "hangup",
)


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file, scenario and step."""


@dataclass
class Expectation:
    heard: list[str] = field(default_factory=list)
    not_heard: list[str] = field(default_factory=list)
    reached: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    status: str | None = None
    reason: str | None = None
    errors: list[int | str] = field(default_factory=list)
    session: str | None = None
    handoff: dict[str, Any] | str | None = None


@dataclass
class Scenario:
    name: str
    steps: list[Answer]
    expect: Expectation
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScenarioFile:
    path: str
    url: str | None
    scenarios: list[Scenario]
    options: dict[str, Any] = field(default_factory=dict)


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def parse_step(item: Any, where: str = "step") -> Answer:
    """One YAML step (``{"press": "1"}``, ``"hangup"``, ``{"dial": {"status": "busy"}}``...)."""
    if isinstance(item, str) and item in ("hangup", "timeout", "wait"):
        item = {item: True}
    if not isinstance(item, dict) or len(item) != 1:
        raise ScenarioError(f"{where}: expected one of {', '.join(STEP_NAMES)} as a single key, "
                            f"e.g. {{press: '1'}}; got {item!r}")
    (name, value), = item.items()
    if name == "press":
        if isinstance(value, dict):
            return Press(str(value["digits"]), value.get("after"))
        return Press(str(value))
    if name == "speak":
        if isinstance(value, dict):
            return Speak(str(value["text"]), float(value.get("confidence", 0.9)))
        return Speak(str(value))
    if name == "interrupt":
        # At a ConversationRelay agent's turn: cut it off, then (optionally) say something.
        if isinstance(value, dict):
            return Interrupt(str(value.get("text", "")), after_words=int(value.get("after", 2)))
        return Interrupt("" if value in (None, True) else str(value))
    if name in ("wait", "timeout"):
        return Timeout()
    if name == "hangup":
        return HangUp()
    if name == "dial":
        if isinstance(value, dict):
            return DialOutcome(
                str(value.get("status", "completed")), int(value.get("duration", 30)),
                bool(value.get("hangup", False)),
            )
        return DialOutcome(str(value))
    if name == "record":
        if isinstance(value, dict):
            key = value.get("key")
            return RecordOutcome(
                int(value.get("seconds", 5)), None if key is None else str(key),
                bool(value.get("hangup", False)),
            )
        return RecordOutcome(int(value))
    if name == "queue":
        if isinstance(value, dict):
            return QueueOutcome(
                str(value.get("result", "bridged")), int(value.get("wait_rounds", 1)),
                int(value.get("duration", 60)),
            )
        return QueueOutcome(str(value))
    raise ScenarioError(f"{where}: unknown step {name!r}; use one of {', '.join(STEP_NAMES)}")


def _expectation(data: Any, where: str) -> Expectation:
    if data is None:
        return Expectation()
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: 'expect' must be a mapping (heard, reached, ended...)")
    known = {"heard", "not_heard", "reached", "state", "states", "ended", "status", "reason",
             "errors", "session", "handoff"}
    unknown = set(data) - known
    if unknown:
        raise ScenarioError(f"{where}: unknown expectation {sorted(unknown)}; use "
                            f"{', '.join(sorted(known))}")
    ended = data.get("ended")
    status, reason = data.get("status"), data.get("reason")
    if isinstance(ended, dict):
        status, reason = ended.get("status", status), ended.get("reason", reason)
    elif ended is not None:
        status = str(ended)
    return Expectation(
        heard=_strings(data.get("heard")), not_heard=_strings(data.get("not_heard")),
        reached=_strings(data.get("reached")),
        states=_strings(data.get("state")) + _strings(data.get("states")),
        status=status, reason=reason,
        errors=[int(c) if str(c).isdigit() else str(c) for c in data.get("errors") or []],
        session=None if data.get("session") is None else str(data["session"]),
        handoff=_handoff(data.get("handoff"), where),
    )


def _handoff(value: Any, where: str) -> dict[str, Any] | str | None:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str | int | float):
        return str(value)
    raise ScenarioError(f"{where}: 'handoff' is a mapping of HandoffData keys or a substring")


_RELAY_OPTIONS = {"agent_silence": "agent_silence", "agent_settle": "settle"}
_CALL_OPTIONS = {"from": "from_", "to": "to", "method": "method", "auth_token": "auth_token",
                 "max_requests": "max_requests", "fallback_url": "fallback_url",
                 "status_callback": "status_callback"}


def _options(data: dict[str, Any], where: str) -> dict[str, Any]:
    options = {ours: data[key] for key, ours in _CALL_OPTIONS.items() if key in data}
    relay = {ours: data[key] for key, ours in _RELAY_OPTIONS.items() if key in data}
    if relay:
        try:
            options["relay"] = RelayOptions(**{k: float(v) for k, v in relay.items()})
        except (TypeError, ValueError):
            raise ScenarioError(f"{where}: agent_silence and agent_settle are seconds, e.g. "
                                "5 or 0.2") from None
    if data.get("start") is not None:
        try:
            options["start_time"] = parse_start(data["start"], f"{where}: start")
        except ValueError as error:
            raise ScenarioError(str(error)) from None
    return options


def load_scenarios(path: str | Path) -> ScenarioFile:
    """Read and validate a scenario file; raises ``ScenarioError`` naming what to fix."""
    path = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
        raise ScenarioError(f"{path}: expected a mapping with a 'scenarios' list")
    scenarios = []
    for index, item in enumerate(data["scenarios"], 1):
        name = str(item.get("name") or f"scenario {index}") if isinstance(item, dict) else ""
        where = f"{path}: {name or f'scenario {index}'}"
        if not isinstance(item, dict):
            raise ScenarioError(f"{where}: each scenario is a mapping with name, steps, expect")
        steps = [
            parse_step(step, f"{where}: step {n}")
            for n, step in enumerate(item.get("steps") or [], 1)
        ]
        options = _options(item, where)
        if "url" in item:
            options["url"] = item["url"]
        scenarios.append(Scenario(name, steps, _expectation(item.get("expect"), where), options))
    return ScenarioFile(path, data.get("url"), scenarios, _options(data, path))


def check(expect: Expectation, result: CallResult) -> list[str]:
    """What did not match, one message each (empty when the scenario passed)."""
    failures = []
    spoken = result.heard
    for text in expect.heard:
        if text not in spoken:
            failures.append(f"expected to hear {text!r}")
    for text in expect.not_heard:
        if text in spoken:
            failures.append(f"did not expect to hear {text!r}")
    urls = [r.url for r in result.requests]
    for fragment in expect.reached:
        if not any(fragment in url for url in urls):
            failures.append(f"expected a request to a URL containing {fragment!r}")
    states = {s for url in urls for s in parse_qs(urlsplit(url).query).get("state", [])}
    for state in expect.states:
        if state not in states:
            failures.append(f"expected to reach state={state!r}; reached {sorted(states)}")
    if expect.status is not None and result.status != expect.status:
        failures.append(f"expected the call to end {expect.status!r}, it ended {result.status!r}")
    if expect.reason is not None and result.reason != expect.reason:
        failures.append(f"expected end reason {expect.reason!r}, got {result.reason!r}")
    failures.extend(_check_session(expect, result))
    codes = [e.code for e in result.errors]
    if sorted(map(str, codes)) != sorted(map(str, expect.errors)):
        got = "; ".join(f"{e.code}: {e.message}" for e in result.errors) or "none"
        failures.append(f"expected errors {expect.errors or 'none'}, got {got}")
    return failures


def _check_session(expect: Expectation, result: CallResult) -> list[str]:
    if expect.session is None and expect.handoff is None:
        return []
    ends = [e for e in result.events if isinstance(e, RelayEndEvent)]
    if not ends:
        return ["expected a ConversationRelay session; the call had none"]
    last = ends[-1]
    failures = []
    if expect.session is not None and last.status != expect.session:
        failures.append(f"expected the session to end {expect.session!r}, it ended "
                        f"{last.status!r}")
    if isinstance(expect.handoff, str) and expect.handoff not in (last.handoff or ""):
        failures.append(f"expected HandoffData containing {expect.handoff!r}, got "
                        f"{last.handoff!r}")
    elif isinstance(expect.handoff, dict):
        try:
            data = json.loads(last.handoff or "")
        except ValueError:
            data = None
        if not isinstance(data, dict) or any(
            data.get(k) != v for k, v in expect.handoff.items()
        ):
            failures.append(f"expected HandoffData with {expect.handoff!r}, got "
                            f"{last.handoff!r}")
    return failures


@dataclass
class ScenarioReport:
    passed: list[str] = field(default_factory=list)
    failed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


async def run_scenarios(
    scenario_file: ScenarioFile,
    *,
    url: str | None = None,
    auth_token: str | None = None,
    app: Any = None,
    out: TextIO | None = None,
    on_result: Callable[[Scenario, CallResult], Any] | None = None,
) -> ScenarioReport:
    """Run every scenario (``url`` overrides the file's) and print PASS/FAIL lines to ``out``."""
    report = ScenarioReport()
    token = auth_token or scenario_file.options.get("auth_token") or os.environ.get(
        "TWILIO_AUTH_TOKEN"
    )
    async with Transport(app=app, auth_token=token, lifespan=True) as transport:
        for scenario in scenario_file.scenarios:
            options = {**scenario_file.options, **scenario.options}
            target = url or options.pop("url", None) or scenario_file.url
            options.pop("url", None)
            options.pop("auth_token", None)
            if not target:
                raise ScenarioError(f"{scenario_file.path}: no URL; add 'url:' to the file or "
                                    "pass --url")
            params = CallParams(from_=options.pop("from_", "+15005550006"),
                                to=options.pop("to", "+15005550001"))
            result = await run_call(target, scenario.steps, transport=transport, params=params,
                                    **options)
            failures = check(scenario.expect, result)
            if on_result:
                on_result(scenario, result)
            if failures:
                report.failed[scenario.name] = failures
                if out:
                    out.write(f"FAIL {scenario.name}\n")
                    for failure in failures:
                        out.write(f"     - {failure}\n")
                    out.write("     transcript:\n")
                    for line in result.transcript.splitlines():
                        out.write(f"       {line}\n")
            else:
                report.passed.append(scenario.name)
                if out:
                    out.write(f"PASS {scenario.name}\n")
    if out:
        total = len(report.passed) + len(report.failed)
        out.write(f"\n{len(report.passed)} passed, {len(report.failed)} failed of {total} "
                  "scenarios\n")
    return report
