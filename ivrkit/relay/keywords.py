"""``KeywordAgent``: a deterministic agent of intents recognised by words.

It answers simple questions, asks for a number when an intent needs one (an account
number, said in figures or words), and hands the call back with a key. Being rules, not a
model, it is what flows/ and the tests use: the same words always give the same hand-off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ivrkit.inputs import spoken_digits
from ivrkit.relay.protocol import Dtmf, Message, Prompt
from ivrkit.relay.session import AgentSession

_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Intent:
    """One thing callers ask for, recognised when they say any of ``words``.

    ``answer`` is spoken (streamed word by word); ``handoff`` ends the session with that
    key. With ``collect`` the agent first asks ``ask`` for a number of ``digits`` length
    and hands it off as the field ``collect``.

        Intent("billing", words=("bill", "invoice"), handoff="billing",
               ask="What is your account number?", collect="account", digits=(8, 8))
    """

    name: str
    words: tuple[str, ...]
    answer: str | None = None
    handoff: str | None = None
    ask: str | None = None
    collect: str | None = None
    digits: tuple[int, int] = (4, 16)
    words_set: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.words, str) or not self.words:
            raise ValueError(f"Intent {self.name!r}: words is a tuple of words, e.g. ('bill',)")
        if self.collect is not None and (self.handoff is None or self.ask is None):
            raise ValueError(f"Intent {self.name!r}: collect= needs ask= and handoff=")
        if self.answer is None and self.handoff is None:
            raise ValueError(f"Intent {self.name!r}: give answer= or handoff= (or both)")
        object.__setattr__(self, "words_set", frozenset(w.lower() for w in self.words))

    def heard_in(self, words: set[str]) -> bool:
        return not self.words_set.isdisjoint(words)


class KeywordAgent:
    """Answers by intents; ``keys`` maps a pressed key to a hand-off key (needs
    ``dtmf_detection=True`` on the Agent). After ``misses`` turns it did not understand,
    it hands off with ``give_up``. It starts from what the caller said to reach it, when
    the Agent passes it on (``pass_speech=True``).

        KeywordAgent([HOURS, BILLING, PERSON], keys={"0": "operator"}, give_up="operator")
    """

    def __init__(
        self,
        intents: Sequence[Intent],
        *,
        keys: Mapping[str, str] | None = None,
        give_up: str = "operator",
        misses: int = 3,
        not_understood: str = "Sorry, I did not get that. Could you say it another way?",
        not_a_number: str = "Sorry, I did not get the number. Please say it digit by digit.",
        passing_on: str = "Let me pass you to someone who can help.",
        opening: str | None = None,
    ) -> None:
        self.intents = tuple(intents)
        self.keys = dict(keys or {})
        self.give_up = give_up
        self.misses = misses
        self.not_understood = not_understood
        self.not_a_number = not_a_number
        self.passing_on = passing_on
        self.opening = opening

    async def start(self, session: AgentSession) -> None:
        """Act on what the caller said to reach the agent (the ``request`` parameter of
        ``Agent(pass_speech=True)``) if it names an intent; else say ``opening``."""
        request = session.parameters.get("request", "")
        words = set(_WORD.findall(request.lower()))
        for intent in self.intents:
            if intent.heard_in(words):
                session.transcript.add("caller", request)
                await self._act(session, intent)
                return
        if self.opening:
            await session.say(self.opening)

    def handoff_keys(self) -> tuple[str, ...]:
        """Every key this agent can end with (``ivrkit check`` compares them with on=)."""
        keys = [i.handoff for i in self.intents if i.handoff] + list(self.keys.values())
        return tuple(dict.fromkeys([*keys, self.give_up]))

    async def handle(self, session: AgentSession, message: Message) -> None:
        if isinstance(message, Dtmf):
            key = self.keys.get(message.digit)
            if key is not None:
                session.end(key)
            return
        if not isinstance(message, Prompt) or not message.last:
            return  # interrupts and Twilio's notices need no answer
        pending = session.state.get("collecting")
        if isinstance(pending, str):
            await self._number(session, self._intent(pending), message.text)
            return
        words = set(_WORD.findall(message.text.lower()))
        for intent in self.intents:
            if intent.heard_in(words):
                await self._act(session, intent)
                return
        await self._miss(session, self.not_understood)

    async def _act(self, session: AgentSession, intent: Intent) -> None:
        if intent.answer:
            await session.stream(f"{word} " for word in intent.answer.split())
        if intent.collect is not None and intent.ask is not None:
            session.state["collecting"] = intent.name
            await session.say(intent.ask)
        elif intent.handoff is not None:
            session.end(intent.handoff)

    async def _number(self, session: AgentSession, intent: Intent, text: str) -> None:
        number = spoken_digits(text)
        low, high = intent.digits
        if not low <= len(number) <= high:
            await self._miss(session, self.not_a_number)
            return
        handoff, collect = intent.handoff or self.give_up, intent.collect or "number"
        session.end(handoff, **{collect: number})

    async def _miss(self, session: AgentSession, notice: str) -> None:
        session.state["misses"] = int(session.state.get("misses", 0)) + 1
        if session.state["misses"] >= self.misses:
            await session.say(self.passing_on)
            session.end(self.give_up)
            return
        await session.say(notice)

    def _intent(self, name: str) -> Intent:
        return next(intent for intent in self.intents if intent.name == name)
