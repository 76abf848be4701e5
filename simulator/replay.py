"""Replaying a recorded call against a (new) version of an app and showing what changed.

Two recordings are understood, one JSON object per line:

- the simulator's own ``--json`` output (``{"type": "request" | "say" | "input" | ...}``);
- ivrkit's event-log export (``{"kind": "webhook", "params": {...}, "twiml": "<Response>..."}``).
  Its caller inputs come from the webhook params (Digits, SpeechResult, DialCallStatus,
  RecordingDuration, QueueResult); what the caller heard is rebuilt by running the recorded TwiML
  through the engine, so both sides are compared with the same semantics.

Compared: what the caller hears (Say text, Play URL, a ConversationRelay agent's utterances) and
where the call goes (request paths, with the ``state=`` query parameter when there is one). The
caller's turns in an agent session (speech, keys, interrupts) replay from both: from ``--json``
recordings, and from the transcript ivrkit keeps beside the webhooks (``simulator.replay_relay``,
which also plays the recorded agent back to rebuild what was heard).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from simulator.caller import (
    Answer,
    DialOutcome,
    Interrupt,
    Press,
    QueueOutcome,
    RecordOutcome,
    Speak,
    Timeout,
)
from simulator.model import (
    AgentEvent,
    CallParams,
    DialEvent,
    EnqueueEvent,
    Event,
    InputEvent,
    InterruptEvent,
    PlayEvent,
    RecordEvent,
    RequestEvent,
    SayEvent,
    event_from_json,
)
from simulator.phone import run_call
from simulator.replay_relay import TapedSession, caller_step, serve_session, taped_sessions

__all__ = ["Recording", "ReplayReport", "load_recording", "replay", "timeline"]


@dataclass
class Recording:
    """A recorded call: the caller's answers and what was heard and visited (``expected``)."""

    steps: list[Answer]
    expected: list[str] | None  # None: rebuilt from ``tape`` at replay time
    method: str = "POST"
    params: dict[str, str] = field(default_factory=dict)
    tape: list[str] = field(default_factory=list)
    sessions: list[TapedSession] = field(default_factory=list)  # agent sessions on the tape


@dataclass
class ReplayReport:
    expected: list[str]
    actual: list[str]

    @property
    def ok(self) -> bool:
        return self.expected == self.actual

    @property
    def diff(self) -> list[str]:
        return list(difflib.unified_diff(
            self.expected, self.actual, "recorded", "replayed", lineterm="", n=2
        ))


def _where(url: str) -> str:
    parts = urlsplit(url)
    state = parse_qs(parts.query).get("state")
    return parts.path + (f"?state={state[0]}" if state else "")


def timeline(events: Iterable[Event]) -> list[str]:
    """The comparable lines of a call: ``goto /path``, ``say text``, ``play url``."""
    lines = []
    for event in events:
        if isinstance(event, RequestEvent):
            if "CallbackSource" not in event.params:  # status callbacks are not navigation
                lines.append(f"goto {_where(event.url)}")
        elif isinstance(event, SayEvent):
            lines.append(f"say  {event.text}")
        elif isinstance(event, PlayEvent):
            lines.append(f"play {event.url}")
        elif isinstance(event, AgentEvent):
            lines.append(f"agent {event.text}")
    return lines


def _steps_from_events(events: list[Event]) -> list[Answer]:
    steps: list[Answer] = []
    merged: set[int] = set()  # speech that came with an interrupt, replayed as one step
    for index, event in enumerate(events):
        if index in merged:
            continue
        following = next(
            (e for e in events[index + 1:] if isinstance(e, RequestEvent)), None
        )
        after = following.params if following is not None else {}
        if isinstance(event, InterruptEvent):
            text = ""
            nxt = events[index + 1] if index + 1 < len(events) else None
            if isinstance(nxt, InputEvent) and nxt.speech is not None:
                text = nxt.speech
                merged.add(index + 1)
            steps.append(Interrupt(text, after_words=len(event.heard.split())))
        elif isinstance(event, InputEvent):
            if event.digits is not None:
                steps.append(Press(event.digits))
            elif event.speech is not None:
                steps.append(Speak(event.speech))
            else:
                steps.append(Timeout())
        elif isinstance(event, DialEvent):
            hung_up = after.get("CallStatus") == "completed" and "DialCallStatus" in after
            steps.append(DialOutcome(event.status, event.duration, hung_up))
        elif isinstance(event, RecordEvent):
            digits = after.get("Digits") if "RecordingDuration" in after else None
            steps.append(RecordOutcome(
                event.duration, digits if digits and digits != "hangup" else None,
                digits == "hangup",
            ))
        elif isinstance(event, EnqueueEvent):
            rounds = 0
            for earlier in reversed(events[:index]):
                if isinstance(earlier, InputEvent | DialEvent | RecordEvent | EnqueueEvent):
                    break
                if isinstance(earlier, RequestEvent) and "QueuePosition" in earlier.params:
                    rounds += 1
            steps.append(QueueOutcome(event.result, wait_rounds=rounds))
    return steps


_GATHER = re.compile(rb"<Gather\b")


def _steps_from_webhooks(hooks: list[dict[str, Any]]) -> list[Answer]:
    steps: list[Answer] = []
    previous_gathers = 0
    used = 0  # caller rows already taken with the one before (an interrupt and its speech)
    for index, hook in enumerate(hooks):
        if hook.get("kind") == "caller":  # the caller's turn in an agent session
            if used:
                used -= 1
                continue
            step, taken = caller_step(hooks, index)
            used = taken - 1
            if step is not None:
                steps.append(step)
            continue
        params = {str(k): str(v) for k, v in (hook.get("params") or {}).items()}
        answered_gather = False
        if "RecordingDuration" in params:
            digits = params.get("Digits")
            steps.append(RecordOutcome(
                int(params["RecordingDuration"] or 0),
                digits if digits and digits != "hangup" else None, digits == "hangup",
            ))
        elif "DialCallStatus" in params:
            steps.append(DialOutcome(
                params["DialCallStatus"], int(params.get("DialCallDuration") or 0),
                params.get("CallStatus") == "completed",
            ))
        elif "QueueResult" in params:
            steps.append(QueueOutcome(params["QueueResult"]))
        elif "Digits" in params or "SpeechResult" in params:
            answered_gather = True
        # Gathers in the previous document that led to no request timed out.
        silent = previous_gathers - (1 if answered_gather else 0)
        steps.extend(Timeout() for _ in range(max(0, silent)))
        if "SpeechResult" in params:
            steps.append(Speak(params["SpeechResult"], float(params.get("Confidence") or 0.9)))
        elif answered_gather:
            steps.append(Press(params["Digits"] + params.get("FinishedOnKey", "")))
        previous_gathers = len(_GATHER.findall(str(hook.get("twiml") or "").encode()))
    return steps


def load_recording(path: str | Path) -> Recording:
    """Read either recording format (see the module docstring)."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON object per line: {exc}") from None
    if rows and "type" in rows[0]:
        events = [event_from_json(row) for row in rows]
        requests = [e for e in events if isinstance(e, RequestEvent)]
        first = requests[0] if requests else None
        return Recording(
            steps=_steps_from_events(events), expected=timeline(events),
            method=first.method if first else "POST",
            params=dict(first.params) if first else {},
        )
    hooks = [
        row for row in rows
        if row.get("kind", "webhook") == "webhook" and row.get("twiml")
        and "CallbackSource" not in (row.get("params") or {})
    ]
    if not hooks:
        raise ValueError(f"{path}: no events: expected ivrkit-sim --json output or ivrkit's "
                         "event-log export (kind/params/twiml per line)")
    first_params = {str(k): str(v) for k, v in (hooks[0].get("params") or {}).items()}
    # The caller's turns in agent sessions, in their place among the webhooks.
    kept = {id(hook) for hook in hooks}
    turns = [row for row in rows if id(row) in kept or row.get("kind") == "caller"]
    return Recording(
        steps=_steps_from_webhooks(turns), expected=None, params=first_params,
        tape=[str(h["twiml"]) for h in hooks], sessions=taped_sessions(rows),
    )


class _Tape:
    """An ASGI app answering the recorded TwiML documents in order, whatever the URL, and
    the recorded agent sessions on any WebSocket."""

    def __init__(self, documents: list[str], sessions: Iterable[TapedSession] = ()) -> None:
        self.documents = list(documents)
        self.sessions = list(sessions)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            session = self.sessions.pop(0) if self.sessions else None
            await serve_session(session, receive, send)
            return
        if scope["type"] != "http":
            return  # no lifespan to run
        while True:  # drain the request body
            message = await receive()
            if not message.get("more_body"):
                break
        body = (self.documents.pop(0) if self.documents else "<Response/>").encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/xml")]})
        await send({"type": "http.response.body", "body": body})


def _call_params(recorded: dict[str, str]) -> CallParams:
    return CallParams(
        from_=recorded.get("From", "+15005550006"), to=recorded.get("To", "+15005550001"),
    )


async def replay(
    recording: Recording, url: str, *, auth_token: str | None = None, app: Any = None
) -> ReplayReport:
    """Run the recording's caller against ``url`` and compare with what was recorded."""
    params = _call_params(recording.params)
    expected = recording.expected
    if expected is None:
        path = urlsplit(url).path or "/"
        taped = await run_call(path, recording.steps, app=_Tape(recording.tape, recording.sessions),
                               params=params)
        expected = timeline(taped.events)
    result = await run_call(
        url, recording.steps, app=app, auth_token=auth_token, method=recording.method,
        params=_call_params(recording.params),
    )
    return ReplayReport(expected, timeline(result.events))
