"""The console's view of the call store: filtered call lists and a call's timeline.

Read-only SQLAlchemy Core queries over the tables both stores share. Nothing here shows
a phone number the store does not already keep masked: the caller column holds
``mask_number``'s form (``+1415*****23``), so "the last digits of a number" can match at
most its last two digits, and a search for more is refused rather than guessed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from ivrkit.masking import PHONE_PARAMS, mask_number
from ivrkit.records import CallEvent, CallRecord
from ivrkit.store import CallStore
from ivrkit.store.codec import record_from_row
from ivrkit.store.schema import calls

DIALPAD_CALLER = "client:ivrkit-dialpad"
"""The From of a dialpad call: a Twilio Client identity, as a browser phone's call has."""
SIMULATED_CALLER = mask_number(DIALPAD_CALLER)
LAST_DIGITS_KEPT = 2
_SID = re.compile(r"^[A-Za-z0-9]{1,64}$")
# Seven digits or more, maybe grouped, standing alone (not inside a SID or a URL token).
_LONG_NUMBER = re.compile(r"(?<![\w.-])\+?\d(?:[\s().-]?\d){6,}(?![\w])")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
PAGE_SIZE = 50


class FilterError(ValueError):
    """A filter the console cannot apply; the message says what to type instead."""


@dataclass(frozen=True)
class CallFilter:
    flow: str = ""
    state: str = ""
    status: str = ""
    day: date | None = None
    call_sid: str = ""
    digits: str = ""
    simulated: bool = False

    @classmethod
    def from_query(cls, query: Any) -> CallFilter:
        """From the call list's query string; raises ``FilterError`` on a bad value."""
        day_text = (query.get("date") or "").strip()
        try:
            day = date.fromisoformat(day_text) if day_text else None
        except ValueError:
            raise FilterError(f"date must look like 2026-11-18, not {day_text[:20]!r}") from None
        sid = (query.get("call_sid") or "").strip()
        if sid and not _SID.match(sid):
            raise FilterError("CallSid has letters and digits only, e.g. CA0123...")
        digits = (query.get("digits") or "").strip()
        if digits and not digits.isdigit():
            raise FilterError("last digits: digits only, e.g. 23")
        if len(digits) > LAST_DIGITS_KEPT:
            raise FilterError(
                f"only the last {LAST_DIGITS_KEPT} digits of a caller's number are kept "
                "(numbers are stored masked): type at most 2"
            )
        return cls(
            flow=(query.get("flow") or "").strip()[:100],
            state=(query.get("state") or "").strip()[:200],
            status=(query.get("status") or "").strip()[:20],
            day=day,
            call_sid=sid,
            digits=digits,
            simulated=query.get("simulated") in ("1", "on", "true"),
        )

    def as_query(self) -> dict[str, str]:
        values = {
            "flow": self.flow,
            "state": self.state,
            "status": self.status,
            "date": self.day.isoformat() if self.day else "",
            "call_sid": self.call_sid,
            "digits": self.digits,
            "simulated": "1" if self.simulated else "",
        }
        return {k: v for k, v in values.items() if v}


async def find_calls(
    store: CallStore,
    where: CallFilter,
    *,
    limit: int = PAGE_SIZE,
    updated_after: datetime | None = None,
) -> list[CallRecord]:
    """Calls matching ``where``, most recently active first."""
    query = select(calls)
    if where.flow:
        query = query.where(calls.c.flow == where.flow)
    if where.state:
        query = query.where(calls.c.state == where.state)
    if where.status:
        query = query.where(calls.c.status == where.status)
    if where.day:
        start = datetime(where.day.year, where.day.month, where.day.day)
        query = query.where(calls.c.created_at >= start, calls.c.created_at < start + timedelta(1))
    if where.call_sid:
        query = query.where(calls.c.call_sid.startswith(where.call_sid, autoescape=True))
    if where.digits:
        query = query.where(calls.c.caller.endswith(where.digits, autoescape=True))
    if where.simulated:
        query = query.where(calls.c.caller == SIMULATED_CALLER)
    if updated_after is not None:
        query = query.where(calls.c.updated_at > updated_after)
    query = query.order_by(calls.c.updated_at.desc()).limit(limit)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [record_from_row(row) for row in rows]


def scrub(text: str) -> str:
    """``text`` with anything shaped like a phone number masked: a second line of defence
    for what reaches a page, should a flow put a number in a prompt or a parameter."""
    return _LONG_NUMBER.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    found = match.group()
    if _ISO_DATE.fullmatch(found):
        return found
    return mask_number(re.sub(r"[^\d+]", "", found))


def call_row(record: CallRecord) -> dict[str, Any]:
    """A call as the list, the live stream and the JSON API show it."""
    return {
        "call_sid": record.call_sid,
        "flow": record.flow,
        "state": record.state,
        "status": record.status,
        "caller": scrub(record.caller),
        "simulated": record.caller == SIMULATED_CALLER,
        "step": record.step,
        "created_at": record.created_at.isoformat(timespec="seconds"),
        "updated_at": record.updated_at.isoformat(timespec="seconds"),
        "duration": record.duration,
    }


@dataclass
class TimelineEntry:
    """One webhook of a call, read for a person."""

    at: datetime
    offset: float
    kind: str
    state: str
    step: int
    fired: str
    heard: list[str] = field(default_factory=list)
    pressed: str = ""
    said: str = ""
    outcomes: list[str] = field(default_factory=list)
    twiml: str = ""
    params: dict[str, str] = field(default_factory=dict)


_OUTCOME_PARAMS = {
    "DialCallStatus": "dial",
    "DialCallDuration": "dial seconds",
    "RecordingDuration": "recording seconds",
    "RecordingStatus": "recording",
    "QueueResult": "queue",
    "QueueTime": "queue seconds",
    "CallStatus": "call status",
    "CallDuration": "call seconds",
    "AnsweredBy": "answered by",
}


def timeline(events: list[CallEvent], secret_states: frozenset[str] | set[str]) -> list[
    TimelineEntry
]:
    """The call's events as what was heard, pressed, said and decided, with timings.

    The event log holds numbers masked and secret entries as ``****`` already; a secret
    state's entries are masked here again, and anything number-shaped is scrubbed.
    """
    entries: list[TimelineEntry] = []
    start = events[0].at if events else None
    for event in events:
        params = {k: scrub(v) if k not in PHONE_PARAMS else mask_number(v)
                  for k, v in event.params.items()}
        secret = event.state in secret_states
        pressed = params.get("Digits", "")
        said = params.get("SpeechResult", "")
        if secret:
            pressed = "****" if pressed else ""
            said = "****" if said else ""
            params = {k: ("****" if k in ("Digits", "SpeechResult") and v else v)
                      for k, v in params.items()}
        outcomes = [f"{label}: {params[name]}" for name, label in _OUTCOME_PARAMS.items()
                    if params.get(name) and (name != "CallStatus" or event.kind == "status")]
        entries.append(
            TimelineEntry(
                at=event.at,
                offset=(event.at - start).total_seconds() if start else 0.0,
                kind=event.kind,
                state=event.state,
                step=event.step,
                fired=event.fired,
                heard=[scrub(text) for text in spoken(event.twiml)],
                pressed=pressed,
                said=scrub(said),
                outcomes=outcomes,
                twiml=scrub(event.twiml),
                params=params,
            )
        )
    return entries


def spoken(document: str) -> list[str]:
    """The <Say> texts of a TwiML answer, in order (nothing for a non-TwiML body)."""
    if not document.strip():
        return []
    try:
        root = ET.fromstring(document)
    except ET.ParseError:
        return []
    return [" ".join("".join(say.itertext()).split()) for say in root.iter("Say")]
