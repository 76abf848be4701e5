"""Call records and events to and from their rows: the JSON columns and timestamps."""

from __future__ import annotations

import json
import operator
from typing import Any

import orjson
from sqlalchemy import DateTime

from ivrkit.records import CallRecord
from ivrkit.store.schema import CALL_COLUMNS, EVENT_COLUMNS, calls

_JSON_FIELDS = ("data", "counters", "stack")
_stdlib_json = json.JSONEncoder(separators=(",", ":")).encode


def encode_json(value: dict[str, Any] | list[Any]) -> str:
    """Compact JSON of call data, counters, stacks and webhook params.

    orjson is ten times quicker on a webhook's params; what it refuses (non-string keys,
    integers over 64 bits) goes through the standard library, as before.
    """
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _stdlib_json(value)


def record_from_row(row: Any) -> CallRecord:
    return record_from_mapping(row._mapping)


def record_from_mapping(row: Any) -> CallRecord:
    values = dict(row)
    for name in _JSON_FIELDS:
        values[name] = orjson.loads(values[name])
    return CallRecord(**values)


call_fields = operator.attrgetter(*CALL_COLUMNS)
event_fields = operator.attrgetter(*EVENT_COLUMNS)
CALL_JSON = [CALL_COLUMNS.index(name) for name in _JSON_FIELDS]
CALL_TIMES = [i for i, c in enumerate(calls.columns) if isinstance(c.type, DateTime)]
EVENT_JSON = EVENT_COLUMNS.index("params")
EVENT_TIME = EVENT_COLUMNS.index("at")
