"""Twilio's ``<Pay>``, simulated (reference Part 2, section 11): a caller keys in a card.

The caller answers one *attempt* at a time with a :data:`PayAnswer`: a :class:`PayCard`
(``--pay 4242424242424242:1230:123:94105``) or a :class:`PayAction` (``star``, ``timeout``,
``hangup``, or an injected Twilio-side fault). A step the card fails (Luhn, a card type not in
``validCardTypes``, an expiry before the simulated clock, a short security or postal code)
or a silence costs an attempt; Twilio then asks for that step again (with the ``errorType``
and ``attempt`` prompt variants) and the next answer supplies it and the steps after it.
After ``maxAttempts`` failures the Result is ``too-many-failed-attempts``.

For every step the matching ``<Prompt>`` plays (Twilio's default wording when none matches),
the statusCallback gets ``For``, ``Attempt``, ``ErrorType`` and the fields so far, and at the
end the action gets the ``Result`` with the card fields masked as Twilio sends them.

Connector errors: the card number :data:`CONNECTOR_ERROR_CARD` (Stripe's "processing error"
test card), or ``PayAction("connector-error")`` (``--pay connector-error``), or
``--pay-connector-error`` for every card, ends in ``payment-connector-error``.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urljoin

from simulator.model import ErrorEvent, Event, PayEvent, RequestEvent

__all__ = [
    "CONNECTOR_ERROR_CARD",
    "PayAction",
    "PayAnswer",
    "PayCard",
    "PayEvent",
    "PayPrompt",
    "card_type",
    "luhn_ok",
    "mask_card",
    "parse_pay",
]

CONNECTOR_ERROR_CARD = "4000000000000119"
"""A Luhn-valid Visa number the simulated connector always declines (payment-connector-error)."""
ACTIONS = ("star", "timeout", "hangup", "connector-error", "validation-error", "internal-error")
CARD_TYPES = frozenset(
    {"visa", "mastercard", "amex", "maestro", "discover", "optima", "jcb", "diners-club", "enroute"}
)
DEFAULT_CARD_TYPES = ("visa", "mastercard", "amex")
DEFAULT_POSTAL_CODE = "94105"
KEY_SECONDS = 0.3

DEFAULT_PROMPTS = {
    "payment-card-number": "Please enter your credit card number.",
    "expiration-date": "Please enter your expiration date, two digits for the month and two "
    "digits for the year.",
    "security-code": "Please enter your security code. It's the 3 digits located on the back "
    "of your card.",
    "postal-code": "Please enter your zip code.",
    "payment-processing": "",
}
"""Stand-ins for Twilio's own wording (its exact text is not documented)."""
DEFAULT_ERRORS = {
    "timeout": "Sorry, we did not receive your input.",
    "invalid-card-number": "Sorry, that card number is not valid.",
    "invalid-card-type": "Sorry, that card type is not accepted.",
    "invalid-date": "Sorry, that expiration date is not valid.",
    "invalid-security-code": "Sorry, that security code is not valid.",
    "invalid-postal-code": "Sorry, that zip code is not valid.",
}


@dataclass(frozen=True)
class PayCard:
    """A card the caller keys in: number, expiry ``MMYY``, security code, postal code.

    Missing parts are filled in with valid ones: an expiry three years after the call,
    ``123`` (``1234`` for amex), ``94105``.
    """

    number: str
    expiry: str | None = None
    cvc: str | None = None
    postal_code: str | None = None


@dataclass(frozen=True)
class PayAction:
    """Not a card: ``star`` (cancel), ``timeout`` (silence), ``hangup``, or a Twilio-side
    fault to inject: ``connector-error``, ``validation-error``, ``internal-error``."""

    kind: str


PayAnswer = PayCard | PayAction


def parse_pay(value: str) -> PayAnswer:
    """``CARD[:MMYY[:CVC[:ZIP]]]`` or one of :data:`ACTIONS` (the CLI's ``--pay``)."""
    text = value.strip()
    if text.lower() in ACTIONS:
        return PayAction(text.lower())
    parts = text.split(":")
    if len(parts) > 4 or not parts[0]:
        raise ValueError(
            f"--pay {value!r}: expected CARD[:MMYY[:CVC[:ZIP]]] (e.g. 4242424242424242:1230:123"
            f":94105) or one of {', '.join(ACTIONS)}"
        )
    number = parts[0].replace(" ", "").replace("-", "")
    if not number.isdigit():
        raise ValueError(f"--pay: the card number must be digits, got {len(number)} characters")
    expiry, cvc, postal = ([*parts[1:], "", "", ""])[:3]
    if expiry and not (len(expiry) == 4 and expiry.isdigit()):
        raise ValueError(f"--pay: the expiry must be MMYY, e.g. 1230; got {expiry!r}")
    return PayCard(number, expiry or None, cvc or None, postal or None)


@dataclass
class PayPrompt:
    """What the caller is asked at a ``<Pay>``: one attempt's answer."""

    attributes: dict[str, str]
    attempt: int
    step: str
    error_type: str | None = None


# --- checks a card goes through --------------------------------------------------------------


def luhn_ok(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def card_type(number: str) -> str | None:
    """The brand by its number's prefix (IIN ranges), or None."""
    two, four, six = int(number[:2] or 0), int(number[:4] or 0), int(number[:6] or 0)
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("34", "37"):
        return "amex"
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard"
    if number.startswith(("6011", "65")) or 644 <= int(number[:3] or 0) <= 649:
        return "discover"
    if 3528 <= four <= 3589:
        return "jcb"
    if number[:2] in ("36", "38") or 300 <= int(number[:3] or 0) <= 305:
        return "diners-club"
    if number[:4] in ("2014", "2149"):
        return "enroute"
    if number[:2] in ("50", "56", "57", "58") or number[:4] in ("6304", "6759") or six in (
        676770,
        676774,
    ):
        return "maestro"
    return None


def mask_card(number: str) -> str:
    """Twilio's masked form: ``xxxx-xxxx-xxxx-4242``, amex ``xxxx-xxxxxx-x0005``."""
    hidden = "x" * (len(number) - 4) + number[-4:]
    if len(number) == 15:
        return f"{hidden[:4]}-{hidden[4:10]}-{hidden[10:]}"
    return "-".join(hidden[i : i + 4] for i in range(0, len(hidden), 4))


def _expiry_ok(expiry: str, now: datetime) -> bool:
    if len(expiry) != 4 or not expiry.isdigit():
        return False
    month, year = int(expiry[:2]), 2000 + int(expiry[2:])
    return 1 <= month <= 12 and (year, month) >= (now.year, now.month)


@dataclass
class _Entry:
    """What the caller has entered so far (in memory only: never sent in clear)."""

    number: str = ""
    card_type: str = ""
    expiry: str = ""
    cvc: str = ""
    postal: str = ""


@dataclass
class PayRun:
    """One ``<Pay>``'s outcome: the action to request, and whether the caller hung up."""

    result: str
    params: dict[str, str]
    hung_up: bool = False
    events: list[Event] = field(default_factory=list)


def attribute_problem(attrs: dict[str, str]) -> str | None:
    """Why Twilio would answer this ``<Pay>`` with ``validation-error`` (None: it would not)."""
    amount = attrs.get("chargeAmount")
    if amount not in (None, ""):
        try:
            value = Decimal(amount)
        except InvalidOperation:
            return f"chargeAmount {amount!r} is not a number"
        if not value.is_finite() or value < 0 or value > 1_000_000:
            return f"chargeAmount {amount} is outside 0-1,000,000"
    attempts = attrs.get("maxAttempts", "1")
    if attempts not in ("1", "2", "3"):
        return f"maxAttempts {attempts!r} is not 1, 2 or 3"
    types = attrs.get("validCardTypes")
    if types is not None and (not types.split() or not set(types.split()) <= CARD_TYPES):
        return f"validCardTypes {types!r} names an unknown card type"
    method = attrs.get("paymentMethod", "credit-card")
    if method != "credit-card":
        return f"paymentMethod {method!r}: the simulator takes card payments only"
    return None


def _flag(attrs: dict[str, str], name: str) -> bool:
    return attrs.get(name, "true").lower() != "false"


def steps_of(attrs: dict[str, str]) -> list[str]:
    steps = ["payment-card-number", "expiration-date"]
    if _flag(attrs, "securityCode"):
        steps.append("security-code")
    if attrs.get("postalCode", "true").lower() == "true":
        steps.append("postal-code")  # false: not asked; any other value: the code itself
    return steps


def choose_prompt(
    prompts: Sequence[ET.Element], step: str, attempt: int, error: str | None, brand: str
) -> ET.Element | None:
    """The ``<Prompt>`` Twilio plays: for this step, attempt and card type; one naming the
    error when there was one, else one naming no error."""
    fitting = []
    for prompt in prompts:
        if prompt.get("for") != step:
            continue
        attempts = prompt.get("attempt", "").split()
        if attempts and str(attempt) not in attempts:
            continue
        cards = prompt.get("cardType", "").split()
        if cards and brand not in cards:
            continue
        fitting.append(prompt)
    errors = [p for p in fitting if error and error in p.get("errorType", "").split()]
    if errors:
        return errors[0]
    plain = [p for p in fitting if not p.get("errorType")]
    specific = [p for p in plain if p.get("cardType")]
    chosen = specific or plain
    return chosen[0] if chosen else None


async def run_pay(engine: Any, verb: ET.Element, url: str) -> PayRun:
    """Run a ``<Pay>`` on ``engine``'s call (document at ``url``): prompts heard, the caller
    asked per attempt, status callbacks posted; the action is left to the engine."""
    callback = verb.get("statusCallback")

    def play(prompt: ET.Element | None, default: str) -> None:
        if prompt is None:  # Twilio's own wording: heard (and timed) like a <Say>
            said = ET.Element("Say")
            said.text = default
            prompt = ET.Element("Prompt")
            prompt.append(said)
        for child in prompt:
            if child.tag == "Say":
                heard = engine._say(child)
            elif child.tag == "Play":
                heard = engine._play(child, _Url(url))
            else:
                heard = engine._pause(child)
            for event in heard:
                engine.emit(event)

    async def ask(prompt: PayPrompt) -> Any:
        answer = getattr(engine.caller, "pay", None)
        return await answer(prompt) if answer is not None else None

    async def status(params: dict[str, str]) -> None:
        assert callback is not None
        body = {"AccountSid": engine.params.account_sid, "CallSid": engine.params.call_sid}
        body.update(params)
        result = await engine.session.fetch(
            "POST", urljoin(url, callback), body, headers=engine._time_header()
        )
        for exchange in result.exchanges:
            engine.emit(RequestEvent(
                exchange.method, exchange.url, exchange.params, exchange.status,
                exchange.elapsed_ms,
            ))  # fmt: skip
        if not result.ok:
            engine.emit(ErrorEvent(15003, f"Pay status callback failed: {result.error_message}"))

    run = await PaySession(
        verb, now=engine.now, play=play, ask=ask, status=status if callback else None,
        advance=engine.clock.advance, connector_error=engine.pay_connector_error,
    ).run()  # fmt: skip
    for event in run.events:
        engine.emit(event)
    return run


@dataclass
class _Url:
    """What the engine's ``_play`` reads of a document: its URL, to resolve media against."""

    url: str


class PaySession:
    """Runs one ``<Pay>`` verb; the engine gives it a way to play prompts, ask the caller
    and post status callbacks, so this module needs nothing of the engine."""

    def __init__(
        self,
        verb: ET.Element,
        *,
        now: Callable[[], datetime],
        play: Callable[[ET.Element | None, str], None],
        ask: Callable[[PayPrompt], Any],
        status: Callable[[dict[str, str]], Any] | None,
        advance: Callable[[float], None],
        connector_error: bool = False,
    ) -> None:
        self.attrs = dict(verb.attrib)
        self.prompts = [child for child in verb if child.tag == "Prompt"]
        self.now = now
        self.play = play
        self.ask = ask
        self.status = status
        self.advance = advance
        self.connector_error = connector_error
        self.entry = _Entry()
        self.errors: list[str] = []
        types = self.attrs.get("validCardTypes", "").split()
        self.valid_types = types or list(DEFAULT_CARD_TYPES)
        self.max_attempts = int(self.attrs.get("maxAttempts", "1") or 1)
        self.min_postal = int(self.attrs.get("minPostalCodeLength", "1") or 1)

    async def run(self) -> PayRun:
        problem = attribute_problem(self.attrs)
        if problem is not None:
            return self._end("validation-error", error=problem)
        steps = steps_of(self.attrs)
        attempt, error, index = 1, None, 0
        answer = await self.ask(PayPrompt(self.attrs, attempt, steps[0]))
        while index < len(steps):
            step = steps[index]
            self._prompt(step, attempt, error)
            ended = self._ended_by(answer, attempt)
            if ended is not None:
                return ended
            if isinstance(answer, PayAction) and answer.kind == "connector-error":
                self.connector_error = True  # a good card, declined at processing
                answer = PayCard("4242424242424242")
            error = self._enter(step, answer)
            await self._status(step, attempt, error)
            if error is None:
                index += 1
                continue
            self.errors.append(error)
            attempt += 1
            if attempt > self.max_attempts:
                return self._end("too-many-failed-attempts", attempt=attempt - 1)
            answer = await self.ask(PayPrompt(self.attrs, attempt, step, error))
        self._prompt("payment-processing", attempt, None)
        self.advance(2)
        await self._status("payment-processing", attempt, None)
        if self.connector_error or self.entry.number == CONNECTOR_ERROR_CARD:
            declined = "card declined by the simulated connector"
            return self._end("payment-connector-error", attempt=attempt, error=declined)
        return self._end("success", attempt=attempt)

    def _ended_by(self, answer: Any, attempt: int) -> PayRun | None:
        """The end of the session when the answer is not an entry: a hang-up (also what a
        caller without a ``pay`` method gives), star, or an injected Twilio-side fault."""
        kind = answer.kind if isinstance(answer, PayAction) else None
        if not isinstance(answer, PayCard | PayAction) or kind == "hangup":
            return self._end("caller-hung-up", hung_up=True, attempt=attempt)
        if kind == "star":
            return self._end("caller-interrupted-with-star", attempt=attempt)
        if kind in ("validation-error", "internal-error"):
            return self._end(kind, attempt=attempt, error=f"injected {kind}")
        return None

    def _prompt(self, step: str, attempt: int, error: str | None) -> None:
        chosen = choose_prompt(self.prompts, step, attempt, error, self.entry.card_type)
        named = chosen is not None and error in chosen.get("errorType", "").split()
        if error is not None and not named:
            self.play(None, DEFAULT_ERRORS.get(error, "Sorry."))
        if chosen is not None or DEFAULT_PROMPTS.get(step):
            self.play(chosen, DEFAULT_PROMPTS.get(step, ""))

    def _enter(self, step: str, answer: PayAnswer) -> str | None:
        """Key in ``step`` from ``answer``; the error type when Twilio would refuse it."""
        if isinstance(answer, PayAction):  # timeout: silence
            self.advance(int(self.attrs.get("timeout", "5") or 5))
            return "timeout"
        now = self.now()
        if step == "payment-card-number":
            number = answer.number
            self.advance(len(number) * KEY_SECONDS)
            if not (12 <= len(number) <= 19 and luhn_ok(number)):
                return "invalid-card-number"
            brand = card_type(number)
            if brand is None or brand not in self.valid_types:
                return "invalid-card-type"
            self.entry.number, self.entry.card_type = number, brand
            return None
        if step == "expiration-date":
            expiry = answer.expiry or f"12{(now.year + 3) % 100:02d}"
            self.advance(4 * KEY_SECONDS)
            if not _expiry_ok(expiry, now):
                return "invalid-date"
            self.entry.expiry = expiry
            return None
        if step == "security-code":
            size = 4 if self.entry.card_type == "amex" else 3
            cvc = answer.cvc or ("1234" if size == 4 else "123")
            self.advance(len(cvc) * KEY_SECONDS)
            if not (cvc.isdigit() and len(cvc) == size):
                return "invalid-security-code"
            self.entry.cvc = cvc
            return None
        postal = answer.postal_code or DEFAULT_POSTAL_CODE
        self.advance(len(postal) * KEY_SECONDS)
        if not (postal.isalnum() and self.min_postal <= len(postal) <= 10):
            return "invalid-postal-code"
        self.entry.postal = postal
        return None

    def _fields(self) -> dict[str, str]:
        """The card fields as Twilio reports them: number masked, security code redacted."""
        fields: dict[str, str] = {"PaymentMethod": "credit-card"}
        if self.entry.number:
            fields["PaymentCardNumber"] = mask_card(self.entry.number)
            fields["PaymentCardType"] = self.entry.card_type
        if self.entry.expiry:
            fields["ExpirationDate"] = self.entry.expiry
        if self.entry.cvc:
            fields["SecurityCode"] = "x" * len(self.entry.cvc)
        if self.entry.postal:
            fields["PaymentCardPostalCode"] = self.entry.postal
        return fields

    async def _status(self, step: str, attempt: int, error: str | None) -> None:
        if self.status is None:
            return
        params = {"For": step, "Attempt": str(attempt), **self._fields()}
        if error is not None:
            params["ErrorType"] = "input-timeout" if error == "timeout" else error
        await self.status(params)

    def _end(
        self, result: str, *, hung_up: bool = False, attempt: int = 0, error: str = ""
    ) -> PayRun:
        params = {"Result": result, **self._fields()}
        if result == "success":
            # Derived from what was paid, not random: a replay or a scenario hears the same code.
            seed = f"{self.entry.number}|{self.attrs.get('chargeAmount', '')}".encode()
            code = hashlib.sha256(seed).hexdigest()[:16]
            if self.attrs.get("chargeAmount") not in (None, "", "0", "0.00"):
                params["PaymentConfirmationCode"] = "ch_sim_" + code
            else:
                params["PaymentToken"] = "tok_sim_" + code
        elif error:
            params["PaymentError"] = error
            if result == "payment-connector-error":
                params["ConnectorError"] = "card_declined"
        event = PayEvent(
            result=result,
            card=params.get("PaymentCardNumber", ""),
            card_type=params.get("PaymentCardType", ""),
            attempts=attempt,
            errors=list(self.errors),
        )
        return PayRun(result, params, hung_up=hung_up, events=[event])


TEST_CARDS = {
    "visa": "4242424242424242",
    "mastercard": "5555555555554444",
    "amex": "378282246310005",
    "discover": "6011111111111117",
    "jcb": "3566002020360505",
    "diners-club": "36227206271667",
    "maestro": "6759649826438453",
}
"""A valid test number per brand: what a replay keys in for a recorded success."""


def replay_steps(
    result: str, brand: str, attempts: int, errors: Sequence[str] = ()
) -> list[PayAnswer]:
    """Answers that give a recorded ``<Pay>`` the same Result: a recording holds the card
    masked, so a success is replayed with a test card of the same brand, each failed attempt
    with an entry that fails the same way (a silence when the error is not known), and the
    other results by the action or fault that causes them."""
    card = TEST_CARDS.get(brand, TEST_CARDS["visa"])
    broken = card[:-1] + str((int(card[-1]) + 1) % 10)  # fails the Luhn check
    failing: dict[str, PayAnswer] = {
        "invalid-card-number": PayCard(broken),
        "invalid-card-type": PayCard("6011111111111117" if brand != "discover" else card),
        "invalid-date": PayCard(card, "0100"),
        "invalid-security-code": PayCard(card, None, "1"),
        "invalid-postal-code": PayCard(card, None, None, "0" * 11),
    }
    earlier = [failing.get(error, PayAction("timeout")) for error in errors]
    earlier = earlier or [PayAction("timeout")] * max(0, attempts - 1)
    if result == "success":
        return [*earlier, PayCard(card)]
    if result == "too-many-failed-attempts":
        return earlier or [PayAction("timeout")]
    if result == "payment-connector-error":
        return [*earlier, PayCard(CONNECTOR_ERROR_CARD)]
    kind = {"caller-interrupted-with-star": "star", "caller-hung-up": "hangup"}.get(result, result)
    return [*earlier, PayAction(kind if kind in ACTIONS else "internal-error")]
