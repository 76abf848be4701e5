"""Taking card payments with Twilio's ``<Pay>``: the ``Pay`` state, its prompts and outcomes.

Twilio collects the card itself (the digits never reach this app) and sends the action
webhook with a ``Result`` and masked fields. What ivrkit keeps of a payment is only what a
flow needs afterwards and what PCI DSS allows outside a card-data environment, in
``call.data[save_as]`` (``"payment"`` by default):

``result``
    Twilio's ``Result`` (``"success"``, ``"too-many-failed-attempts"``...).
``confirmation_code``
    ``PaymentConfirmationCode`` of a charge (``charge_amount`` given).
``token``
    ``PaymentToken`` of a tokenization (no ``charge_amount``).
``card_type``
    ``PaymentCardType``, e.g. ``"visa"``.
``masked_number``
    ``PaymentCardNumber`` with every digit but the last four as ``x``: masked again here,
    so even a connector that sent the whole number leaves only the last four in the store.
``error_code``
    ``PayErrorCode``, when Twilio gave one.

The expiry date, the security code and the postal code are never kept; the event log shows
them as ``****`` (see :func:`ivrkit.masking.mask_payment`), and the per-step status
callbacks (``/voice/{flow}/pay-status``) are recorded the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from twilio.twiml.voice_response import VoiceResponse

from ivrkit import arguments as check
from ivrkit import nodes as n
from ivrkit.arguments import ArgumentProblem
from ivrkit.errors import FlowRuntimeError
from ivrkit.masking import mask_card_number

if TYPE_CHECKING:
    from ivrkit.call import Call
    from ivrkit.twiml import Links, Voice

PAY_RESULTS = (
    "success",
    "too-many-failed-attempts",
    "caller-interrupted-with-star",
    "caller-hung-up",
    "payment-connector-error",
    "validation-error",
    "internal-error",
)
"""Twilio's ``Result`` values of the ``<Pay>`` action (reference Part 2, section 11)."""
PAY_FAILURES = PAY_RESULTS[1:]
PAY_STEPS = (
    "payment-card-number",
    "expiration-date",
    "security-code",
    "postal-code",
    "payment-processing",
)
"""The ``for`` values of a card payment's ``<Prompt>`` (ACH steps are not supported yet)."""
PAY_ERROR_TYPES = (
    "timeout",
    "invalid-card-number",
    "invalid-card-type",
    "invalid-date",
    "invalid-security-code",
    "invalid-postal-code",
)
CARD_TYPES = (
    "visa",
    "mastercard",
    "amex",
    "maestro",
    "discover",
    "optima",
    "jcb",
    "diners-club",
    "enroute",
)
DEFAULT_CARD_TYPES = ("visa", "mastercard", "amex")
TOKEN_TYPES = ("one-time", "reusable", "payment-method")
PAY_LANGUAGES = (
    "en-AU", "en-CA", "en-GB", "en-IN", "en-US",
    "es-ES", "es-MX", "fr-CA", "fr-FR", "de-DE", "it-IT",
)  # fmt: skip
_LANGUAGE_KEYS = frozenset(language.lower() for language in PAY_LANGUAGES)
MAX_CHARGE = Decimal("1000000")

AmountSource = str | Decimal | Callable[["Call"], "str | Decimal"]
"""A charge: fixed (``"12.50"``) or computed from the call (``lambda call: call.data["due"]``)."""


class PayPrompt:
    """What the caller hears at one step of a payment (Twilio's ``<Prompt for=...>``).

    ``step`` is the ``for`` value; ``attempt``, ``error_type`` and ``card_type`` narrow
    when it plays (any attempt, no error, any card when not given). Without a prompt for a
    step, Twilio plays its own default wording.

        PayPrompt("payment-card-number", "Please enter your card number.")
        PayPrompt("payment-card-number", "That number is not valid. Try again.",
                  error_type=["invalid-card-number"], attempt=[2, 3])
    """

    def __init__(
        self,
        step: str,
        prompt: n.PromptLike,
        *,
        attempt: Iterable[int] = (),
        error_type: Iterable[str] = (),
        card_type: Iterable[str] = (),
    ) -> None:
        self.argument_problems: list[ArgumentProblem] = check.one_of("step", step, PAY_STEPS)
        parts, problems = n._checked_prompt("prompt", prompt)
        self.argument_problems += problems
        if not parts and not problems:
            self.argument_problems.append(
                ArgumentProblem(
                    "prompt", check.given(prompt), 'give what they hear, e.g. "Enter your card."'
                )
            )
        self.step = step
        self.parts = parts
        self.attempt = _numbers(attempt, self.argument_problems)
        self.error_type = _words("error_type", error_type, PAY_ERROR_TYPES, self.argument_problems)
        self.card_type = _words("card_type", card_type, CARD_TYPES, self.argument_problems)

    def describe(self) -> str:
        return n.describe_prompt(self.parts)


def pay_prompt_kind(prompt: PayPrompt) -> str:
    """How ``ivrkit prompts`` names a PayPrompt: its step and when it plays."""
    kind = f"pay {prompt.step}"
    if prompt.attempt:
        kind += " attempt=" + ",".join(str(a) for a in prompt.attempt)
    if prompt.error_type:
        kind += " error=" + ",".join(prompt.error_type)
    if prompt.card_type:
        kind += " card=" + ",".join(prompt.card_type)
    return kind


def _numbers(value: Any, problems: list[ArgumentProblem]) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, str) or not isinstance(value, Iterable):
        problems.append(ArgumentProblem("attempt", check.given(value), "expected e.g. [2, 3]"))
        return ()
    found: list[int] = []
    for item in value:
        wrong = check.whole_number("attempt", item, 1, 10, "which attempts it plays on")
        problems += wrong
        if not wrong:
            found.append(item)
    return tuple(found)


def _words(
    argument: str, value: Any, allowed: Sequence[str], problems: list[ArgumentProblem]
) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, Iterable):
        problems.append(
            ArgumentProblem(argument, check.given(value), f'expected e.g. ["{allowed[0]}"]')
        )
        return ()
    found: list[str] = []
    for item in value:
        wrong = check.one_of(argument, item, allowed)
        problems += wrong
        if not wrong:
            found.append(item)
    return tuple(found)


class Pay(n.Node):
    """Take a card payment (charge) or save a card for later (tokenize) with ``<Pay>``.

    Twilio asks for the card number, expiry date, security code and postal code, checks
    them, and talks to the payment connector; this app never sees the digits. Outcomes:
    ``on`` maps each ``Result`` to a state: ``"success"`` must be named; ``"*"`` stands
    for every failure not named (too-many-failed-attempts, caller-interrupted-with-star,
    payment-connector-error, validation-error, internal-error), which must lead
    somewhere; a caller who hung up ends the flow unless ``"caller-hung-up"`` is named.
    What is kept (confirmation code or token, card type, masked number) goes to
    ``call.data[save_as]``; see :mod:`ivrkit.pay`. Defaults: tokenize (no
    ``charge_amount``), usd, visa/mastercard/amex, security and postal code asked, one
    attempt, 5 s between keys, Twilio's own prompts.

        pay = Pay(charge_amount=lambda call: call.data["due"], description="Acme bill",
                  prompts=[PayPrompt("payment-card-number", "Enter your card number.")],
                  on={"success": "paid", "*": "not_paid"})
    """

    kind = "pay"
    waits_for_caller = True

    def __init__(
        self,
        *,
        on: Mapping[str, n.Target],
        charge_amount: AmountSource | None = None,
        currency: str = "usd",
        description: str | None = None,
        card_types: Iterable[str] = DEFAULT_CARD_TYPES,
        connector: str | None = None,
        postal_code: bool | str = True,
        min_postal_code_length: int | None = None,
        security_code: bool = True,
        max_attempts: int = 1,
        timeout: int = 5,
        language: str | None = None,
        token_type: str | None = None,
        prompts: Sequence[PayPrompt] = (),
        save_as: str = "payment",
        status_callback: bool = True,
    ) -> None:
        super().__init__()
        self._check(
            _amount_problems(charge_amount)
            + _currency_problems(currency)
            + check.optional_text("description", description, '"Acme invoice"')
            + check.optional_text("connector", connector, '"Stripe_Connector"')
            + check.flag("security_code", security_code)
            + check.whole_number("max_attempts", max_attempts, 1, 3, "tries Twilio gives")
            + check.whole_number("timeout", timeout, 1, 600, "seconds between keys")
            + check.name("save_as", save_as, '"payment"')
            + check.flag("status_callback", status_callback)
        )
        if not isinstance(postal_code, bool) and not (
            isinstance(postal_code, str) and postal_code.strip()
        ):
            self._check(
                [
                    ArgumentProblem(
                        "postal_code",
                        check.given(postal_code),
                        'expected True (ask), False (do not ask) or the code, e.g. "94105"',
                    )
                ]
            )
        if min_postal_code_length is not None:
            self._check(
                check.whole_number(
                    "min_postal_code_length",
                    min_postal_code_length,
                    1,
                    10,
                    "shortest postal code accepted",
                )  # fmt: skip
            )
        if language is not None and not (
            isinstance(language, str) and language.lower() in _LANGUAGE_KEYS
        ):
            self._check(check.one_of("language", language, PAY_LANGUAGES))
        if token_type is not None:
            self._check(check.one_of("token_type", token_type, TOKEN_TYPES))
            if charge_amount is not None:
                self._check(
                    [
                        ArgumentProblem(
                            "token_type",
                            f'"{token_type}" given with charge_amount',
                            "a token type is for saving a card: drop charge_amount to "
                            "tokenize, or drop token_type to charge",
                        )
                    ]
                )
        types_problems: list[ArgumentProblem] = []
        self.card_types = _words("card_types", card_types, CARD_TYPES, types_problems)
        if not self.card_types and not types_problems:
            types_problems.append(
                ArgumentProblem("card_types", "none given", 'expected e.g. ["visa", "mastercard"]')
            )
        self._check(types_problems)
        self.prompts: tuple[PayPrompt, ...] = ()
        if isinstance(prompts, PayPrompt) or not isinstance(prompts, Sequence):
            self._check(
                [
                    ArgumentProblem(
                        "prompts",
                        check.given(prompts),
                        'expected a list of PayPrompt(...), e.g. [PayPrompt("payment-card-'
                        'number", "Enter your card number.")]',
                    )
                ]
            )
        else:
            for index, item in enumerate(prompts):
                if not isinstance(item, PayPrompt):
                    self._check(
                        [
                            ArgumentProblem(
                                f"prompts[{index}]",
                                check.given(item),
                                "expected PayPrompt(step, prompt)",
                            )
                        ]  # fmt: skip
                    )
                    continue
                self._check(check.nested(f"prompts[{index}]", item))
            self.prompts = tuple(p for p in prompts if isinstance(p, PayPrompt))
        good_on = self._check(check.outcome_map("on", "Pay", "a Result", on, PAY_RESULTS))
        self.on = dict(on or {}) if good_on else {}
        self.charge_amount = charge_amount
        self.currency = currency
        self.description = description
        self.connector = connector
        self.postal_code = postal_code
        self.min_postal_code_length = min_postal_code_length
        self.security_code = security_code
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.language = language
        self.token_type = token_type
        self.save_as = save_as
        self.status_callback = status_callback
        self._hang_up = n.Hangup()

    @property
    def charges(self) -> bool:
        """True for a charge, False for saving the card (a token)."""
        return self.charge_amount is not None

    @property
    def dynamic(self) -> bool:
        """Whether the rendered verb depends on the call (computed amount or prompt text)."""
        return callable(self.charge_amount) or any(
            isinstance(part, n.Say) and callable(part.text)
            for prompt in self.prompts
            for part in prompt.parts
        )

    def target_for(self, result: str) -> n.Target | None:
        """Where a Result leads: ``"*"`` only for failures; a hang-up ends the flow."""
        if result in self.on:
            return self.on[result]
        if result == "success":
            return None
        if result == "caller-hung-up":
            return self._hang_up
        return self.on.get("*")

    def outcomes(self) -> list[tuple[str, n.Outcome]]:
        # Unmapped results are left out: rule IVR070 reports them (a flow with one does not load).
        found: list[tuple[str, n.Outcome]] = []
        for result in PAY_RESULTS:
            target = self.target_for(result)
            if target is not None:
                found.append((f"pay:{result}", target))
        return found

    def unhandled_results(self) -> list[str]:
        return [result for result in PAY_RESULTS if self.target_for(result) is None]

    def describe(self) -> str:
        if self.charges:
            amount = "(computed)" if callable(self.charge_amount) else str(self.charge_amount)
            return f"(pay {amount} {self.currency})"
        return "(save a card)"

    def steps(self) -> tuple[str, ...]:
        """The steps Twilio walks through, in order, for this state's options."""
        found = ["payment-card-number", "expiration-date"]
        if self.security_code:
            found.append("security-code")
        if self.postal_code is True:
            found.append("postal-code")
        return (*found, "payment-processing")


def _amount_problems(value: Any) -> list[ArgumentProblem]:
    if value is None or callable(value):
        return []
    example = 'expected the amount as text or Decimal, e.g. "12.50", or a function (call) -> str'
    if isinstance(value, bool) or isinstance(value, float | int):
        return [ArgumentProblem("charge_amount", check.given(value),
                                example + " (floats round: give cents as text)")]  # fmt: skip
    if not isinstance(value, str | Decimal):
        return [ArgumentProblem("charge_amount", check.given(value), example)]
    problem = amount_problem(value)
    return [ArgumentProblem("charge_amount", problem, example)] if problem else []


def amount_problem(value: str | Decimal) -> str | None:
    """Why ``value`` is not a charge Twilio accepts (None when it is): 0 < amount <= 1,000,000."""
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return f"{str(value)[:20]!r} is not a number"
    if not amount.is_finite() or amount <= 0 or amount > MAX_CHARGE:
        return f"{amount} is out of range (more than 0, at most 1,000,000; 0 would tokenize)"
    if amount.as_tuple().exponent < -2:  # type: ignore[operator]
        return f"{amount} has more than two decimals"
    return None


def _currency_problems(value: Any) -> list[ArgumentProblem]:
    if isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha():
        return []
    return [ArgumentProblem("currency", check.given(value), 'expected a currency code, e.g. "usd"')]


# -- rendering ---------------------------------------------------------------------------------


def render(response: VoiceResponse, node: Pay, *, call: Call, voice: Voice, links: Links) -> None:
    """The ``<Pay>`` verb with its prompts; every attribute Twilio needs is written out.

    The charge is computed here when it is a function; an amount Twilio would refuse is a
    flow bug, raised so the caller hears the flow's apology rather than a validation-error.
    """
    from ivrkit.twiml import add_prompt

    attrs: dict[str, Any] = {
        "input": "dtmf",
        "action": links.action(node.name),
        "payment_method": "credit-card",
        "timeout": node.timeout,
        "max_attempts": node.max_attempts,
        "security_code": node.security_code,
        "postal_code": node.postal_code,
        "currency": node.currency,
        "valid_card_types": " ".join(node.card_types),
    }
    if node.status_callback:
        attrs["status_callback"] = links.pay_status(node.name)
    if node.charge_amount is not None:
        amount = node.charge_amount(call) if callable(node.charge_amount) else node.charge_amount
        problem = amount_problem(amount)
        if problem is not None:
            raise FlowRuntimeError(f"{node.name}: charge_amount: {problem}")
        attrs["charge_amount"] = str(amount).strip()
    for name, value in (
        ("description", node.description),
        ("payment_connector", node.connector),
        ("min_postal_code_length", node.min_postal_code_length),
        ("language", node.language),
        ("token_type", node.token_type),
    ):
        if value is not None:
            attrs[name] = value
    verb = response.pay(**attrs)
    for prompt in node.prompts:
        extra: dict[str, Any] = {}
        if prompt.attempt:
            extra["attempt"] = " ".join(str(a) for a in prompt.attempt)
        if prompt.error_type:
            extra["error_type"] = " ".join(prompt.error_type)
        if prompt.card_type:
            extra["card_type"] = " ".join(prompt.card_type)
        element = verb.prompt(for_=prompt.step, **extra)
        add_prompt(element, prompt.parts, call, voice)


# -- reading the action ------------------------------------------------------------------------


def selection(node: Pay, params: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """(trigger, call data) from the action webhook: only what may be kept of a payment."""
    result = params.get("Result", "")
    if result not in PAY_RESULTS:  # the fields check refuses these first; defence in depth
        result = "internal-error"
    kept: dict[str, Any] = {"result": result}
    for field, key in (
        ("PaymentConfirmationCode", "confirmation_code"),
        ("PaymentToken", "token"),
        ("PaymentCardType", "card_type"),
        ("PayErrorCode", "error_code"),
    ):
        if params.get(field):
            kept[key] = params[field]
    if params.get("PaymentCardNumber"):
        kept["masked_number"] = mask_card_number(params["PaymentCardNumber"])
    return f"pay:{result}", {node.save_as: kept}
