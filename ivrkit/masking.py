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
    return masked
