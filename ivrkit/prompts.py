"""`ivrkit prompts`: every prompt of every state, for whoever writes (or records) the words.

One row per spoken text or audio file, with the language and voice Twilio will use. A flow
that declares ``languages`` gets each prompt checked for a Say in every one of them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from ivrkit import nodes as n
from ivrkit.flow import Flow
from ivrkit.pay import Pay, pay_prompt_kind
from ivrkit.relay.node import Agent

DEFAULT_LANGUAGE = "en-US"
"""Twilio's language when neither the part, the state nor the flow names one."""

COLUMNS = ("flow", "state", "kind", "text", "language", "voice", "missing")


@dataclass(frozen=True)
class PromptRow:
    flow: str
    state: str
    kind: str
    """prompt, short_prompt, no_input notice, no_match notice, confirm, hold, apology, and
    for a Pay ``pay <step>`` with ``attempt``/``error``/``card`` narrowing, e.g.
    ``pay payment-card-number error=invalid-card-number``."""
    text: str
    """The words, an audio URL, or ``(computed by <function>)`` for text built per call."""
    language: str
    voice: str
    missing: str = ""
    """Declared languages this prompt has no Say in (space-separated); empty when complete."""


def _text(part: n.PromptPart) -> str:
    if isinstance(part, n.Play):
        return part.url
    if isinstance(part, n.Say):
        if callable(part.text):
            return f"(computed by {getattr(part.text, '__name__', 'a function')})"
        return part.text
    return f"(pause {part.length}s)"


def _groups(node: n.Node) -> list[tuple[str, tuple[n.PromptPart, ...]]]:
    """(kind, parts) for each prompt a state can play."""
    if isinstance(node, n.Say | n.Play):
        return [("prompt", (node,))]
    groups: list[tuple[str, tuple[n.PromptPart, ...]]] = []
    prompt = getattr(node, "prompt", ())
    if prompt:
        groups.append(("prompt", prompt))
    if isinstance(node, n.Menu | n.Collect):
        if node.short_prompt is not node.prompt:
            groups.append(("short_prompt", node.short_prompt))
        for kind in ("no_input", "no_match"):
            notice = getattr(node.retries, f"{kind}_prompt")
            if notice:
                groups.append((f"{kind} notice", (n.Say(notice),)))
    if isinstance(node, n.Collect) and node.confirm:
        groups.append(("confirm", (n.Say(node.confirm),)))
    if isinstance(node, n.Enqueue) and node.hold:
        groups.append(("hold", node.hold))
    if isinstance(node, Agent) and node.welcome:
        groups.append(("welcome greeting", node.welcome_prompt()))
    if isinstance(node, Pay):
        groups += [(pay_prompt_kind(prompt), prompt.parts) for prompt in node.prompts]
    return groups


def flow_rows(flow: type[Flow]) -> list[PromptRow]:
    rows: list[PromptRow] = []
    flow_language = flow.language or DEFAULT_LANGUAGE
    for state, node in flow.states().items():
        # A Menu's own language sets speech recognition only; its Says use the part's or
        # the flow's language, as the TwiML renderer does.
        for kind, parts in _groups(node):
            spoken = [p for p in parts if not isinstance(p, n.Pause)]
            languages = {
                part.language or flow_language for part in spoken if isinstance(part, n.Say)
            }
            missing = " ".join(lang for lang in flow.languages if lang not in languages)
            for part in spoken:
                say = part if isinstance(part, n.Say) else None
                rows.append(
                    PromptRow(
                        flow=flow.name,
                        state=state,
                        kind=kind,
                        text=_text(part),
                        language=(say.language or flow_language) if say else "",
                        voice=(say.voice or flow.voice or "") if say else "",
                        missing=missing,
                    )
                )
    rows.append(
        PromptRow(
            flow=flow.name,
            state="",
            kind="apology",
            text=flow.apology,
            language=flow_language,
            voice=flow.voice or "",
            missing=" ".join(lang for lang in flow.languages if lang != flow_language),
        )
    )
    return rows


def catalogue(flows: Iterable[type[Flow]]) -> list[PromptRow]:
    return [row for flow in flows for row in flow_rows(flow)]


def to_csv(rows: list[PromptRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(row) for row in rows)
    return out.getvalue()


def to_json(rows: list[PromptRow]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2, ensure_ascii=False) + "\n"
