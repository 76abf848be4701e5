"""Masking personal data before it reaches logs or the event log."""

from __future__ import annotations

from collections.abc import Mapping

from ivrkit.memo import BoundedMemo

# Parameters that carry a phone number, SIP address or client name of a person.
PHONE_PARAMS = frozenset(
    {
        "From",
        "To",
        "Caller",
        "Called",
        "ForwardedFrom",
        "CallerName",
        "CalledVia",
        "DialCallSid_From",
        "StirVerstat",
    }
)
_SECRET_PARAMS = frozenset({"CallToken"})
# <Pay> fields (action and status callback): a card or account number keeps its last four
# digits; what else identifies the card is never kept, even when Twilio sends it in clear.
_CARD_NUMBER_PARAMS = frozenset({"PaymentCardNumber", "BankAccountNumber"})
_TOKEN_PARAMS = frozenset({"PaymentToken", "ProfileId"})
_CARD_SECRET_PARAMS = frozenset(
    {"ExpirationDate", "SecurityCode", "PaymentCardPostalCode", "BankRoutingNumber"}
)
_PAYMENT_PARAMS = _CARD_NUMBER_PARAMS | _TOKEN_PARAMS | _CARD_SECRET_PARAMS
CARD_MASK = "****"


_masked: BoundedMemo[str, str] = BoundedMemo(4096)


def mask_number(value: str) -> str:
    """'+14155550123' -> '+1415*****23': enough to tell calls apart, not to dial back."""
    masked = _masked.get(value)
    if masked is None:
        # Every webhook of a call carries the same numbers: mask each once.
        masked = _masked.keep(value, _mask(value))
    return masked


def _mask(value: str) -> str:
    if not value:
        return value
    if value.startswith(("client:", "sip:")):
        scheme, _, rest = value.partition(":")
        return f"{scheme}:{rest[:2]}***"
    if len(value) < 6:
        return "*" * len(value)
    keep_head = 5 if value.startswith("+") else 4
    return value[:keep_head] + "*" * (len(value) - keep_head - 2) + value[-2:]


def mask_params(params: Mapping[str, str]) -> dict[str, str]:
    masked = dict(params)
    for name in PHONE_PARAMS.intersection(masked):
        masked[name] = mask_number(masked[name])
    for name in _SECRET_PARAMS.intersection(masked):
        masked[name] = "***"
    if not _PAYMENT_PARAMS.isdisjoint(masked):
        mask_payment(masked)
    return masked


def mask_card_number(value: str) -> str:
    """Every digit but the last four as ``x``: ``4111-1111-1111-1111`` -> ``xxxx-xxxx-xxxx-1111``.

    Twilio's masked form (``xxxx-xxxxxx-x4001``) comes out unchanged; anything else that is
    not a digit (spaces, dashes) keeps its place, so the shape still tells the card apart.
    """
    digits = sum(char.isdigit() for char in value)
    hidden = digits - 4
    out = []
    for char in value:
        if char.isdigit() and hidden > 0:
            out.append("x")
            hidden -= 1
        else:
            out.append(char)
    return "".join(out)


def mask_payment(params: dict[str, str]) -> dict[str, str]:
    """Mask the card fields of a ``<Pay>`` webhook in place (and return it)."""
    for name in _CARD_NUMBER_PARAMS.intersection(params):
        params[name] = mask_card_number(params[name])
    for name in _TOKEN_PARAMS.intersection(params):
        # a reusable token charges the card again: the event log gets its tail only
        if params[name]:
            params[name] = CARD_MASK + params[name][-4:]
    for name in _CARD_SECRET_PARAMS.intersection(params):
        if params[name]:
            params[name] = CARD_MASK
    return params
