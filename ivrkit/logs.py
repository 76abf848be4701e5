"""Log lines as text (the default) or one JSON object per line (``IVRKIT_LOG_FORMAT=json``).

A JSON line carries the webhook it was written during (flow, state, step, CallSid, the
caller's number masked) from the webhook's :mod:`ivrkit.outcome` note, so an existing
line such as a throttled storage failure is tied to its call without changing it. Phone
numbers in the message itself are masked once more on the way out, in case a line
formats one raw.

The access line, one per webhook at INFO on ``ivrkit.access``, is written by the endpoint
after the answer is sent. It is the one line every webhook pays for (INFO is the default
level), so it is made by hand: its message formatted once, its record built without the
logging module's search of the stack for its caller, and the default text and JSON
formatters reuse the timestamp of the second they last wrote. Handlers, filters and
propagation are the logging module's as ever: a test's caplog and a user's handler see it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from ivrkit.masking import mask_number
from ivrkit.outcome import Note, current

FORMATS = ("text", "json")
access = logging.getLogger("ivrkit.access")
_NUMBER = re.compile(r"\+\d{7,15}\b")
ACCESS_FIELDS = ("endpoint", "result", "cause", "status", "latency_ms")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
"""The text lines of ``ivrkit serve``: :class:`TextFormatter` writes this one without the
generic %-formatting."""


class TextFormatter(logging.Formatter):
    """The standard formatter, cheaper for :data:`TEXT_FORMAT`: the same text, with the
    date and time formatted once a second rather than once a line."""

    def __init__(self, fmt: str | None = TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._fast = fmt == TEXT_FORMAT and datefmt is None
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        if not self._fast:
            return super().format(record)
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        line = (
            f"{record.asctime} {record.levelname} [{record.process}] {record.name}: "
            f"{record.message}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ISO 8601), level, logger, message,
    process, the current webhook's call fields, the access line's fields, exception."""

    _second = -1
    _stamp = ""

    def _timestamp(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond; the part up to the second made once a second."""
        second = int(created)
        if second != self._second:
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._stamp}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": self._timestamp(record.created),
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
    return {"()": "ivrkit.logs.TextFormatter", "fmt": text_format}


def access_line(note: Note, method: str, path: str, status: int, seconds: float) -> None:
    """The webhook's access line: what, which call, how answered, how long.

    Not for a refused request: its own warning is its one line, throttled (a flood of
    bad requests must not become a flood of lines)."""
    if note.result == "refused" or not access.isEnabledFor(logging.INFO):
        return
    latency_ms = round(seconds * 1000, 2)
    where = f" {note.state}#{note.step}" if note.state else ""
    cause = f" ({note.cause})" if note.cause else ""
    # A prefix tells the calls of a log apart; the JSON line has the whole CallSid.
    sid = note.call_sid[:12] + "…" if note.call_sid else "-"
    # Made here rather than by access.info(): that searches the stack for its caller (the
    # same place every time) and copies ``extra`` key by key.
    record = _access_record(
        f"{method} {path} {status} {note.result}{cause} {sid}{where} {latency_ms:.1f} ms"
    )
    record.note = note
    record.endpoint = note.endpoint
    record.result = note.result
    record.cause = note.cause or None
    record.status = status
    record.latency_ms = latency_ms
    access.handle(record)


def _template() -> logging.LogRecord:
    return logging.LogRecord(
        access.name,
        logging.INFO,
        __file__,
        access_line.__code__.co_firstlineno,
        "",
        (),  # as a logger call without arguments gives
        None,
        "access_line",
    )


_TEMPLATE = _template()
_HAS_TASK_NAMES = hasattr(logging, "logAsyncioTasks")  # Python 3.12+


def _access_record(message: str) -> logging.LogRecord:
    """A record as ``LogRecord(...)`` makes it, from a template of what never changes (the
    logger, level, file, line, process name) and the few fields that do.

    LogRecord's own constructor takes about as long as all the rest of the line: it splits
    the file's path and asks the threading and multiprocessing modules their names."""
    template = _TEMPLATE
    record = logging.LogRecord.__new__(logging.LogRecord)
    record.__dict__.update(template.__dict__)
    now = time.time()
    record.created = now
    record.msecs = int((now - int(now)) * 1000) + 0.0
    record.relativeCreated = template.relativeCreated + (now - template.created) * 1000
    record.msg = message
    if template.thread is not None:  # logging.logThreads
        record.thread = threading.get_ident()
        record.threadName = threading.current_thread().name
    if template.process is not None:  # logging.logProcesses
        record.process = os.getpid()
    if _HAS_TASK_NAMES and logging.logAsyncioTasks:  # type: ignore[attr-defined,unused-ignore]
        task = asyncio.current_task() if _loop_running() else None
        record.taskName = task.get_name() if task is not None else None
    return record


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
