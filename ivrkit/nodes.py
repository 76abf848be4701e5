"""The state kinds a flow is made of.

Each node is a declaration: what the caller hears, which input it waits for, and which
outcome (trigger) leads to which state. Rendering lives in :mod:`ivrkit.twiml`; choosing the
trigger from a webhook lives in :mod:`ivrkit.inputs`. Nodes never talk to the network.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Union

from ivrkit.lines import line_of

if TYPE_CHECKING:
    from ivrkit.call import Call

Target = Union[str, "Node"]
Outcome = Union[str, "Node", "Repeat", None]
"""Where an outcome leads: a state, REPEAT (the same menu again), or nowhere yet."""
"""Where an outcome leads: a state name, or a node declared inline (e.g. ``Hangup()``)."""

TextSource = str | Callable[["Call"], str]
"""Prompt text: fixed, or computed from the call when the prompt is rendered."""

_PACKAGE_DIR = __file__.rsplit("/", 1)[0]


def _definition_site() -> tuple[str, int]:
    """The file and line of the flow code that declared a node, for error messages."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return ("<unknown>", 0)
    return (frame.f_code.co_filename, line_of(frame))


class Node:
    """Base of every state kind.

    ``waits_for_caller`` nodes end the TwiML document and wait for a Twilio callback;
    the others are passed through inside one webhook (prompts, decisions, sub-flow hops).
    """

    kind: ClassVar[str] = "node"
    waits_for_caller: ClassVar[bool] = False
    ends_call: ClassVar[bool] = False

    def __init__(self) -> None:
        self.name = ""
        self.defined_at = _definition_site()

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def outcomes(self) -> list[tuple[str, Outcome]]:
        """(trigger, target) pairs; a ``None`` target means "no way out" for validation."""
        return []

    def describe(self) -> str:
        """A short human text: what the caller hears here (used by graphs and logs)."""
        return self.kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name or '?'})"


# -- prompts ---------------------------------------------------------------------------------


class Say(Node):
    """Speak text (text-to-speech); as a state it moves on to ``then``."""

    kind = "say"

    def __init__(
        self,
        text: TextSource,
        *,
        then: Target | None = None,
        voice: str | None = None,
        language: str | None = None,
        loop: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(text, str) and not text.strip():
            raise ValueError("Say needs some text to speak")
        if loop < 0:
            raise ValueError("Say loop must be 0 (until hang-up) or more")
        self.text = text
        self.then = then
        self.voice = voice
        self.language = language
        self.loop = loop

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [("next", self.then)]

    def describe(self) -> str:
        return self.text if isinstance(self.text, str) else "(computed text)"


class Play(Node):
    """Play an audio file by URL; as a state it moves on to ``then``."""

    kind = "play"

    def __init__(self, url: str, *, then: Target | None = None, loop: int = 1) -> None:
        super().__init__()
        if not url:
            raise ValueError("Play needs a media URL")
        self.url = url
        self.then = then
        self.loop = loop

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [("next", self.then)]

    def describe(self) -> str:
        return f"(audio {self.url.rsplit('/', 1)[-1]})"


class Pause(Node):
    """Silence for ``length`` seconds; as a state it moves on to ``then``."""

    kind = "pause"

    def __init__(self, length: int = 1, *, then: Target | None = None) -> None:
        super().__init__()
        if length < 1:
            raise ValueError("Pause length is whole seconds, 1 or more")
        self.length = length
        self.then = then

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [("next", self.then)]

    def describe(self) -> str:
        return f"(pause {self.length}s)"


PromptPart = Say | Play | Pause
PromptLike = str | PromptPart | Sequence[str | PromptPart] | None


def prompt_parts(prompt: PromptLike) -> tuple[PromptPart, ...]:
    """Normalise a prompt given as text, a part, or a list of both."""
    if prompt is None:
        return ()
    if isinstance(prompt, str):
        return (Say(prompt),)
    if isinstance(prompt, Say | Play | Pause):
        return (prompt,)
    parts: list[PromptPart] = []
    for item in prompt:
        parts.extend(prompt_parts(item))
    return tuple(parts)


def describe_prompt(parts: Sequence[PromptPart]) -> str:
    return " ".join(part.describe() for part in parts)


# -- caller input ------------------------------------------------------------------------------


class Repeat:
    """Target for a key that plays the current menu again without counting a retry."""

    def __repr__(self) -> str:
        return "Repeat()"


REPEAT = Repeat()


@dataclass(frozen=True)
class Retries:
    """How a menu copes with silence and wrong input before it gives up.

    The counters are separate: three silences and three wrong keys are different callers.
    ``give_up`` is where the call goes when either runs out; a flow-wide default can be set
    with ``Flow.give_up``.
    """

    no_input: int = 3
    no_match: int = 3
    give_up: Target | None = None
    no_input_prompt: str | None = "Sorry, I didn't hear anything."
    no_match_prompt: str | None = "Sorry, that is not a valid choice."

    def __post_init__(self) -> None:
        if self.no_input < 1 or self.no_match < 1:
            raise ValueError("Retries counts start at 1 (give up on the first miss)")


INPUT_MODES = ("dtmf", "speech", "dtmf speech")
_KEY = re.compile(r"[0-9*#]+")


def _check_input_mode(mode: str) -> str:
    if mode not in INPUT_MODES:
        raise ValueError(f"input must be one of {', '.join(INPUT_MODES)}, not {mode!r}")
    return mode


class _Asks(Node):
    """Shared parts of the nodes that gather input (Menu, Collect)."""

    waits_for_caller = True

    def __init__(
        self,
        prompt: PromptLike,
        *,
        short_prompt: PromptLike,
        retries: Retries,
        timeout: int,
        finish_on_key: str,
        input: str,
        language: str | None,
        hints: Iterable[str],
        global_keys: bool,
    ) -> None:
        super().__init__()
        self.prompt = prompt_parts(prompt)
        if not self.prompt:
            raise ValueError(f"{type(self).__name__} needs a prompt: a caller cannot guess")
        self.short_prompt = prompt_parts(short_prompt) or self.prompt
        self.retries = retries
        if not 1 <= timeout <= 600:
            raise ValueError("timeout is seconds of silence, from 1 to 600")
        self.timeout = timeout
        if finish_on_key not in ("", "#", "*") and not re.fullmatch(r"[0-9]", finish_on_key):
            raise ValueError("finish_on_key is one key (0-9, #, *) or '' for none")
        self.finish_on_key = finish_on_key
        self.input = _check_input_mode(input)
        self.language = language
        self.hints = tuple(hints)
        self.global_keys = global_keys

    def describe(self) -> str:
        return describe_prompt(self.prompt)


class Menu(_Asks):
    """Choose by key (and/or by word): the classic "press 1 for sales" menu."""

    kind = "menu"

    def __init__(
        self,
        prompt: PromptLike,
        *,
        choices: Mapping[str, Target | Repeat],
        words: Mapping[str, Target | Repeat] | None = None,
        short_prompt: PromptLike = None,
        retries: Retries = Retries(),  # noqa: B008 - frozen value object
        timeout: int = 5,
        finish_on_key: str = "#",
        input: str | None = None,
        language: str | None = None,
        hints: Iterable[str] = (),
        global_keys: bool = True,
    ) -> None:
        words = dict(words or {})
        super().__init__(
            prompt,
            short_prompt=short_prompt,
            retries=retries,
            timeout=timeout,
            finish_on_key=finish_on_key,
            input=input or ("dtmf speech" if words else "dtmf"),
            language=language,
            hints=tuple(hints) or tuple(words),
            global_keys=global_keys,
        )
        if not choices and not words:
            raise ValueError("Menu needs choices (keys) or words to choose from")
        for key in choices:
            if not _KEY.fullmatch(key):
                raise ValueError(f"Menu choice key {key!r} is not made of 0-9, * and #")
        self.choices = dict(choices)
        self.words = {word.lower().strip(): target for word, target in words.items()}

    def outcomes(self) -> list[tuple[str, Outcome]]:
        pairs: list[tuple[str, Outcome]] = [
            (f"press:{key}", target) for key, target in self.choices.items()
        ]
        pairs += [(f"say:{word}", target) for word, target in self.words.items()]
        return pairs

    def key_length(self) -> int | None:
        """numDigits for the Gather when every key has one length (instant menus)."""
        lengths = {len(key) for key in self.choices}
        return lengths.pop() if len(lengths) == 1 else None


class Collect(_Asks):
    """Multi-digit (or spoken) entry: account numbers, PINs, dates.

    The value is validated by length, ``pattern`` and/or ``validate`` (sync or async,
    ``(value, call) -> bool``), optionally read back for confirmation, then saved in
    ``call.data[save_as]``.
    """

    kind = "collect"

    def __init__(
        self,
        prompt: PromptLike,
        *,
        save_as: str,
        then: Target,
        digits: int | tuple[int, int] | None = None,
        pattern: str | None = None,
        validate: Callable[..., Any] | None = None,
        confirm: str | None = None,
        short_prompt: PromptLike = None,
        retries: Retries = Retries(),  # noqa: B008 - frozen value object
        timeout: int = 5,
        finish_on_key: str = "#",
        input: str = "dtmf",
        language: str | None = None,
        hints: Iterable[str] = (),
        global_keys: bool = False,
    ) -> None:
        super().__init__(
            prompt,
            short_prompt=short_prompt,
            retries=retries,
            timeout=timeout,
            finish_on_key=finish_on_key,
            input=input,
            language=language,
            hints=hints,
            global_keys=global_keys,
        )
        if not save_as.isidentifier():
            raise ValueError(f"save_as must be a simple name, not {save_as!r}")
        if isinstance(digits, int):
            digits = (digits, digits)
        if digits is not None and not 1 <= digits[0] <= digits[1]:
            raise ValueError("digits is a count or a (min, max) range of at least 1")
        if confirm is not None and "{value}" not in confirm:
            raise ValueError('confirm text must contain "{value}" where the entry is read back')
        self.save_as = save_as
        self.then = then
        self.digits = digits
        self.pattern = re.compile(pattern) if pattern else None
        self.validate = validate
        self.confirm = confirm

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [("entered", self.then)]


# -- telephony --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    """A phone number to ring (E.164)."""

    number: str
    send_digits: str | None = None


@dataclass(frozen=True)
class Client:
    """A Twilio Voice SDK client identity."""

    identity: str


@dataclass(frozen=True)
class Sip:
    """A SIP URI."""

    uri: str
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class Conference:
    """A named conference room."""

    room: str
    start_on_enter: bool = True
    end_on_exit: bool = False


@dataclass(frozen=True)
class Queue:
    """Take the next caller waiting in a queue (an agent's line)."""

    name: str


DialTarget = str | Number | Client | Sip | Conference | Queue
DIAL_STATUSES = ("completed", "answered", "busy", "no-answer", "failed", "canceled")
_DIAL_MUST_HANDLE = ("busy", "no-answer", "failed")


def _check_outcome_names(
    kind: str, what: str, on: Mapping[str, Target] | None, known: Sequence[str]
) -> None:
    unknown = sorted(set(on or {}) - set(known) - {"*"})
    if unknown:
        raise ValueError(
            f"{kind} outcome {unknown[0]!r} is not {what}; use {', '.join(known)} or '*'"
        )


class End(Node):
    """Hang up (optionally after a goodbye); usable inline: ``then=Hangup()``."""

    kind = "hangup"
    ends_call = True

    def __init__(self, prompt: PromptLike = None) -> None:
        super().__init__()
        self.prompt = prompt_parts(prompt)

    def describe(self) -> str:
        return describe_prompt(self.prompt) or "hang up"


Hangup = End


class Dial(Node):
    """Connect the caller to a number, client, SIP endpoint, conference or queue."""

    kind = "dial"
    waits_for_caller = True

    def __init__(
        self,
        *targets: DialTarget,
        prompt: PromptLike = None,
        timeout: int = 30,
        caller_id: str | None = None,
        time_limit: int | None = None,
        record: bool = False,
        hangup_on_star: bool = False,
        answer_on_bridge: bool = False,
        on: Mapping[str, Target] | None = None,
        then: Target | None = None,
    ) -> None:
        super().__init__()
        if not targets:
            raise ValueError("Dial needs something to ring: a number, Client, Sip, ...")
        if len(targets) > 10:
            raise ValueError("Twilio rings at most 10 targets at once")
        if not 5 <= timeout <= 600:
            raise ValueError("Dial timeout is 5 to 600 seconds")
        _check_outcome_names("Dial", "a DialCallStatus", on, DIAL_STATUSES)
        self.targets = tuple(Number(t) if isinstance(t, str) else t for t in targets)
        self.prompt = prompt_parts(prompt)
        self.timeout = timeout
        self.caller_id = caller_id
        self.time_limit = time_limit
        self.record = record
        self.hangup_on_star = hangup_on_star
        self.answer_on_bridge = answer_on_bridge
        self.on = dict(on or {})
        self.then = then
        self._hang_up = End()

    def target_for(self, status: str) -> Target | None:
        """The state a DialCallStatus leads to; the call simply ends after a finished bridge."""
        if status in self.on:
            return self.on[status]
        if status in ("completed", "answered", "canceled"):
            return self.then if self.then is not None else self._hang_up
        return self.on.get("*")

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [(f"dial:{status}", self.target_for(status)) for status in DIAL_STATUSES]

    def unhandled_statuses(self) -> list[str]:
        return [status for status in _DIAL_MUST_HANDLE if self.target_for(status) is None]

    def describe(self) -> str:
        return "dial " + ", ".join(_describe_dial_target(t) for t in self.targets)


def _describe_dial_target(target: DialTarget) -> str:
    if isinstance(target, Number):
        return target.number
    if isinstance(target, Client):
        return f"client:{target.identity}"
    if isinstance(target, Sip):
        return target.uri
    if isinstance(target, Conference):
        return f"conference {target.room}"
    if isinstance(target, Queue):
        return f"queue {target.name}"
    return str(target)


class Record(Node):
    """Record the caller (voicemail); the recording is saved in ``call.data[save_as]``."""

    kind = "record"
    waits_for_caller = True

    def __init__(
        self,
        prompt: PromptLike = None,
        *,
        then: Target,
        on_empty: Target | None = None,
        save_as: str = "recording",
        max_length: int = 120,
        timeout: int = 5,
        finish_on_key: str = "1234567890*#",
        beep: bool = True,
        transcribe: bool = False,
        trim_silence: bool = True,
    ) -> None:
        super().__init__()
        if not 1 <= max_length <= 14400:
            raise ValueError("Record max_length is 1 to 14400 seconds")
        if transcribe and max_length > 120:
            raise ValueError("Twilio transcribes recordings of at most 120 seconds")
        self.prompt = prompt_parts(prompt)
        self.then = then
        self.on_empty = on_empty
        self.save_as = save_as
        self.max_length = max_length
        self.timeout = timeout
        self.finish_on_key = finish_on_key
        self.beep = beep
        self.transcribe = transcribe
        self.trim_silence = trim_silence

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [("recorded", self.then), ("empty", self.on_empty or self.then)]

    def describe(self) -> str:
        return describe_prompt(self.prompt) or "(record)"


QUEUE_RESULTS = (
    "bridged",
    "bridging-in-process",
    "error",
    "hangup",
    "leave",
    "redirected",
    "redirected-from-bridged",
    "queue-full",
    "system-error",
)
_QUEUE_ENDS_CALL = (
    "bridged",
    "bridging-in-process",
    "hangup",
    "redirected",
    "redirected-from-bridged",
)


class Enqueue(Node):
    """Put the caller in a queue with hold music until an agent takes the call."""

    kind = "enqueue"
    waits_for_caller = True

    def __init__(
        self,
        queue: str,
        *,
        prompt: PromptLike = None,
        hold: PromptLike = None,
        wait_url: str | None = None,
        on: Mapping[str, Target] | None = None,
        then: Target | None = None,
    ) -> None:
        super().__init__()
        if not queue or len(queue) > 64:
            raise ValueError("queue name is 1 to 64 characters")
        _check_outcome_names("Enqueue", "a QueueResult", on, QUEUE_RESULTS)
        self.queue = queue
        self.prompt = prompt_parts(prompt)
        self.hold = prompt_parts(hold)
        self.wait_url = wait_url
        self.on = dict(on or {})
        self.then = then
        self._hang_up = End()

    def target_for(self, result: str) -> Target | None:
        if result in self.on:
            return self.on[result]
        if "*" in self.on:
            return self.on["*"]
        if self.then is not None:
            return self.then
        return self._hang_up if result in _QUEUE_ENDS_CALL else None

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [(f"queue:{result}", self.target_for(result)) for result in QUEUE_RESULTS]

    def describe(self) -> str:
        return describe_prompt(self.prompt) or f"(queue {self.queue})"


# -- control ------------------------------------------------------------------------------------


class SubFlow(Node):
    """Hand the call to another flow; with ``then``, come back when it reaches ``Return()``."""

    kind = "subflow"

    def __init__(self, flow: str, *, then: Target | None = None) -> None:
        super().__init__()
        self.flow = flow
        self.then = then
        self._hang_up = End()

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [("returned", self.then if self.then is not None else self._hang_up)]

    def describe(self) -> str:
        return f"(flow {self.flow})"


class Return(Node):
    """End a sub-flow and give the call back to the flow that started it."""

    kind = "return"
    ends_call = True

    def describe(self) -> str:
        return "(return)"


class Reject(Node):
    """Refuse the call unanswered (not billed); only valid before anything was said."""

    kind = "reject"
    ends_call = True

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__()
        if reason not in ("rejected", "busy"):
            raise ValueError("Reject reason is 'rejected' or 'busy'")
        self.reason = reason

    def describe(self) -> str:
        return f"(reject: {self.reason})"


class Redirect(Node):
    """Hand the call to TwiML served elsewhere (another app); this flow ends here."""

    kind = "redirect"
    ends_call = True

    def __init__(self, url: str, *, method: str = "POST") -> None:
        super().__init__()
        self.url = url
        self.method = method

    def describe(self) -> str:
        return f"(redirect {self.url})"


class Decision(Node):
    """A state decided by the flow's own code: the callback returns the next state's name."""

    kind = "decision"

    def __init__(self, function: Callable[..., Any], targets: Iterable[str]) -> None:
        super().__init__()
        self.function = function
        self.targets = tuple(targets)
        code = function.__code__
        self.defined_at = (code.co_filename, code.co_firstlineno)

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [(f"goto:{target}", target) for target in self.targets]

    def describe(self) -> str:
        return f"({self.function.__name__}())"


def decision(state: str, *, targets: Iterable[str] | None = None) -> Callable[[Any], Any]:
    """Declare a state whose next state is chosen by Python code (sync or async).

    ``targets`` lists the states the function may return; when omitted they are read from
    the string literals the function returns, so a typo still fails at load time.
    """

    def mark(function: Any) -> Any:
        function.__ivrkit_decision__ = (state, None if targets is None else tuple(targets))
        return function

    return mark
