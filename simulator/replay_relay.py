"""Replaying ConversationRelay sessions from ivrkit's event-log export.

ivrkit keeps an agent session's transcript beside the webhooks: ``{"kind": "caller" | "agent",
"params": {"text": ...}}`` per turn (the caller's keys as ``(pressed 1)``, an interrupt as
``(interrupted)``), then ``{"kind": "relay", ...}``, then the ``<Connect action>`` webhook with
``SessionStatus`` and ``HandoffData``. From these, replay takes the caller's turns as steps and
rebuilds the recorded agent as a tape (``TapedSession``): a WebSocket that says the recorded
agent turns, one reply per caller turn, and ends the session as it ended. Transcripts of
sensitive states are masked, so their turns replay masked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from simulator.caller import Answer, Interrupt, Press, Speak

__all__ = ["TapedSession", "caller_step", "serve_session", "taped_sessions"]

Message = MutableMapping[str, Any]
_PRESSED = re.compile(r"^\(pressed (.+)\)$")
INTERRUPTED = "(interrupted)"


@dataclass
class TapedSession:
    """One recorded session: its turns in order, and how it ended."""

    turns: list[tuple[str, str]] = field(default_factory=list)  # (who, text)
    status: str = "completed"
    handoff: str | None = None


def _text(row: dict[str, Any]) -> str:
    return str((row.get("params") or {}).get("text") or "")


def caller_step(rows: list[dict[str, Any]], index: int) -> tuple[Answer | None, int]:
    """The step for the caller row at ``index`` and how many rows it used (an interrupt and
    the speech that came with it make one step)."""
    text = _text(rows[index])
    pressed = _PRESSED.match(text)
    if pressed:
        return Press(pressed.group(1)), 1
    if text == INTERRUPTED:
        following = rows[index + 1] if index + 1 < len(rows) else {}
        if following.get("kind") == "caller" and not _text(following).startswith("("):
            return Interrupt(_text(following)), 2
        return Interrupt(""), 1
    if text.startswith("("):
        return None, 1  # a note the caller cannot repeat
    return Speak(text), 1


def taped_sessions(rows: list[dict[str, Any]]) -> list[TapedSession]:
    """The sessions of an event-log export, in order."""
    sessions: list[TapedSession] = []
    current: TapedSession | None = None
    for row in rows:
        kind = row.get("kind")
        if kind in ("caller", "agent"):
            if current is None:
                current = TapedSession()
                sessions.append(current)
            current.turns.append((str(kind), _text(row)))
        elif kind == "relay":
            if current is None:
                current = TapedSession()
                sessions.append(current)
        elif current is not None and "SessionStatus" in (row.get("params") or {}):
            params = row["params"]
            current.status = str(params["SessionStatus"])
            handoff = params.get("HandoffData")
            current.handoff = None if handoff is None else str(handoff)
            current = None
    return sessions


async def serve_session(
    session: TapedSession | None,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Play the recorded agent over an ASGI WebSocket: its turns between the caller's, then
    the session's end (``end`` with the hand-off, a close for a failed one; after a caller who
    hung up, nothing: the simulator hangs up too)."""
    await receive()  # websocket.connect
    if session is None:
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    turns = list(session.turns)

    async def say_until_caller() -> None:
        while turns and turns[0][0] == "agent":
            _, text = turns.pop(0)
            await send({"type": "websocket.send",
                        "text": json.dumps({"type": "text", "token": text, "last": True})})

    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        data = json.loads(message.get("text") or "{}")
        if data.get("type") in ("prompt", "dtmf", "interrupt") and turns:
            turns.pop(0)  # the caller's recorded turn
        elif data.get("type") != "setup":
            continue
        await say_until_caller()
        if not turns:
            if session.status == "ended":
                end: dict[str, Any] = {"type": "end"}
                if session.handoff is not None:
                    end["handoffData"] = session.handoff
                await send({"type": "websocket.send", "text": json.dumps(end)})
            elif session.status == "failed":
                await send({"type": "websocket.close", "code": 1011})
                return
