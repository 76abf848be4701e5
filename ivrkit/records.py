"""The persisted shape of a call and of its event log (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    """Naive UTC, the one time format both SQLite and PostgreSQL columns accept."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class CallRecord:
    """One row per CallSid: where the call is, its data, and the answer last given.

    ``stack`` holds the (flow, state) frames of parent flows while a sub-flow runs;
    ``step`` counts handled webhooks, and every callback URL carries it, so a retried
    webhook is recognised and answered with ``last_twiml`` without firing anything.
    """

    call_sid: str
    flow: str
    flow_version: str
    state: str
    step: int = 0
    status: str = "ringing"
    caller: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    stack: list[list[str]] = field(default_factory=list)
    last_twiml: str = ""
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    ended_at: datetime | None = None
    duration: int | None = None


@dataclass
class CallEvent:
    """An append-only log line: a webhook received, what it fired, what was answered."""

    call_sid: str
    step: int
    kind: str
    state: str
    fired: str = ""
    params: dict[str, str] = field(default_factory=dict)
    twiml: str = ""
    at: datetime = field(default_factory=utcnow)
