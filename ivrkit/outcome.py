"""What became of the webhook being answered, for its access line, its metrics and its logs.

The endpoint opens a :class:`Note` for each webhook; code deep in the app marks on it what
only it knows (a replay, a fallback and why, a call started or ended) without passing it
down every call, and log lines written meanwhile can say which call they are about. A
note is a plain object in a context variable: tasks the webhook starts share it, and
outside a webhook :func:`current` is None and marking does nothing.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any


class Note:
    """One webhook: which call, state and step, how it was answered, what it changed."""

    __slots__ = (
        "flow",
        "endpoint",
        "call_sid",
        "state",
        "step",
        "caller",
        "result",
        "cause",
        "started",
        "ended",
    )

    def __init__(self, flow: str, endpoint: str) -> None:
        self.flow = flow
        self.endpoint = endpoint
        self.call_sid = ""
        self.state = ""
        self.step = ""
        self.caller = ""
        self.result = "answered"
        """answered, replayed, refused, fallback (the caller heard the apology) or
        unavailable (a callback answered 503)."""
        self.cause = ""
        """Why, for refused (the HTTP status), fallback and unavailable (flow_error,
        storage, call_data, deadline, unknown_call, unrouted, exception)."""
        self.started = False
        """A new call was started and saved."""
        self.ended = ""
        """The final status a status callback applied."""


_current: ContextVar[Note | None] = ContextVar("ivrkit_webhook_note", default=None)


def current() -> Note | None:
    return _current.get()


def open_note(note: Note) -> Any:
    """Make ``note`` the current one; returns the token :func:`close_note` needs."""
    return _current.set(note)


def close_note(token: Any) -> None:
    _current.reset(token)


def seen(params: dict[str, str], query: dict[str, str]) -> None:
    """The webhook was read: which call, state and step it is about."""
    note = _current.get()
    if note is not None:
        note.call_sid = params.get("CallSid", "")
        note.state = query.get("state", "")
        note.step = query.get("step", "")
        note.caller = params.get("From", "")


def mark(result: str, cause: str = "") -> None:
    """The webhook was answered otherwise than normally (see :attr:`Note.result`)."""
    note = _current.get()
    if note is not None:
        note.result = result
        note.cause = cause


def started() -> None:
    note = _current.get()
    if note is not None:
        note.started = True


def ended(status: str) -> None:
    note = _current.get()
    if note is not None:
        note.ended = status
