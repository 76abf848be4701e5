"""Twilio's webhook fields checked for shape before anything touches a store.

A field outside Twilio's format is never Twilio's: answering it with a 400 and the reason
keeps it away from the database (a NUL byte in a CallSid broke PostgreSQL's shared lock
connection for every call of the process), from ``int()`` (``"²".isdigit()`` is true,
``int("²")`` raises) and from the event log. The checks are plain ASCII rules, cheap
enough for every webhook: regular expressions compiled once and a membership test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

CALL_STATUSES = frozenset(
    {
        "queued",
        "initiated",
        "ringing",
        "in-progress",
        "completed",
        "busy",
        "failed",
        "no-answer",
        "canceled",
    }
)
"""CallStatus values Twilio sends (twilio-voice-reference.md, section 4)."""

SESSION_STATUSES = frozenset({"ended", "completed", "failed"})
"""SessionStatus values of a ``<Connect action>`` after ConversationRelay (section 10)."""

SID_PREFIXES: Mapping[str, str] = {
    "CallSid": "CA",
    "AccountSid": "AC",
    "ParentCallSid": "CA",
    "DialCallSid": "CA",
    "RecordingSid": "RE",
    "QueueSid": "QU",
    "SessionId": "VX",
}
"""Fields holding a Twilio SID: its two-letter prefix, then 32 hex digits."""

COUNT_FIELDS = frozenset(
    {
        "CallDuration",
        "Duration",
        "DialCallDuration",
        "RecordingDuration",
        "RecordingChannels",
        "QueueTime",
        "AvgQueueTime",
        "QueuePosition",
        "CurrentQueueSize",
        "MaxQueueSize",
        "SequenceNumber",
        "SipResponseCode",
        "MachineDetectionDuration",
        "SessionDuration",
        "Attempt",
    }
)
"""Whole numbers Twilio sends as plain ASCII digits (seconds, counts, codes)."""

PAY_RESULTS = frozenset(
    {
        "success",
        "too-many-failed-attempts",
        "caller-interrupted-with-star",
        "caller-hung-up",
        "payment-connector-error",
        "validation-error",
        "internal-error",
    }
)
"""``Result`` of Twilio's ``<Pay>`` action (twilio-voice-reference.md, Part 2 section 11)."""
PAY_FOR = frozenset(
    {
        "payment-card-number",
        "expiration-date",
        "security-code",
        "postal-code",
        "bank-routing-number",
        "bank-account-number",
        "payment-processing",
    }
)
"""``For`` of a ``<Pay>`` status callback: the step it reports."""
_PAY_WORD = re.compile(r"[a-z][a-z0-9-]{0,63}")
_PAY_WORD_FIELDS = ("PaymentCardType", "ErrorType", "PaymentMethod")
_MASKED_NUMBER = re.compile(r"[0-9xX*\- ]{1,40}")

KEYPAD = frozenset("0123456789*#ABCDabcd")
"""What ``Digits`` holds: DTMF keys (or ``hangup`` after a Record)."""
MAX_KEYS = 256

MAX_COUNT_DIGITS = 10
"""Ten digits: more than any duration (Twilio's longest call is 24 h = 86,400 s)."""
MAX_STEP_DIGITS = 9
MAX_STATE_CHARS = 200
"""The ``state`` column's width: a longer state name is no state of ours."""

_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
# C0 controls and DEL; tab, newline and carriage return are left to free text (speech,
# transcriptions), and every field with a shape refuses them through its own rule.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SHOWN = 40


def shown(value: str) -> str:
    """A value as a log line and an answer may show it: quoted, escaped, cut short."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value):,} characters)"


class FieldProblem(ValueError):
    """A field that is not Twilio's shape; ``kind`` names the rule (for log throttling)."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def check_fields(
    pairs: Sequence[tuple[str, str]],
    params: Mapping[str, str],
    query: Mapping[str, str],
    *,
    raw: tuple[str, str] | None = None,
) -> None:
    """Raise :class:`FieldProblem` for the first field of a webhook outside Twilio's shape.

    ``pairs`` is the form as sent (to see control characters and repeated fields),
    ``params`` the same as a dict, ``query`` the action URL's query (``state``, ``step``).
    ``raw``, the form and the query still URL-encoded, lets a webhook without a control
    character (nearly all) skip the look at each field.
    """
    if raw is None or not all(map(_plainly_printable, raw)):
        _check_controls(pairs, "field", "Twilio sends none")
        _check_controls(list(query.items()), "URL query field", "ivrkit puts none there")
    if len(params) != len(pairs):
        _check_repeats(pairs)
    for name, prefix in SID_PREFIXES.items():
        sid = params.get(name)
        if sid is not None and (not sid.startswith(prefix) or not _SID.fullmatch(sid)):
            if sid == "" and name != "CallSid":
                continue  # Twilio leaves some SIDs blank (no parent, no recording)
            raise FieldProblem(
                f"{name} {shown(sid)} is not Twilio's shape: {prefix} followed by 32 hex digits",
                name,
            )
    status = params.get("CallStatus")
    if status is not None and status not in CALL_STATUSES:
        raise FieldProblem(
            f"CallStatus {shown(status)} is not one of Twilio's: "
            + ", ".join(sorted(CALL_STATUSES)),
            "CallStatus",
        )
    session_status = params.get("SessionStatus")
    if session_status is not None and session_status not in SESSION_STATUSES:
        raise FieldProblem(
            f"SessionStatus {shown(session_status)} is not one of Twilio's: "
            + ", ".join(sorted(SESSION_STATUSES)),
            "SessionStatus",
        )
    for name in COUNT_FIELDS.intersection(params):
        value = params[name]
        if value and not (value.isascii() and value.isdigit() and len(value) <= MAX_COUNT_DIGITS):
            raise FieldProblem(
                f"{name} {shown(value)} is not a whole number "
                f"(ASCII digits 0-9, at most {MAX_COUNT_DIGITS})",
                name,
            )
    keys = params.get("Digits")
    if keys and not (len(keys) <= MAX_KEYS and (KEYPAD.issuperset(keys) or keys == "hangup")):
        # The value is not shown: it may be what a caller typed (a PIN, an account).
        raise FieldProblem(
            f"Digits holds what no keypad sends (0-9, *, #, A-D; at most {MAX_KEYS} keys; "
            f"or 'hangup'): {len(keys)} characters",
            "Digits",
        )
    if "Result" in params or "For" in params or "PaymentCardNumber" in params:
        _check_payment(params)
    _check_query(query)


def _check_payment(params: Mapping[str, str]) -> None:
    """``<Pay>``'s fields. A card number is checked for shape only and never shown: the
    app keeps its last four digits whatever arrives (:func:`ivrkit.masking.mask_card_number`)."""
    result = params.get("Result")
    if result is not None and result not in PAY_RESULTS:
        raise FieldProblem(
            f"Result {shown(result)} is not one of <Pay>'s: " + ", ".join(sorted(PAY_RESULTS)),
            "Result",
        )
    step = params.get("For")
    if step is not None and step not in PAY_FOR:
        raise FieldProblem(
            f"For {shown(step)} is not a <Pay> step: " + ", ".join(sorted(PAY_FOR)), "For"
        )
    for name in _PAY_WORD_FIELDS:
        value = params.get(name)
        if value and not _PAY_WORD.fullmatch(value):
            raise FieldProblem(f"{name} {shown(value)} is not a <Pay> value (a-z, 0-9, -)", name)
    for name in ("PaymentCardNumber", "BankAccountNumber"):
        value = params.get(name)
        if value and not _MASKED_NUMBER.fullmatch(value):
            raise FieldProblem(
                f"{name} holds what no masked number does (0-9, x, *, -, space; at most 40): "
                f"{len(value)} characters",
                name,
            )


_ONCE = frozenset(
    {"CallStatus", "Digits", "SessionStatus", "HandoffData", "Result", "For", "PaymentCardNumber"}
)


def _check_repeats(pairs: Sequence[tuple[str, str]]) -> None:
    """Twilio sends each field once; a repeated field with a rule could smuggle a value
    past it (the check sees one, the store another), so it is refused."""
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen and (name in SID_PREFIXES or name in COUNT_FIELDS or name in _ONCE):
            raise FieldProblem(f"field {name} is sent more than once", "repeated field")
        seen.add(name)


def _check_query(query: Mapping[str, str]) -> None:
    step = query.get("step")
    if step is not None and not (
        step.isascii() and step.isdigit() and 0 < len(step) <= MAX_STEP_DIGITS
    ):
        raise FieldProblem(
            f"step {shown(step)} in the URL is not a step number "
            f"(ASCII digits 0-9, at most {MAX_STEP_DIGITS}); was the URL built by ivrkit?",
            "step",
        )
    state = query.get("state")
    if state is not None and (len(state) > MAX_STATE_CHARS or not state.isprintable()):
        raise FieldProblem(
            f"state {shown(state)} in the URL is not a state name "
            f"(printable, at most {MAX_STATE_CHARS} characters); was the URL built by ivrkit?",
            "state",
        )


def _plainly_printable(encoded: str) -> bool:
    """No control character in this URL-encoded text, neither as is nor %-escaped (a
    %09, %0A or %0D, allowed in free text, only sends it to the closer look)."""
    return encoded.isprintable() and not (
        "%0" in encoded or "%1" in encoded or "%7F" in encoded or "%7f" in encoded
    )


def _check_controls(pairs: Sequence[tuple[str, str]], what: str, fix: str) -> None:
    for name, value in pairs:
        # isprintable() is the quick yes; the rare no (a tab, a non-Latin space) is asked
        # again of the precise rule.
        if not (value.isprintable() and name.isprintable()) and (
            _CONTROL.search(value) or _CONTROL.search(name)
        ):
            raise FieldProblem(
                f"{what} {shown(name)} holds a control character (NUL, ...); {fix}",
                "control character",
            )
