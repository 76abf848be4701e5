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

from ivrkit import arguments as check
from ivrkit.arguments import ArgumentProblem
from ivrkit.lines import line_of

if TYPE_CHECKING:
    from ivrkit.call import Call

Target = Union[str, "Node"]
Outcome = Union[str, "Node", "Repeat", None]
"""Where an outcome leads: a state, REPEAT (the same menu again), or nowhere yet.

A state is named by a string or declared inline (e.g. ``then=Hangup()``)."""

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
    A node's arguments are checked when it is built, but the problems are only reported
    when its Flow class is created (:mod:`ivrkit.arguments` says why).
    """

    kind: ClassVar[str] = "node"
    waits_for_caller: ClassVar[bool] = False
    ends_call: ClassVar[bool] = False

    def __init__(self) -> None:
        self.name = ""
        self.defined_at = _definition_site()
        self.argument_problems: list[ArgumentProblem] = []

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def _check(self, problems: list[ArgumentProblem]) -> bool:
        """Keep ``problems`` for the Flow class to report; True when there were none."""
        self.argument_problems += problems
        return not problems

    def _prompt(self, argument: str, value: Any, *, required: bool) -> tuple[PromptPart, ...]:
        parts, problems = _checked_prompt(argument, value)
        self._check(problems)
        if required and not parts and not problems:
            self._check(
                [
                    check.ArgumentProblem(
                        argument,
                        check.given(value),
                        'a caller cannot guess: give what they hear, e.g. "For sales press 1."',
                    )
                ]
            )
        return parts

    def outcomes(self) -> list[tuple[str, Outcome]]:
        """(trigger, target) pairs; a ``None`` target means "no way out" for validation."""
        return []

    def describe(self) -> str:
        """A short human text: what the caller hears here (used by graphs and logs)."""
        return self.kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name or '?'})"


# -- prompts ---------------------------------------------------------------------------------

_LOOP_MEANING = "how many times to play it; 0 repeats until the caller hangs up"


class Say(Node):
    """Speak text to the caller (text-to-speech), then move on to ``then``.

    Outcome: ``then`` (required when Say is a state; not used inside a prompt). Defaults:
    the flow's ``voice`` and ``language``, said once (``loop=1``). ``text`` may be a function
    ``(call) -> str`` computed when the prompt is rendered.

        welcome = Say("Thanks for calling Acme.", then="main_menu")
        balance = Say(lambda call: f"You owe {call.data['due']} dollars.", then=Hangup())
    """

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
        self._check(
            check.text_source("text", text)
            + check.target("then", then, optional=True)
            + check.optional_text("voice", voice, '"Polly.Joanna"')
            + check.optional_text("language", language, '"en-US"')
            + check.whole_number("loop", loop, 0, 1000, _LOOP_MEANING)
        )
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
    """Play an audio file by URL, then move on to ``then``.

    Outcome: ``then``. Default: played once (``loop=1``).

        jingle = Play("https://example.com/jingle.mp3", then="main_menu")
        menu = Menu([Play("https://example.com/hi.mp3"), "Press 1."], choices={"1": "sales"})
    """

    kind = "play"

    def __init__(self, url: str, *, then: Target | None = None, loop: int = 1) -> None:
        super().__init__()
        self._check(
            check.required_text("url", url, '"https://example.com/hello.mp3"')
            + check.target("then", then, optional=True)
            + check.whole_number("loop", loop, 0, 1000, _LOOP_MEANING)
        )
        self.url = url
        self.then = then
        self.loop = loop

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [("next", self.then)]

    def describe(self) -> str:
        return f"(audio {str(self.url).rsplit('/', 1)[-1]})"


class Pause(Node):
    """Silence for ``length`` whole seconds (default 1), then move on to ``then``.

    Outcome: ``then``.

        breathe = Pause(2, then="main_menu")
        menu = Menu(["Welcome.", Pause(1), "Press 1."], choices={"1": "sales"})
    """

    kind = "pause"

    def __init__(self, length: int = 1, *, then: Target | None = None) -> None:
        super().__init__()
        self._check(
            check.whole_number("length", length, 1, 600, "whole seconds of silence")
            + check.target("then", then, optional=True)
        )
        self.length = length
        self.then = then

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [("next", self.then)]

    def describe(self) -> str:
        return f"(pause {self.length}s)"


PromptPart = Say | Play | Pause
PromptLike = str | PromptPart | Sequence[str | PromptPart] | None
_PROMPT_EXPECTED = 'expected text, Say(...), Play(...), Pause(...) or a list of them, e.g. "Hello."'


def _checked_prompt(
    argument: str, prompt: Any
) -> tuple[tuple[PromptPart, ...], list[ArgumentProblem]]:
    """A prompt's parts, and what is wrong with it (wrong items are left out of the parts)."""
    if prompt is None:
        return (), []
    if isinstance(prompt, str):
        if not prompt.strip():
            return (), [check.ArgumentProblem(argument, check.given(prompt), _PROMPT_EXPECTED)]
        return (Say(prompt),), []
    if isinstance(prompt, Say | Play | Pause):
        return (prompt,), check.nested(argument, prompt)
    if not isinstance(prompt, list | tuple):
        return (), [check.ArgumentProblem(argument, check.given(prompt), _PROMPT_EXPECTED)]
    parts: list[PromptPart] = []
    problems: list[ArgumentProblem] = []
    for index, item in enumerate(prompt):
        if isinstance(item, list | tuple) or item is None:
            problems.append(
                check.ArgumentProblem(f"{argument}[{index}]", check.given(item), _PROMPT_EXPECTED)
            )
            continue
        found, wrong = _checked_prompt(f"{argument}[{index}]", item)
        parts += found
        problems += wrong
    return tuple(parts), problems


def prompt_parts(prompt: PromptLike) -> tuple[PromptPart, ...]:
    """Normalise a prompt given as text, a part, or a list of both."""
    return _checked_prompt("prompt", prompt)[0]


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
    with ``Flow.give_up``. A notice of ``None`` says nothing before the prompt is repeated.

        retries=Retries(no_input=2, no_match=3, give_up="operator")
    """

    no_input: int = 3
    no_match: int = 3
    give_up: Target | None = None
    no_input_prompt: str | None = "Sorry, I didn't hear anything."
    no_match_prompt: str | None = "Sorry, that is not a valid choice."

    def __post_init__(self) -> None:
        attempts = "attempts before giving up (1 gives up on the first miss)"
        problems = (
            check.whole_number("no_input", self.no_input, 1, None, attempts)
            + check.whole_number("no_match", self.no_match, 1, None, attempts)
            + check.target("give_up", self.give_up, optional=True)
            + check.optional_text("no_input_prompt", self.no_input_prompt, '"Sorry?"')
            + check.optional_text("no_match_prompt", self.no_match_prompt, '"Sorry?"')
        )
        object.__setattr__(self, "argument_problems", problems)


INPUT_MODES = ("dtmf", "speech", "dtmf speech")


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
        self.prompt = self._prompt("prompt", prompt, required=True)
        self.short_prompt = self._prompt("short_prompt", short_prompt, required=False)
        self.short_prompt = self.short_prompt or self.prompt
        if not isinstance(retries, Retries):
            self._check(
                [
                    check.ArgumentProblem(
                        "retries",
                        check.given(retries),
                        'expected Retries(...), e.g. Retries(no_input=3, give_up="operator")',
                    )
                ]
            )
            retries = Retries()
        self._check(check.nested("retries", retries))
        self.retries = retries
        self._check(
            check.whole_number("timeout", timeout, 1, 600, "seconds of silence before a retry")
            + check.one_key("finish_on_key", finish_on_key, allow_none=True)
            + check.optional_text("language", language, '"en-US"')
            + check.flag("global_keys", global_keys)
        )
        self.timeout = timeout
        self.finish_on_key = finish_on_key
        self.input = input if self._check(check.one_of("input", input, INPUT_MODES)) else "dtmf"
        self.language = language
        good_hints = self._check(check.strings("hints", hints, '["sales", "support"]'))
        self.hints = tuple(hints) if good_hints else ()
        self.global_keys = global_keys

    def describe(self) -> str:
        return describe_prompt(self.prompt)


class Menu(_Asks):
    """Ask the caller to choose by key (and/or by word): "for sales press 1".

    Outcomes: each key of ``choices`` and word of ``words`` leads to its state (REPEAT plays
    the menu again); silence and wrong keys re-prompt (``short_prompt`` from the second try)
    until ``retries`` runs out, then the call goes to the give-up state. Defaults: 3 silences
    and 3 wrong keys, 5 s timeout, ``#`` ends entry, the flow's ``global_keys`` also work.

        main_menu = Menu("For sales press 1. For support press 2.",
                         choices={"1": "sales", "2": "support"}, retries=Retries(give_up="bye"))
    """

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
        word_problems = check.word_map("words", words)
        words = {} if word_problems or words is None else dict(words)
        super().__init__(
            prompt,
            short_prompt=short_prompt,
            retries=retries,
            timeout=timeout,
            finish_on_key=finish_on_key,
            input=input or ("dtmf speech" if words else "dtmf"),
            language=language,
            hints=hints or tuple(words),
            global_keys=global_keys,
        )
        self._check(word_problems)
        good_choices = self._check(check.key_map("choices", choices, optional=False))
        if good_choices and not word_problems and not choices and not words:
            self._check(
                [
                    check.ArgumentProblem(
                        "choices",
                        "no choices and no words",
                        'give at least one, e.g. choices={"1": "sales"}',
                    )
                ]
            )
        self.choices = dict(choices) if isinstance(choices, Mapping) else {}
        self.words = {str(word).lower().strip(): target for word, target in words.items()}

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


KEEP_MODES = ("verdict", "hash", "encrypted")

_SPOKEN_KEYS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four",
    "5": "five", "6": "six", "7": "seven", "8": "eight", "9": "nine",
}  # fmt: skip


class Collect(_Asks):
    """Ask for a multi-digit (or spoken) entry: account numbers, PINs, dates.

    The entry is checked by length (``digits``), ``pattern`` and/or ``validate`` (sync or
    async, ``(value, call) -> bool``); with ``confirm`` it is read back ("You entered
    {value}. Press 1 if that is right, or 2 to enter it again."): ``confirm_key`` (default
    "1") accepts it, ``retry_key`` (default "2") asks again. Then it is saved in
    ``call.data[save_as]``. Outcome: ``then``; silence and invalid entries re-prompt and give
    up like a Menu. Defaults: 3 and 3 retries, 5 s timeout, ``#`` ends entry, DTMF only.

        account = Collect("Enter your 8 digit account number.", save_as="account", digits=8,
                          confirm="You entered {value}. Press 1 if right, 2 to retry.", then="pin")

    ``sensitive=True`` (or any ``keep=``, or naming the state in ``Flow.sensitive``) marks
    a caller secret: the validator still gets the clear value, but logs, the event log and
    the stored TwiML see ``****``, and ``call.data[save_as]`` holds what ``keep`` says:
    ``"verdict"`` (default, ``True``), ``"hash"`` or ``"encrypted"``; see
    :mod:`ivrkit.sensitive`.
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
        confirm_key: str = "1",
        retry_key: str = "2",
        short_prompt: PromptLike = None,
        retries: Retries = Retries(),  # noqa: B008 - frozen value object
        timeout: int = 5,
        finish_on_key: str = "#",
        input: str = "dtmf",
        language: str | None = None,
        hints: Iterable[str] = (),
        global_keys: bool = False,
        sensitive: bool = False,
        keep: str | None = None,
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
        self._check(
            check.name("save_as", save_as, '"account"')
            + check.target("then", then, optional=False)
            + check.function("validate", validate, "(value, call) -> bool, sync or async")
        )
        if self._check(check.digit_range("digits", digits)) and digits is not None:
            low, high = (digits, digits) if isinstance(digits, int) else digits
            digits = (low, high)
        else:
            digits = None
        good_pattern = self._check(check.pattern("pattern", pattern))
        self._check(_confirm_problems(confirm, confirm_key, retry_key, finish_on_key))
        self._check(check.flag("sensitive", sensitive))
        if keep is not None:
            self._check(check.one_of("keep", keep, KEEP_MODES))
        self.sensitive = sensitive is True or keep is not None
        self.keep = keep
        self.save_as = save_as
        self.then = then
        self.digits: tuple[int, int] | None = digits
        self.pattern = re.compile(pattern) if pattern and good_pattern else None
        self.validate = validate
        self.confirm = confirm
        self.confirm_key = confirm_key
        self.retry_key = retry_key

    def confirm_hints(self) -> tuple[str, ...]:
        """Speech hints for the read-back: the two keys as words ("one", "two")."""
        keys = (self.confirm_key, self.retry_key)
        return tuple(_SPOKEN_KEYS[key] for key in keys if key in _SPOKEN_KEYS)

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [("entered", self.then)]


def _confirm_problems(
    confirm: Any, confirm_key: Any, retry_key: Any, finish_on_key: Any
) -> list[ArgumentProblem]:
    problems = check.one_key("confirm_key", confirm_key, allow_none=False)
    problems += check.one_key("retry_key", retry_key, allow_none=False)
    if not problems and confirm_key == retry_key:
        problems.append(
            check.ArgumentProblem(
                "retry_key", f'"{retry_key}" is also the confirm_key', "give them different keys"
            )
        )
    for argument, key in (("confirm_key", confirm_key), ("retry_key", retry_key)):
        if not problems and key == finish_on_key:
            problems.append(
                check.ArgumentProblem(
                    argument,
                    f'"{key}" is also the finish_on_key, so pressing it sends nothing',
                    "pick another key or another finish_on_key",
                )
            )
    if confirm is None:
        return problems
    example = '"You entered {value}. Press 1 if that is right, or 2 to enter it again."'
    if not isinstance(confirm, str) or "{value}" not in confirm:
        return problems + [
            check.ArgumentProblem(
                "confirm", check.given(confirm), f"expected text with {{value}}, e.g. {example}"
            )
        ]
    try:
        confirm.format(value="1234")
    except (KeyError, IndexError, ValueError) as error:
        problems.append(
            check.ArgumentProblem(
                "confirm",
                f"{{{error.args[0] if error.args else ''}}} cannot be filled in",
                'only {value} is filled in; write other braces twice, e.g. "{{"',
            )
        )
    return problems


# -- telephony --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    """A phone number to ring (E.164), optionally sending digits once it answers."""

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
DIAL_BRIDGED = ("completed", "answered")
"""The caller talked to whoever was dialled; the call ends, or goes on to ``then``."""
_DIAL_MUST_HANDLE = ("busy", "no-answer", "failed")


def _dial_target_problems(index: int, target: Any) -> list[ArgumentProblem]:
    where = f"targets[{index}]"
    if isinstance(target, str):
        return check.required_text(where, target, '"+15550100"')
    fields: list[tuple[str, Any, bool]] = []
    if isinstance(target, Number):
        fields = [("number", target.number, True), ("send_digits", target.send_digits, False)]
    elif isinstance(target, Client):
        fields = [("identity", target.identity, True)]
    elif isinstance(target, Sip):
        fields = [("uri", target.uri, True), ("username", target.username, False)]
        fields.append(("password", target.password, False))
    elif isinstance(target, Conference):
        return (
            check.required_text(f"{where}.room", target.room, '"team-standup"')
            + check.flag(f"{where}.start_on_enter", target.start_on_enter)
            + check.flag(f"{where}.end_on_exit", target.end_on_exit)
        )
    elif isinstance(target, Queue):
        fields = [("name", target.name, True)]
    else:
        return [
            check.ArgumentProblem(
                where,
                check.given(target),
                'expected a number like "+15550100", Number, Client, Sip, Conference or Queue',
            )
        ]
    problems: list[ArgumentProblem] = []
    for field_name, value, required in fields:
        checker = check.required_text if required else check.optional_text
        problems += checker(f"{where}.{field_name}", value, '"+15550100"')
    return problems


class Dial(Node):
    """Connect the caller to a number, client, SIP endpoint, conference or queue.

    Outcomes: after a successful bridge (DialCallStatus ``completed`` or ``answered``) the
    call ends, or goes to ``then`` if given. ``on`` maps the other statuses (``busy``,
    ``no-answer``, ``failed``, ``canceled``) to states; ``"*"`` stands for every
    unsuccessful one not named. busy, no-answer and failed must lead somewhere; canceled
    hangs up unless named. Defaults: ring 30 s, the caller's number as caller id.

        sales = Dial("+15550111", timeout=20, on={"*": "voicemail"})
        agent = Dial(Client("alice"), on={"busy": "queue", "*": "voicemail"}, then="survey")
    """

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
        if not 1 <= len(targets) <= 10:
            self._check(
                [
                    check.ArgumentProblem(
                        "targets",
                        f"{len(targets)} given",
                        'expected 1 to 10 things to ring, e.g. Dial("+15550100")',
                    )
                ]
            )
        for index, target in enumerate(targets):
            self._check(_dial_target_problems(index, target))
        self.prompt = self._prompt("prompt", prompt, required=False)
        self._check(
            check.whole_number("timeout", timeout, 5, 600, "seconds to ring before no-answer")
            + check.optional_text("caller_id", caller_id, '"+15550100"')
            + (
                check.whole_number("time_limit", time_limit, 1, 14400, "longest call in seconds")
                if time_limit is not None
                else []
            )
            + check.flag("record", record)
            + check.flag("hangup_on_star", hangup_on_star)
            + check.flag("answer_on_bridge", answer_on_bridge)
            + check.target("then", then, optional=True)
        )
        good_on = self._check(
            check.outcome_map("on", "Dial", "a DialCallStatus", on, DIAL_STATUSES)
        )
        self.targets = tuple(Number(t) if isinstance(t, str) else t for t in targets)
        self.timeout = timeout
        self.caller_id = caller_id
        self.time_limit = time_limit
        self.record = record
        self.hangup_on_star = hangup_on_star
        self.answer_on_bridge = answer_on_bridge
        self.on = dict(on or {}) if good_on else {}
        self.then = then
        self._hang_up = Hangup()

    def target_for(self, status: str) -> Target | None:
        """Where a DialCallStatus leads: ``then`` only after a bridge, ``"*"`` only otherwise."""
        if status in self.on:
            return self.on[status]
        if status in DIAL_BRIDGED:
            return self.then if self.then is not None else self._hang_up
        if "*" in self.on:
            return self.on["*"]
        return None if status in _DIAL_MUST_HANDLE else self._hang_up

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


class Hangup(Node):
    """End the call, after an optional goodbye; usable as a state or inline (``then=Hangup()``).

    No outcomes: the call is over. Default: hang up without a word.

        goodbye = Hangup("Thank you for calling. Goodbye.")
        thanks = Say("Thanks!", then=Hangup())
    """

    kind = "hangup"
    ends_call = True

    def __init__(self, prompt: PromptLike = None) -> None:
        super().__init__()
        self.prompt = self._prompt("prompt", prompt, required=False)

    def describe(self) -> str:
        return describe_prompt(self.prompt) or "hang up"


End = Hangup
"""The class's old name inside ivrkit (checker rules still say ``n.End``); ``ivrkit.End`` is
a deprecated alias with a warning, and only ``Hangup`` is public."""


_RECORD_KEYS = 'expected the keys that stop the recording, e.g. "#", or "" for none'


class Record(Node):
    """Record the caller (voicemail) after an optional prompt and a beep.

    The recording (url, duration, sid) is saved in ``call.data[save_as]``. Outcomes:
    ``then`` once something was recorded; ``on_empty`` (default: ``then``) for silence.
    Defaults: up to 120 s, stops after 5 s of silence or on any key, beep on, silence
    trimmed, no transcription, saved as "recording".

        voicemail = Record("Leave a message after the beep.", max_length=60, then="thanks",
                           on_empty="goodbye")
    """

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
        self.prompt = self._prompt("prompt", prompt, required=False)
        self._check(
            check.target("then", then, optional=False)
            + check.target("on_empty", on_empty, optional=True)
            + check.name("save_as", save_as, '"voicemail"')
            + check.whole_number("max_length", max_length, 1, 14400, "longest recording in s")
            + check.whole_number("timeout", timeout, 0, 600, "seconds of silence that end it")
            + check.flag("beep", beep)
            + check.flag("transcribe", transcribe)
            + check.flag("trim_silence", trim_silence)
        )
        if not isinstance(finish_on_key, str) or not all(
            check.ONE_KEY.fullmatch(key) for key in finish_on_key
        ):
            self._check(
                [check.ArgumentProblem("finish_on_key", check.given(finish_on_key), _RECORD_KEYS)]
            )
        if transcribe is True and isinstance(max_length, int) and max_length > 120:
            self._check(
                [
                    check.ArgumentProblem(
                        "max_length",
                        f"{max_length} with transcribe=True",
                        "Twilio transcribes recordings of at most 120 seconds",
                    )
                ]
            )
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
QUEUE_BRIDGED = ("bridged", "bridging-in-process")
"""The caller talked to an agent; the call ends, or goes on to ``then``."""
QUEUE_CALLER_GONE = ("hangup", "redirected", "redirected-from-bridged")
"""The caller hung up or was moved elsewhere: nothing more can be said to them."""


class Enqueue(Node):
    """Put the caller in a queue, with hold music, until an agent takes the call.

    Outcomes: after a successful bridge (QueueResult ``bridged``) the call ends, or goes to
    ``then`` if given. ``on`` maps the other results to states; ``"*"`` stands for every
    unsuccessful one not named (``leave``, ``queue-full``, ``error``, ``system-error``), which
    must lead somewhere; a caller who hung up or was redirected away ends the flow unless
    named. Defaults: ``hold`` is ivrkit's hold music (or give ``wait_url``).

        support = Enqueue("support", prompt="Please hold.", on={"*": "voicemail"})
        sales = Enqueue("sales", hold=[Say("Thanks for waiting."), Play(MUSIC)], on={"*": "bye"})
    """

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
        if not isinstance(queue, str) or not 1 <= len(queue) <= 64:
            self._check(
                [
                    check.ArgumentProblem(
                        "queue",
                        check.given(queue),
                        'expected a name of 1 to 64 characters, e.g. "support"',
                    )
                ]
            )
        self.prompt = self._prompt("prompt", prompt, required=False)
        self.hold = self._prompt("hold", hold, required=False)
        self._check(
            check.optional_text("wait_url", wait_url, '"https://example.com/hold"')
            + check.target("then", then, optional=True)
        )
        if self.hold and wait_url is not None:
            self._check(
                [
                    check.ArgumentProblem(
                        "wait_url",
                        "given with hold=",
                        "give hold= (ivrkit serves it) or wait_url= (yours), not both",
                    )
                ]
            )
        good_on = self._check(
            check.outcome_map("on", "Enqueue", "a QueueResult", on, QUEUE_RESULTS)
        )
        self.queue = queue
        self.wait_url = wait_url
        self.on = dict(on or {}) if good_on else {}
        self.then = then
        self._hang_up = Hangup()

    def target_for(self, result: str) -> Target | None:
        """Where a QueueResult leads: ``then`` only after a bridge, ``"*"`` only otherwise."""
        if result in self.on:
            return self.on[result]
        if result in QUEUE_BRIDGED:
            return self.then if self.then is not None else self._hang_up
        if result in QUEUE_CALLER_GONE:
            return self._hang_up
        return self.on.get("*")

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [(f"queue:{result}", self.target_for(result)) for result in QUEUE_RESULTS]

    def describe(self) -> str:
        return describe_prompt(self.prompt) or f"(queue {self.queue})"


# -- control ------------------------------------------------------------------------------------


class SubFlow(Node):
    """Hand the call to another flow (by its name), e.g. a shared PIN check.

    Outcome: when the other flow reaches ``Return()`` the call comes back to ``then``;
    without ``then`` it hangs up. The other flow's module must be loaded too.

        verify = SubFlow("account_pin", then="balance")
    """

    kind = "subflow"

    def __init__(self, flow: str, *, then: Target | None = None) -> None:
        super().__init__()
        self._check(
            check.name("flow", flow, '"account_pin" (the other flow\'s name)')
            + check.target("then", then, optional=True)
        )
        self.flow = flow
        self.then = then
        self._hang_up = Hangup()

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [("returned", self.then if self.then is not None else self._hang_up)]

    def describe(self) -> str:
        return f"(flow {self.flow})"


class Return(Node):
    """End a sub-flow and give the call back to the flow that started it (its ``then``).

    No arguments and no outcomes; in a flow that was not started as a sub-flow it hangs up.

        verified = Return()
    """

    kind = "return"
    ends_call = True

    def describe(self) -> str:
        return "(return)"


class Reject(Node):
    """Refuse the call unanswered (the caller is not billed); only before anything was said.

    No outcomes. ``reason`` is "rejected" (default) or "busy" (the caller hears a busy tone).

        blocked = Reject("busy")  # reached from the first state, e.g. a decision:
        # return "blocked" if call.from_number in BLOCKED else "welcome"
    """

    kind = "reject"
    ends_call = True

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__()
        self._check(check.one_of("reason", reason, ("rejected", "busy")))
        self.reason = reason

    def describe(self) -> str:
        return f"(reject: {self.reason})"


class Redirect(Node):
    """Hand the call to TwiML served elsewhere (another app); this flow ends here.

    No outcomes. Default method: POST.

        legacy = Redirect("https://old-ivr.example.com/voice")
    """

    kind = "redirect"
    ends_call = True

    def __init__(self, url: str, *, method: str = "POST") -> None:
        super().__init__()
        self._check(
            check.required_text("url", url, '"https://example.com/voice"')
            + check.one_of("method", method, ("GET", "POST"))
        )
        self.url = url
        self.method = method

    def describe(self) -> str:
        return f"(redirect {self.url})"


class Decision(Node):
    """A state decided by the flow's own code: the method returns the next state's name.

    Made only by the ``@decision`` decorator, never by hand.
    """

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


@dataclass(frozen=True)
class DecisionMark:
    """What ``@decision`` left on a method, read when the Flow class is created."""

    state: str
    targets: tuple[str, ...] | None
    argument_problems: tuple[ArgumentProblem, ...] = ()


def decision(
    state: str | Callable[..., Any] | None = None, *, targets: Iterable[str] | None = None
) -> Any:
    """Declare a state whose next state is chosen by Python code (sync or async).

    The state is named after the method unless ``state`` names it. ``targets`` lists the
    states the method may return; when omitted they are read from the string literals it
    returns, so a typo still fails at load time.

        @decision
        def open_now(self, call: Call) -> str:
            return "order" if HOURS.is_open(call.now) else "closed"
    """
    if callable(state):  # used bare: @decision
        return decision()(state)

    def mark(function: Any) -> Any:
        problems: list[ArgumentProblem] = []
        if state is not None:
            problems += check.name("state", state, f'"{getattr(function, "__name__", "route")}"')
        found_targets: tuple[str, ...] | None = None
        if targets is not None:
            target_problems = check.strings("targets", targets, '["open", "closed"]')
            problems += target_problems
            found_targets = () if target_problems else tuple(targets)
        named = state if isinstance(state, str) and not problems else function.__name__
        function.__ivrkit_decision__ = DecisionMark(named, found_targets, tuple(problems))
        return function

    return mark
