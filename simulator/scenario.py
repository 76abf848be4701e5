"""YAML scenario files: scripted callers with expectations, for QA and CI.

    url: http://127.0.0.1:8000/voice        # or --url on the command line
    from: "+15551230000"                     # optional call defaults: to, method, auth_token
    start: 2026-11-22T03:00:00-05:00         # when the calls happen (X-Ivrkit-Sim-Time)
    scenarios:
      - name: sales is reachable
        steps:
          - press: "1"                        # also: speak, wait (timeout), dial, record, queue,
          - dial: no-answer                   #       hangup
        expect:
          heard: ["Thanks for calling", "leave a message"]   # substrings of the spoken text
          not_heard: ["Sorry"]
          reached: ["/voicemail"]             # some request URL contains this
          state: voicemail                    # some request had ?state=voicemail
          ended: completed                    # or {status: completed, reason: hangup}
          errors: []                          # Twilio error codes expected (default: none)
      - name: a machine gets the message      # an outbound call, as the Calls API places it
        outbound:
          answer: machine                     # human (default), machine, fax, unknown, an
                                              # AnsweredBy, busy, no-answer or failed
          machine_detection: DetectMessageEnd # optional; also async_amd_callback: /amd,
                                              # greeting, ring, timeout (seconds)
        expect:
          answered_by: machine_end_beep       # some request carried this AnsweredBy
          heard: ["after the beep"]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import yaml  # type: ignore[import-untyped]

from simulator.callees import ANSWERED_BY, OUTCOMES, Callee
from simulator.caller import (
    Answer,
    DialOutcome,
    HangUp,
    Press,
    QueueOutcome,
    RecordOutcome,
    Speak,
    Timeout,
)
from simulator.dialout import run_outbound_call
from simulator.engine import CallResult
from simulator.model import CallParams
from simulator.phone import parse_start, run_call
from simulator.transport import Transport

__all__ = [
    "Expectation",
    "Outbound",
    "Scenario",
    "ScenarioError",
    "ScenarioFile",
    "ScenarioReport",
    "check",
    "load_scenarios",
    "parse_step",
    "run_scenarios",
]

STEP_NAMES = ("press", "speak", "wait", "timeout", "dial", "record", "queue", "hangup")


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
    answered_by: str | None = None


@dataclass
class Outbound:
    """A scenario's ``outbound:`` block: the call is placed as the Calls API would place it
    (``Direction=outbound-api``, ringing, answering machine detection), answered by ``answer``
    who does the scenario's steps."""

    answer: str = "human"
    fields: dict[str, str] = field(default_factory=dict)
    ring: float = 4.0
    greeting: float = 12.0

    def callee(self, steps: list[Answer]) -> Callee:
        outcome, who = (self.answer, "human") if self.answer in OUTCOMES else ("answered",
                                                                                self.answer)
        return Callee(outcome=outcome, who=who, ring_seconds=self.ring, steps=tuple(steps),
                      greeting_seconds=self.greeting)


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
             "errors", "answered_by"}
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
        answered_by=None if data.get("answered_by") is None else str(data["answered_by"]),
    )


_CALL_OPTIONS = {"from": "from_", "to": "to", "method": "method", "auth_token": "auth_token",
                 "max_requests": "max_requests", "fallback_url": "fallback_url",
                 "status_callback": "status_callback"}


_OUTBOUND_KEYS = {"answer", "machine_detection", "async_amd_callback", "ring", "greeting",
                  "timeout"}


def _outbound(data: Any, where: str) -> Outbound:
    if data is None or data is True:
        data = {}
    if not isinstance(data, dict) or set(data) - _OUTBOUND_KEYS:
        raise ScenarioError(f"{where}: 'outbound' is a mapping of "
                            f"{', '.join(sorted(_OUTBOUND_KEYS))}; got {data!r}")
    answer = str(data.get("answer", "human"))
    if answer not in ANSWERED_BY | OUTCOMES - {"answered"}:
        raise ScenarioError(f"{where}: outbound answer {answer!r}: use one of "
                            f"{', '.join(sorted(ANSWERED_BY | OUTCOMES - {'answered'}))}")
    fields: dict[str, str] = {}
    if data.get("machine_detection") is not None:
        mode = str(data["machine_detection"])
        if mode not in ("Enable", "DetectMessageEnd"):
            raise ScenarioError(f"{where}: machine_detection {mode!r}: use Enable or "
                                "DetectMessageEnd")
        fields["MachineDetection"] = mode
    if data.get("async_amd_callback") is not None:
        fields.update(AsyncAmd="true", AsyncAmdStatusCallback=str(data["async_amd_callback"]))
        fields.setdefault("MachineDetection", "DetectMessageEnd")
    try:
        if data.get("timeout") is not None:
            fields["Timeout"] = str(int(data["timeout"]))
        return Outbound(answer, fields, float(data.get("ring", 4.0)),
                        float(data.get("greeting", 12.0)))
    except (TypeError, ValueError):
        raise ScenarioError(f"{where}: outbound ring, greeting and timeout are seconds") from None


def _options(data: dict[str, Any], where: str) -> dict[str, Any]:
    options = {ours: data[key] for key, ours in _CALL_OPTIONS.items() if key in data}
    if "outbound" in data:
        options["outbound"] = _outbound(data["outbound"], where)
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
    if expect.answered_by is not None:
        told = [r.params["AnsweredBy"] for r in result.requests if "AnsweredBy" in r.params]
        if expect.answered_by not in told:
            failures.append(f"expected AnsweredBy={expect.answered_by!r}; requests carried "
                            f"{sorted(set(told)) or 'none'}")
    codes = [e.code for e in result.errors]
    if sorted(map(str, codes)) != sorted(map(str, expect.errors)):
        got = "; ".join(f"{e.code}: {e.message}" for e in result.errors) or "none"
        failures.append(f"expected errors {expect.errors or 'none'}, got {got}")
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
            outbound: Outbound | None = options.pop("outbound", None)
            if outbound is not None:
                result = await _place_outbound(target, scenario.steps, outbound, transport,
                                               params, options)
            else:
                result = await run_call(target, scenario.steps, transport=transport,
                                        params=params, **options)
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


async def _place_outbound(
    url: str, steps: list[Answer], outbound: Outbound, transport: Transport,
    params: CallParams, options: dict[str, Any],
) -> CallResult:
    fields: dict[str, str | list[str]] = dict(outbound.fields)
    if options.get("status_callback"):
        fields["StatusCallback"] = str(options["status_callback"])
    if options.get("fallback_url"):
        fields["FallbackUrl"] = str(options["fallback_url"])
    if options.get("method"):
        fields["Method"] = str(options["method"])
    _, result = await run_outbound_call(
        url, outbound.callee(steps), session=transport.session(), params=params, fields=fields,
        max_requests=int(options.get("max_requests", 100)), start_time=options.get("start_time"),
    )
    return result
