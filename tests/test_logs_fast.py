"""The cheap access line and formatters write exactly what the logging module's generic
ones would: same text, same timestamp, same record fields."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from ivrkit import logs
from ivrkit.outcome import Note


def record(created: float, message: str = "hello %s", args: Any = ("world",)) -> logging.LogRecord:
    made = logging.LogRecord("ivrkit.test", logging.WARNING, __file__, 7, message, args, None)
    made.created = created
    made.msecs = int((created - int(created)) * 1000) + 0.0
    return made


@pytest.mark.parametrize(
    "created", [1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0005, 1_700_000_061.25]
)
def test_text_formatter_writes_what_the_generic_one_does(created: float) -> None:
    fast, generic = logs.TextFormatter(), logging.Formatter(logs.TEXT_FORMAT)
    # Twice: the second line reuses the cached second.
    for _ in range(2):
        assert fast.format(record(created)) == generic.format(record(created))


def test_text_formatter_with_an_exception_and_a_stack() -> None:
    fast, generic = logs.TextFormatter(), logging.Formatter(logs.TEXT_FORMAT)
    try:
        raise ValueError("boom")
    except ValueError:
        info = sys.exc_info()
    lines = []
    for formatter in (fast, generic):
        made = record(1_700_000_000.5)
        made.exc_info = info
        made.stack_info = "Stack (most recent call last):\n  here"
        lines.append(formatter.format(made))
    assert lines[0] == lines[1]
    assert "ValueError: boom" in lines[0]


def test_text_formatter_with_another_format_is_the_generic_one() -> None:
    fast = logs.TextFormatter("%(levelname)s|%(message)s|%(asctime)s", "%H")
    assert fast.format(record(1_700_000_000.5)) == logging.Formatter(
        "%(levelname)s|%(message)s|%(asctime)s", "%H"
    ).format(record(1_700_000_000.5))
    assert logs.formatter_config("text", "%(message)s") == {
        "()": "ivrkit.logs.TextFormatter",
        "fmt": "%(message)s",
    }


@pytest.mark.parametrize("created", [1_700_000_000.0, 1_700_000_000.25, 1_700_000_059.999])
def test_json_timestamp_is_iso_utc_to_the_millisecond(created: float) -> None:
    formatter = logs.JsonFormatter()
    for _ in range(2):
        line = json.loads(formatter.format(record(created)))
        assert line["timestamp"] == datetime.fromtimestamp(created, UTC).isoformat(
            timespec="milliseconds"
        )
        assert line["message"] == "hello world"


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def note() -> Note:
    made = Note("support_line", "action")
    made.call_sid = "CA" + "1" * 32
    made.state = "menu"
    made.step = "2"
    return made


def test_access_record_has_the_fields_a_logger_call_gives() -> None:
    keep = Keep()
    logs.access.addHandler(keep)
    old_level = logs.access.level
    logs.access.setLevel(logging.INFO)
    try:
        logs.access_line(note(), "POST", "/support_line/action", 200, 0.01234)
        logs.access.info("by the logging module")
    finally:
        logs.access.removeHandler(keep)
        logs.access.setLevel(old_level)
    ours, theirs = keep.records
    assert (
        ours.getMessage() == "POST /support_line/action 200 answered CA1111111111… menu#2 12.3 ms"
    )
    for field in (
        "name",
        "levelno",
        "levelname",
        "process",
        "processName",
        "thread",
        "threadName",
        "args",
        "exc_info",
        "stack_info",
    ):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.funcName == "access_line"
    assert (ours.filename, ours.module) == ("logs.py", "logs")
    assert ours.pathname == logs.__file__
    assert ours.process == os.getpid()
    assert ours.thread == threading.get_ident()
    assert abs(ours.created - theirs.created) < 5
    assert ours.msecs == int((ours.created - int(ours.created)) * 1000)
    assert 0 <= theirs.relativeCreated - ours.relativeCreated < 5000
    assert (ours.endpoint, ours.result, ours.cause, ours.status, ours.latency_ms) == (
        "action",
        "answered",
        None,
        200,
        12.34,
    )
    # Fresh each line: a handler keeping records keeps what each said.
    assert ours is not theirs
    assert ours.__dict__ is not logs._TEMPLATE.__dict__


def test_access_record_follows_the_logging_switches(monkeypatch: Any) -> None:
    keep = Keep()
    logs.access.addHandler(keep)
    old_level = logs.access.level
    logs.access.setLevel(logging.INFO)
    monkeypatch.setattr(logging, "logThreads", False)
    monkeypatch.setattr(logging, "logProcesses", False)
    monkeypatch.setattr(logs, "_TEMPLATE", logs._template())
    try:
        logs.access_line(note(), "POST", "/support_line/action", 200, 0.001)
    finally:
        logs.access.removeHandler(keep)
        logs.access.setLevel(old_level)
    (ours,) = keep.records
    assert (ours.thread, ours.threadName, ours.process) == (None, None, None)


def test_no_access_record_below_info() -> None:
    keep = Keep()
    logs.access.addHandler(keep)
    old_level = logs.access.level
    logs.access.setLevel(logging.WARNING)
    try:
        logs.access_line(note(), "POST", "/support_line/action", 200, 0.001)
    finally:
        logs.access.removeHandler(keep)
        logs.access.setLevel(old_level)
    assert keep.records == []
