"""Log lines as text (the default) or one JSON object per line (``IVRKIT_LOG_FORMAT=json``).

A JSON line carries the webhook it was written during (flow, state, step, CallSid, the
caller's number masked) from the webhook's :mod:`ivrkit.outcome` note, so an existing
line such as a throttled storage failure is tied to its call without changing it. Phone
numbers in the message itself are masked once more on the way out, in case a line
formats one raw.

The access line, one per webhook at INFO on ``ivrkit.access``, is written by the endpoint
after the answer is sent.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from ivrkit.masking import mask_number
from ivrkit.outcome import Note, current

FORMATS = ("text", "json")
access = logging.getLogger("ivrkit.access")
_NUMBER = re.compile(r"\+\d{7,15}\b")
ACCESS_FIELDS = ("endpoint", "result", "cause", "status", "latency_ms")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ISO 8601), level, logger, message,
    process, the current webhook's call fields, the access line's fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _NUMBER.sub(lambda m: mask_number(m.group()), record.getMessage()),
            "process": record.process,
        }
        note: Note | None = getattr(record, "note", None) or current()
        if note is not None:
            data["flow"] = note.flow
            if note.state:
                data["state"] = note.state
            if note.step:
                data["step"] = int(note.step) if note.step.isdigit() else note.step
            if note.call_sid:
                data["CallSid"] = note.call_sid
            if note.caller:
                data["from"] = mask_number(note.caller)
        for name in ACCESS_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data).decode()


def formatter_config(log_format: str, text_format: str) -> dict[str, Any]:
    """The ``formatters`` entry of a logging dictConfig for ``log_format``."""
    if log_format == "json":
        return {"()": "ivrkit.logs.JsonFormatter"}
    return {"format": text_format}


def access_line(note: Note, method: str, path: str, status: int, seconds: float) -> None:
    """The webhook's access line: what, which call, how answered, how long.

    Not for a refused request: its own warning is its one line, throttled (a flood of
    bad requests must not become a flood of lines)."""
    if note.result == "refused" or not access.isEnabledFor(logging.INFO):
        return
    latency_ms = round(seconds * 1000, 2)
    where = f" {note.state}#{note.step}" if note.state else ""
    cause = f" ({note.cause})" if note.cause else ""
    access.info(
        "%s %s %d %s%s %s%s %.1f ms",
        method,
        path,
        status,
        note.result,
        cause,
        # A prefix tells the calls of a log apart; the JSON line has the whole CallSid.
        note.call_sid[:12] + "…" if note.call_sid else "-",
        where,
        latency_ms,
        extra={
            "note": note,
            "endpoint": note.endpoint,
            "result": note.result,
            "cause": note.cause or None,
            "status": status,
            "latency_ms": latency_ms,
        },
    )
