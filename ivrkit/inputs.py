"""Choosing the trigger a webhook fires: digits, speech, dial, recording and queue results.

Retry counting lives here too, because "no input" becomes "give up" only by counting.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ivrkit import nodes as n
from ivrkit import pay
from ivrkit.call import Call
from ivrkit.relay.handoff import select_handoff
from ivrkit.relay.node import Agent

_NOT_WORD = re.compile(r"[^\w\s]")
_SPOKEN_DIGITS = {
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "for": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}


@dataclass
class Selection:
    """The trigger to fire, what to say before re-prompting, and data to keep."""

    trigger: str
    notice: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _normalise_speech(text: str) -> str:
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def spoken_digits(text: str) -> str:
    """'one two 3 4' -> '1234': callers say numbers in words and figures."""
    words = _normalise_speech(text).split()
    return "".join(
        _SPOKEN_DIGITS.get(word, word)
        for word in words
        if word in _SPOKEN_DIGITS or (word.isascii() and word.isdigit())
    )


def _miss(kind: str, node: n.Menu | n.Collect, counters: dict[str, Any]) -> Selection:
    """Count a no-input or no-match; give up when its limit is reached."""
    counters[kind] = counters.get(kind, 0) + 1
    limit = node.retries.no_input if kind == "no_input" else node.retries.no_match
    if counters[kind] >= limit:
        return Selection("give_up")
    notice = node.retries.no_input_prompt if kind == "no_input" else node.retries.no_match_prompt
    return Selection(kind, notice=notice)


async def select(
    flow: Any,
    node: n.Node,
    params: Mapping[str, str],
    *,
    no_input: bool,
    counters: dict[str, Any],
    call: Call,
) -> Selection:
    """The trigger this webhook fires from ``node`` (a state waiting for the caller)."""
    if isinstance(node, n.Menu):
        return _menu(flow, node, params, no_input=no_input, counters=counters)
    if isinstance(node, n.Collect):
        return await _collect(node, params, no_input=no_input, counters=counters, call=call)
    if isinstance(node, n.Dial):
        status = params.get("DialCallStatus", "")
        status = status if status in n.DIAL_STATUSES else "failed"
        duration = params.get("DialCallDuration")
        return Selection(
            f"dial:{status}",
            data={
                "last_dial": {
                    "status": status,
                    "duration": int(duration) if duration and duration.isdigit() else 0,
                }
            },
        )
    if isinstance(node, n.Record):
        url = params.get("RecordingUrl", "")
        duration = params.get("RecordingDuration", "0")
        seconds = int(duration) if duration.isdigit() else 0
        if no_input or not url or seconds == 0:
            return Selection("empty")
        return Selection(
            "recorded",
            data={
                node.save_as: {
                    "url": url,
                    "duration": seconds,
                    "sid": params.get("RecordingSid", ""),
                    "finished_on": params.get("Digits", ""),
                }
            },
        )
    if isinstance(node, n.Enqueue):
        result = params.get("QueueResult", "")
        result = result if result in n.QUEUE_RESULTS else "error"
        return Selection(f"queue:{result}")
    if isinstance(node, Agent):
        trigger, data = select_handoff(node, params, call.data)
        return Selection(trigger, data=data)
    if isinstance(node, pay.Pay):
        trigger, data = pay.selection(node, params)
        return Selection(trigger, data=data)
    raise TypeError(f"{node!r} does not wait for the caller")


def _menu(
    flow: Any,
    node: n.Menu,
    params: Mapping[str, str],
    *,
    no_input: bool,
    counters: dict[str, Any],
) -> Selection:
    digits = params.get("Digits", "").strip()
    speech = _normalise_speech(params.get("SpeechResult", ""))
    if no_input or (not digits and not speech):
        return _miss("no_input", node, counters)
    if digits:
        if digits in node.choices:
            return Selection(
                "repeat" if isinstance(node.choices[digits], n.Repeat) else f"press:{digits}"
            )
        global_target = flow.global_keys_for(node).get(digits)
        if global_target is not None:
            return Selection("repeat" if isinstance(global_target, n.Repeat) else f"press:{digits}")
        return _miss("no_match", node, counters)
    padded = f" {speech} "
    for word in node.words:
        if f" {word} " in padded:
            return Selection(f"say:{word}")
    as_digits = spoken_digits(speech)
    if as_digits in node.choices:
        return Selection(f"press:{as_digits}")
    return _miss("no_match", node, counters)


async def _collect(
    node: n.Collect,
    params: Mapping[str, str],
    *,
    no_input: bool,
    counters: dict[str, Any],
    call: Call,
) -> Selection:
    digits = params.get("Digits", "").strip()
    speech = params.get("SpeechResult", "")
    if counters.get("pending") is not None:
        answer = digits or spoken_digits(speech)
        if no_input or not answer:
            return _miss("no_input", node, counters)
        if answer == node.confirm_key:
            value = counters.pop("pending")
            return Selection("entered", data={node.save_as: value})
        if answer == node.retry_key:
            counters.pop("pending")
            return Selection("reenter")
        return _miss("no_match", node, counters)
    value = digits or spoken_digits(speech)
    if no_input or not value:
        return _miss("no_input", node, counters)
    if not await _valid(node, value, call):
        return _miss("no_match", node, counters)
    if node.confirm:
        counters["pending"] = value
        return Selection("confirm")
    return Selection("entered", data={node.save_as: value})


async def _valid(node: n.Collect, value: str, call: Call) -> bool:
    if node.digits is not None:
        low, high = node.digits
        # ASCII only: "²".isdigit() is true, and a speech engine may write other scripts' digits.
        if not (value.isascii() and value.isdigit() and low <= len(value) <= high):
            return False
    if node.pattern is not None and not node.pattern.fullmatch(value):
        return False
    if node.validate is not None:
        result = node.validate(value, call)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)
    return True
