"""Who is on the phone: the protocol the engine asks at every input point, and two callers.

The engine asks the caller only where Twilio waits for the caller or the far end: a Gather
(keys, speech or silence), a Dial (how the far end answers), a Record (how long the caller speaks),
an Enqueue (how the wait ends). Everything else is heard through events. Tests, scenario files,
replay, load and the CLI all drive the same engine through this protocol.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TextIO, runtime_checkable

from simulator.model import Event

__all__ = [
    "AgentPrompt",
    "Answer",
    "Caller",
    "DialOutcome",
    "DialPrompt",
    "EnqueuePrompt",
    "GatherPrompt",
    "HangUp",
    "InteractiveCaller",
    "Interrupt",
    "Press",
    "QueueOutcome",
    "RecordOutcome",
    "RecordPrompt",
    "ScriptedCaller",
    "Speak",
    "Step",
    "Timeout",
]


# --- what the caller can do -------------------------------------------------------------------


@dataclass(frozen=True)
class Press:
    """Keys pressed at a Gather, e.g. ``"1234#"``. ``after`` = nested prompts heard before the
    first key (``0`` barges in at once); ``None`` waits for the whole prompt."""

    digits: str
    after: int | None = None


@dataclass(frozen=True)
class Speak:
    """Speech at a Gather, recognised as ``text`` with ``confidence``."""

    text: str
    confidence: float = 0.9


@dataclass(frozen=True)
class Interrupt(Speak):
    """In a ConversationRelay session: cut the agent off after hearing ``after_words`` words of
    what it is saying, then say ``text`` (nothing when empty). At a Gather it is plain speech."""

    text: str = ""
    confidence: float = 0.9
    after_words: int = 2


@dataclass(frozen=True)
class Timeout:
    """Silence: the Gather times out."""


@dataclass(frozen=True)
class HangUp:
    """The caller hangs up at this input point."""


@dataclass(frozen=True)
class DialOutcome:
    """How a Dial ends: ``status`` is a DialCallStatus (completed, busy, no-answer, failed,
    canceled, answered); ``duration`` is the bridged talk time in seconds; ``caller_hangs_up``
    ends the whole call during the bridge; ``presses_star`` has the caller press * after
    ``duration`` seconds, which drops the callee only where the Dial has hangupOnStar."""

    status: str = "completed"
    duration: int = 30
    caller_hangs_up: bool = False
    presses_star: bool = False


@dataclass(frozen=True)
class RecordOutcome:
    """The caller speaks ``seconds`` then presses ``key`` (or stays silent: ``None``), or
    hangs up (``hangup=True``) which ends the call after the recording."""

    seconds: int = 5
    key: str | None = None
    hangup: bool = False


@dataclass(frozen=True)
class QueueOutcome:
    """How an Enqueue ends: ``result`` is a QueueResult (bridged, hangup, leave, error,
    redirected...); ``wait_rounds`` = how many times the waitUrl document plays first;
    ``duration`` = bridged talk time."""

    result: str = "bridged"
    wait_rounds: int = 1
    duration: int = 60


GatherAnswer = Press | Speak | Timeout | HangUp
Answer = GatherAnswer | DialOutcome | RecordOutcome | QueueOutcome
Step = Answer


# --- what the caller is asked -----------------------------------------------------------------


@dataclass
class GatherPrompt:
    """A Gather waiting for input; ``prompts`` are the nested Say/Play/Pause events heard."""

    attributes: dict[str, str]
    input: frozenset[str]
    num_digits: int | None
    finish_on_key: str
    timeout: int
    url: str
    prompts: list[Event] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(getattr(e, "text", "") for e in self.prompts).strip()


@dataclass
class AgentPrompt(GatherPrompt):
    """A ConversationRelay session waiting for the caller's turn (asked through ``gather``, so
    every caller answers it: ``Speak`` becomes a ``prompt``, ``Press`` ``dtmf`` messages,
    ``Interrupt`` an ``interrupt``, ``Timeout`` silence). ``said``: the agent's utterances
    since the caller's last turn; ``dtmf``: whether the session detects keys."""

    said: list[str] = field(default_factory=list)
    dtmf: bool = False

    @property
    def text(self) -> str:
        return " ".join(self.said)


@dataclass
class DialPrompt:
    targets: list[str]
    attributes: dict[str, str]


@dataclass
class RecordPrompt:
    attributes: dict[str, str]
    max_length: int
    finish_on_key: str


@dataclass
class EnqueuePrompt:
    queue: str
    attributes: dict[str, str]


@runtime_checkable
class Caller(Protocol):
    """Anything that answers the engine's four questions. ``HangUp()`` is a valid answer to all."""

    async def gather(self, prompt: GatherPrompt) -> GatherAnswer: ...

    async def dial(self, prompt: DialPrompt) -> DialOutcome | HangUp: ...

    async def record(self, prompt: RecordPrompt) -> RecordOutcome | HangUp: ...

    async def enqueue(self, prompt: EnqueuePrompt) -> QueueOutcome | HangUp: ...


# --- scripted -----------------------------------------------------------------------------------

_KINDS: dict[type, str] = {
    Press: "gather", Speak: "gather", Interrupt: "gather", Timeout: "gather",
    DialOutcome: "dial", RecordOutcome: "record", QueueOutcome: "enqueue",
}


class ScriptedCaller:
    """Answers from a script, then hangs up when it runs out.

    Each step answers the next input point of its kind (Press/Speak/Timeout the next Gather,
    DialOutcome the next Dial...), in order. A ``HangUp()`` step hangs up at the first input point
    reached once the steps before it are used.
    """

    def __init__(self, steps: Iterable[Answer] = ()) -> None:
        self.steps: list[Answer] = list(steps)
        self.used: list[Answer] = []

    def _take(self, kind: str) -> Answer:
        for index, step in enumerate(self.steps):
            if isinstance(step, HangUp):
                break
            if _KINDS[type(step)] == kind:
                self.used.append(self.steps.pop(index))
                return step
        if self.steps and isinstance(self.steps[0], HangUp):
            self.used.append(self.steps.pop(0))
        return HangUp()

    def cuts_prompt(self, prompt: GatherPrompt, heard: int) -> bool:
        """Whether the next key lands after ``heard`` nested prompts (barge-in)."""
        for step in self.steps:
            if isinstance(step, HangUp):
                return False
            if _KINDS[type(step)] == "gather":
                return isinstance(step, Press) and step.after is not None and heard >= step.after
        return False

    async def gather(self, prompt: GatherPrompt) -> GatherAnswer:
        return self._take("gather")  # type: ignore[return-value]

    async def dial(self, prompt: DialPrompt) -> DialOutcome | HangUp:
        return self._take("dial")  # type: ignore[return-value]

    async def record(self, prompt: RecordPrompt) -> RecordOutcome | HangUp:
        return self._take("record")  # type: ignore[return-value]

    async def enqueue(self, prompt: EnqueuePrompt) -> QueueOutcome | HangUp:
        return self._take("enqueue")  # type: ignore[return-value]


# --- interactive ----------------------------------------------------------------------------------

DIAL_CHOICES = ("completed", "busy", "no-answer", "failed", "canceled")
QUEUE_CHOICES = ("bridged", "leave", "hangup", "error", "redirected")


class InteractiveCaller:
    """A phone in the terminal: asks for keys, speech and outcomes on ``stdin``.

    At a Gather: type keys (``1234#``), ``s: words`` to speak, Enter alone to let it time out,
    ``h`` to hang up. Talking to a ConversationRelay agent, ``i: words`` interrupts it.
    """

    def __init__(
        self,
        *,
        read: Callable[[str], str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self._read = read or input
        self._out = out or sys.stdout

    async def _ask(self, question: str) -> str | None:
        try:
            return (await asyncio.to_thread(self._read, question)).strip()
        except EOFError:
            return None

    async def gather(self, prompt: GatherPrompt) -> GatherAnswer:
        kinds = "/".join(sorted(prompt.input))
        if isinstance(prompt, AgentPrompt):
            question = ("  [agent] 's: words', 'i: words' to interrupt, keys, Enter = stay "
                        "silent, 'h' = hang up > ")
        else:
            question = f"  [{kinds}] keys, 's: words', Enter = timeout, 'h' = hang up > "
        answer = await self._ask(question)
        if answer is None or answer.lower() in ("h", "hangup"):
            return HangUp()
        if not answer:
            return Timeout()
        if answer.lower().startswith("s:"):
            return Speak(answer[2:].strip())
        if isinstance(prompt, AgentPrompt) and answer.lower().startswith("i:"):
            return Interrupt(answer[2:].strip())
        return Press(answer.replace(" ", ""))

    async def _choose(self, label: str, choices: tuple[str, ...], default: str) -> str | None:
        shown = ", ".join(choices)
        answer = await self._ask(f"  {label} [{shown}] (Enter = {default}, 'h' = hang up) > ")
        if answer is None or answer.lower() in ("h", "hangup"):
            return None
        return answer or default

    async def dial(self, prompt: DialPrompt) -> DialOutcome | HangUp:
        status = await self._choose(f"Dial {', '.join(prompt.targets)}", DIAL_CHOICES, "completed")
        if status is None:
            return HangUp()
        seconds = 0
        if status == "completed":
            text = await self._ask("  talk time in seconds (Enter = 30) > ")
            seconds = int(text) if text and text.isdigit() else 30
        return DialOutcome(status=status, duration=seconds)

    async def record(self, prompt: RecordPrompt) -> RecordOutcome | HangUp:
        text = await self._ask("  Recording: seconds to speak, optional key (e.g. '7 #'), "
                               "'h' = hang up after > ")
        if text is None:
            return HangUp()
        parts = text.split()
        hangup = bool(parts) and parts[-1].lower() in ("h", "hangup")
        if hangup:
            parts = parts[:-1]
        seconds = int(parts[0]) if parts and parts[0].isdigit() else 5
        key = parts[1] if len(parts) > 1 else None
        return RecordOutcome(seconds=seconds, key=key, hangup=hangup)

    async def enqueue(self, prompt: EnqueuePrompt) -> QueueOutcome | HangUp:
        result = await self._choose(f"Queue {prompt.queue!r}", QUEUE_CHOICES, "bridged")
        if result is None:
            return HangUp()
        return QueueOutcome(result=result)
