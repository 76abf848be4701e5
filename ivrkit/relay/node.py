"""The ``Agent`` state: hand the call to a ConversationRelay session and take it back.

It compiles to ``<Connect action=...><ConversationRelay url="wss://.../relay" .../></Connect>``.
Twilio then opens a WebSocket to ivrkit (:mod:`ivrkit.relay.endpoint`), where the flow
author's agent talks with the caller; when the session ends, Twilio requests the
``<Connect action>`` and :mod:`ivrkit.relay.handoff` maps how it ended to a transition:
a declared hand-off key, the caller hanging up, or the session failing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, is_typeddict

from ivrkit import arguments as check
from ivrkit import nodes as n
from ivrkit.arguments import ArgumentProblem

INTERRUPT_MODES = ("none", "dtmf", "speech", "any")
TTS_PROVIDERS = ("Google", "Amazon", "ElevenLabs")
TRANSCRIPTION_PROVIDERS = ("Google", "Deepgram")
SENSITIVITIES = ("low", "medium", "high")
HANDOFF_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
"""Hand-off keys are short lower-case names: they become trigger names and graph labels."""
FAILED = "ivrkit_failed"
"""The hand-off key ivrkit itself sends when the agent failed (raised, hung, broke the
protocol): it leads where a failed session does (``on_failure``), never to ``"*"``."""
SESSION_STATUSES = ("ended", "completed", "failed")
"""``SessionStatus`` of the ``<Connect action>`` callback (reference, section 10)."""
STAR = "*"


@dataclass(frozen=True)
class Language:
    """One ``<Language>`` the session may switch to (declaring it does not activate it).

    Language("sv-SE", tts_provider="Google", voice="sv-SE-Standard-A")
    """

    code: str
    tts_provider: str | None = None
    voice: str | None = None
    transcription_provider: str | None = None
    speech_model: str | None = None


AgentLike = Callable[..., Any] | Any
"""An async callable ``(session, message) -> None``, an object with such a ``handle``
method, or a class of either (a fresh instance per session)."""


class Agent(n.Node):
    """Let an agent (yours: keyword rules, an LLM...) talk with the caller, then continue.

    Outcomes: ``on`` maps the hand-off keys the agent ends with (``session.end("billing",
    account=...)``) to states; ``"*"`` (required) takes unknown keys and hand-off data that
    fails the ``handoff`` schema. ``on_hangup``: the caller hung up (default: the call
    ends). ``on_failure``: the session failed, the agent raised or hung (default: ``"*"``).
    The hand-off's fields are checked against ``handoff`` (a dataclass or TypedDict, or a
    dict of them by key) and saved in ``call.data``; fields named in ``secrets`` are kept
    as ``keep`` says (see :mod:`ivrkit.sensitive`) and the session's transcript is masked.
    ``parameters`` names ``call.data`` keys sent to the agent as ``<Parameter>``s; with
    ``pass_speech`` what the caller said to reach the state (a Menu's ``SpeechResult``) is
    sent as the parameter ``request``, so the agent need not ask again.

        assistant = Agent(KeywordAgent(INTENTS), welcome="How can I help?",
                          on={"billing": "billing_menu", "*": "main_menu"},
                          on_failure="operator", on_hangup=Hangup(),
                          handoff={"billing": BillingHandoff}, secrets=("account",),
                          keep="encrypted", dtmf_detection=True)
    """

    kind = "agent"
    waits_for_caller = True
    FAILED: ClassVar[str] = FAILED

    def __init__(
        self,
        agent: AgentLike,
        *,
        on: Mapping[str, n.Target],
        on_hangup: n.Target | None = None,
        on_failure: n.Target | None = None,
        handoff: type | Mapping[str, type] | None = None,
        welcome: str | None = None,
        welcome_interruptible: str | bool | None = None,
        language: str | None = None,
        languages: Sequence[Language] = (),
        tts_language: str | None = None,
        transcription_language: str | None = None,
        tts_provider: str | None = None,
        voice: str | None = None,
        transcription_provider: str | None = None,
        speech_model: str | None = None,
        interruptible: str | bool | None = None,
        interrupt_sensitivity: str | None = None,
        dtmf_detection: bool = False,
        hints: Iterable[str] = (),
        parameters: Iterable[str] = (),
        sensitive: bool = False,
        secrets: Iterable[str] = (),
        keep: str | None = None,
        reply_timeout: float = 10.0,
        save_as: str = "agent_session",
        pass_speech: bool = False,
    ) -> None:
        super().__init__()
        self._check(_agent_problems(agent))
        self._check(
            check.optional_text("welcome", welcome, '"Hi! How can I help?"')
            + check.optional_text("language", language, '"en-US"')
            + check.optional_text("tts_language", tts_language, '"en-US"')
            + check.optional_text("transcription_language", transcription_language, '"en-US"')
            + check.optional_text("voice", voice, '"en-US-Journey-O"')
            + check.optional_text("speech_model", speech_model, '"nova-3-general"')
            + check.flag("dtmf_detection", dtmf_detection)
            + check.flag("sensitive", sensitive)
            + check.flag("pass_speech", pass_speech)
            + check.name("save_as", save_as, '"agent_session"')
            + check.target("on_hangup", on_hangup, optional=True)
            + check.target("on_failure", on_failure, optional=True)
        )
        for argument, value, allowed in (
            ("tts_provider", tts_provider, TTS_PROVIDERS),
            ("transcription_provider", transcription_provider, TRANSCRIPTION_PROVIDERS),
            ("interrupt_sensitivity", interrupt_sensitivity, SENSITIVITIES),
        ):
            if value is not None:
                self._check(check.one_of(argument, value, allowed))
        self.interruptible = self._interrupt_mode("interruptible", interruptible)
        self.welcome_interruptible = self._interrupt_mode(
            "welcome_interruptible", welcome_interruptible
        )
        if not isinstance(reply_timeout, int | float) or not 0 < reply_timeout <= 120:
            self._check(
                [
                    ArgumentProblem(
                        "reply_timeout",
                        check.given(reply_timeout),
                        "expected seconds over 0 and at most 120 the agent may take to answer",
                    )
                ]
            )
            reply_timeout = 10.0
        good_on = self._check(_on_problems(on))
        self.on: dict[str, n.Target] = dict(on) if good_on else {}
        self.schemas = self._schemas(handoff)
        good_hints = self._check(check.strings("hints", hints, '["billing", "invoice"]'))
        self.hints = tuple(hints) if good_hints else ()
        good_params = self._check(_names("parameters", parameters, '["customer_id"]'))
        self.parameters = tuple(parameters) if good_params else ()
        good_secrets = self._check(_names("secrets", secrets, '["account"]'))
        self.secrets = frozenset(secrets) if good_secrets else frozenset()
        if keep is not None:
            self._check(check.one_of("keep", keep, n.KEEP_MODES))
        secret_params = sorted(self.secrets.intersection(self.parameters))
        if secret_params:
            self._check(
                [
                    ArgumentProblem(
                        "parameters",
                        f'"{secret_params[0]}" is also in secrets',
                        "a secret never goes into TwiML: leave it out of parameters",
                    )
                ]
            )
        self.languages = self._languages(languages)
        self.agent = agent
        self.on_hangup = on_hangup
        self.on_failure = on_failure
        self.welcome = welcome
        self.language = language
        self.tts_language = tts_language
        self.transcription_language = transcription_language
        self.tts_provider = tts_provider
        self.voice = voice
        self.transcription_provider = transcription_provider
        self.speech_model = speech_model
        self.interrupt_sensitivity = interrupt_sensitivity
        self.dtmf_detection = dtmf_detection
        self.sensitive = sensitive is True or bool(self.secrets)
        self.keep = keep or "verdict"
        self.reply_timeout = float(reply_timeout)
        self.save_as = save_as
        self.pass_speech = pass_speech is True
        self._hang_up = n.Hangup()

    # -- definition-time checks -----------------------------------------------------------

    def _interrupt_mode(self, argument: str, value: Any) -> str | None:
        if value is None:
            return None
        if value is True or value is False:
            return "any" if value else "none"
        if self._check(check.one_of(argument, value, INTERRUPT_MODES)):
            return str(value)
        return None

    def _schemas(self, handoff: Any) -> dict[str, type]:
        if handoff is None:
            return {}
        if isinstance(handoff, type):
            found = {STAR: handoff}
        elif isinstance(handoff, Mapping):
            found = dict(handoff)
        else:
            self._check(
                [
                    ArgumentProblem(
                        "handoff",
                        check.given(handoff),
                        "expected a dataclass or TypedDict, or a dict of them by hand-off key, "
                        'e.g. {"billing": BillingHandoff}',
                    )
                ]
            )
            return {}
        problems: list[ArgumentProblem] = []
        for key, schema in found.items():
            if not isinstance(key, str) or (key != STAR and key not in self.on):
                problems.append(
                    ArgumentProblem(
                        f"handoff[{key!r}]",
                        "is not a key of on=",
                        "give a schema only for keys that on= maps to a state",
                    )
                )
            if not (
                isinstance(schema, type)
                and (dataclasses.is_dataclass(schema) or is_typeddict(schema))
            ):
                problems.append(
                    ArgumentProblem(
                        f"handoff[{key!r}]",
                        check.given(schema),
                        "expected a dataclass or a TypedDict class",
                    )
                )
        return found if self._check(problems) else {}

    def _languages(self, languages: Any) -> tuple[Language, ...]:
        if isinstance(languages, str) or not isinstance(languages, Sequence):
            self._check(
                [
                    ArgumentProblem(
                        "languages",
                        check.given(languages),
                        'expected a list of Language(...), e.g. [Language("sv-SE")]',
                    )
                ]
            )
            return ()
        wrong = [item for item in languages if not isinstance(item, Language)]
        if wrong:
            self._check(
                [
                    ArgumentProblem(
                        "languages",
                        f"item {check.given(wrong[0])}",
                        'expected Language(...) items, e.g. Language("sv-SE")',
                    )
                ]
            )
            return ()
        for index, item in enumerate(languages):
            self._check(check.required_text(f"languages[{index}].code", item.code, '"sv-SE"'))
        return tuple(languages)

    # -- what the rest of ivrkit asks of a state ------------------------------------------------

    def handoff_keys(self) -> tuple[str, ...]:
        """The hand-off keys ``on`` names (without ``"*"``)."""
        return tuple(key for key in self.on if key != STAR)

    def declared_keys(self) -> tuple[str, ...]:
        """The keys the agent says it may hand off with (its ``handoff_keys``), if it says."""
        keys = getattr(self.agent, "handoff_keys", None)
        if callable(keys):
            keys = keys()
        if keys is None or isinstance(keys, str):
            return ()
        return tuple(str(key) for key in keys)

    def target_for(self, trigger: str) -> n.Target | None:
        kind, _, value = trigger.partition(":")
        if kind == "handoff":
            return self.on.get(value, self.on.get(STAR))
        if value == "completed":
            return self.on_hangup if self.on_hangup is not None else self._hang_up
        return self.on_failure if self.on_failure is not None else self.on.get(STAR)

    def outcomes(self) -> list[tuple[str, n.Outcome]]:
        pairs: list[tuple[str, n.Outcome]] = [
            (f"handoff:{key}", target) for key, target in self.on.items()
        ]
        pairs.append(("session:completed", self.target_for("session:completed")))
        pairs.append(("session:failed", self.target_for("session:failed")))
        return pairs

    def welcome_prompt(self) -> tuple[n.Say, ...]:
        """The welcome greeting as a prompt (for ``ivrkit prompts`` and the flow's version)."""
        return (n.Say(self.welcome),) if self.welcome else ()

    def describe(self) -> str:
        name = getattr(self.agent, "__name__", type(self.agent).__name__)
        return f"(agent {name}) {self.welcome}" if self.welcome else f"(agent {name})"


def _agent_problems(agent: Any) -> list[ArgumentProblem]:
    if callable(agent) or callable(getattr(agent, "handle", None)):
        return []
    return [
        ArgumentProblem(
            "agent",
            check.given(agent),
            "expected an async function (session, message) -> None, an object with such a "
            "handle method, or a class of either, e.g. KeywordAgent([...])",
        )
    ]


def _on_problems(on: Any) -> list[ArgumentProblem]:
    example = '{"billing": "billing_menu", "*": "main_menu"}'
    if not isinstance(on, Mapping):
        return [ArgumentProblem("on", check.given(on), f"expected a dict like {example}")]
    problems: list[ArgumentProblem] = []
    for key, target in on.items():
        if key != STAR and not (isinstance(key, str) and HANDOFF_KEY.fullmatch(key)):
            problems.append(
                ArgumentProblem(
                    "on",
                    f"hand-off key {check.given(key)}",
                    'expected a short lower-case name like "billing" (letters, digits, _)',
                )
            )
        elif key == FAILED:
            problems.append(
                ArgumentProblem("on", f'"{FAILED}" is ivrkit\'s own key', "use on_failure=")
            )
        problems += check.target(f"on[{key!r}]", target, optional=False)
    if not problems and STAR not in on:
        problems.append(
            ArgumentProblem(
                "on",
                'no "*"',
                f'add "*": where an unknown key or an invalid hand-off goes, e.g. {example}',
            )
        )
    return problems


def _names(argument: str, value: Any, example: str) -> list[ArgumentProblem]:
    problems = check.strings(argument, value, example)
    if problems:
        return problems
    for item in value:
        if not item.isidentifier():
            return [
                ArgumentProblem(
                    argument, f"item {check.given(item)}", f"expected names, e.g. {example}"
                )
            ]
    return []
