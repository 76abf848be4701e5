"""Call records and events to and from their rows: the one codec of every store.

``call.data`` holds str, int (any size), float (finite), bool, None, list, dict (str keys),
date, datetime and Decimal, and reads back as exactly what was saved: from a warm cache
or after a restart, on SQLite or on PostgreSQL. JSON has no date, no Decimal and (for
most readers) no integer past 64 bits, so those are stored as one-key tagged objects::

    date(2026, 12, 2)        {"$date": "2026-12-02"}
    datetime(...)            {"$datetime": "2026-12-02T09:30:00+01:00"}
    Decimal("12.50")         {"$decimal": "12.50"}
    2**80                    {"$int": "1208925819614629174706176"}
    {"$date": "x"} (a dict)  {"$dict": {"$date": "x"}}

An aware datetime comes back with a fixed UTC offset (its zone's name is not kept). Anything
else (a set, a tuple, NaN, an object) is refused when the call is saved, with an error that
names the key, instead of being stored as something else.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import DateTime

from ivrkit.records import CallEvent, CallRecord
from ivrkit.store.schema import CALL_COLUMNS, EVENT_COLUMNS, calls

DATA_TYPES = "str, int, float, bool, None, list, dict, date, datetime, Decimal"
"""What ``call.data`` may hold, as error messages list it."""

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1  # what every JSON reader here keeps exact
_STR_ONLY = frozenset({str})


class CallDataError(TypeError):
    """A value in a call's data (or counters, stack, params) that JSON cannot keep faithfully.

    ``path`` is the keys and indexes leading to it from ``name``, outermost first; ``where``
    (the flow and state) is filled in when the call is saved, and the app says it again with
    the flow's file and class (:meth:`at`): the store knows no flow classes."""

    def __init__(
        self,
        problem: str,
        path: tuple[str | int, ...] = (),
        *,
        name: str = "value",
        where: str = "",
    ) -> None:
        self.problem = problem
        self.path = path
        self.name = name
        message = f"{name}{''.join(f'[{key!r}]' for key in path)} {problem}"
        if where:
            message = f"{where}: {message}; {name} holds {DATA_TYPES}"
        super().__init__(message)

    def within(self, key: str | int) -> CallDataError:
        return CallDataError(self.problem, (key, *self.path))

    def at(self, where: str) -> CallDataError:
        """The same error, said of ``where`` (the app knows the flow's file and class)."""
        return CallDataError(self.problem, self.path, name=self.name, where=where)


class StoredRowError(ValueError):
    """A stored row this version cannot read (e.g. NaN written by an older version).

    Raised while the call's session is being opened, so whatever the session acquired is
    given back by the store before the error reaches the webhook, which answers with the
    flow's apology."""


def to_json(value: Any) -> Any:
    """``value`` as plain JSON types, tagged where JSON cannot hold it (see the module).

    Returns the very object when nothing needs converting (the common case: a webhook's
    params, a small dict of strings), so encoding costs one walk and no copies."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if _INT_MIN <= value <= _INT_MAX else {"$int": str(value)}
    if kind is float:
        if math.isfinite(value):
            return value
        raise CallDataError(f"is {value!r} (a non-finite float)")
    if kind is dict:
        return _dict_to_json(value)
    if kind is list:
        converted: list[Any] | None = None
        for i, item in enumerate(value):
            try:
                new = to_json(item)
            except CallDataError as error:
                raise error.within(i) from None
            if new is not item and converted is None:
                converted = value[:i]
            if converted is not None:
                converted.append(new)
        return value if converted is None else converted
    if kind is datetime:
        return {"$datetime": value.isoformat()}
    if kind is date:
        return {"$date": value.isoformat()}
    if kind is Decimal:
        if value.is_finite():
            return {"$decimal": str(value)}
        raise CallDataError(f"is Decimal({str(value)!r}) (not finite)")
    raise CallDataError(f"is a {kind.__name__}")


def _dict_to_json(value: dict[Any, Any]) -> dict[str, Any]:
    converted: dict[str, Any] | None = None
    for key, item in value.items():
        if type(key) is not str:
            raise CallDataError(f"is a dict with the key {key!r}; keys must be str")
        if type(item) is str:  # most values (all of a webhook's params): nothing to do
            if converted is not None:
                converted[key] = item
            continue
        try:
            new = to_json(item)
        except CallDataError as error:
            raise error.within(key) from None
        if new is not item and converted is None:
            converted = {}
            for earlier, kept in value.items():
                if earlier == key:
                    break
                converted[earlier] = kept
        if converted is not None:
            converted[key] = new
    result = value if converted is None else converted
    if len(result) == 1 and next(iter(result)).startswith("$"):
        return {"$dict": result}  # never mistaken for a tag when read back
    return result


def from_json(value: Any) -> Any:
    """The inverse of :func:`to_json` on parsed JSON."""
    if type(value) is list:
        return [from_json(item) for item in value]
    if type(value) is not dict:
        return value
    if len(value) == 1:
        tag, inner = next(iter(value.items()))
        if tag == "$date":
            return date.fromisoformat(inner)
        if tag == "$datetime":
            return datetime.fromisoformat(inner)
        if tag == "$decimal":
            return Decimal(inner)
        if tag == "$int":
            return int(inner)
        if tag == "$dict":
            return {key: from_json(item) for key, item in inner.items()}
    return {key: from_json(item) for key, item in value.items()}


def encode_json(value: dict[str, Any] | list[Any]) -> str:
    """Compact JSON of call data, counters, stacks and webhook params: the one encoder.

    Raises :class:`CallDataError` for a value outside the documented types."""
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    if type(value) is dict and _STR_ONLY >= set(map(type, value.values())):
        # A webhook's params: strings only, checked in C; the walk below costs 3x more.
        if len(value) > 1 or not next(iter(value)).startswith("$"):
            try:
                return orjson.dumps(value).decode()
            except TypeError:  # a key that is not a str: the walk below names it
                pass
    return orjson.dumps(to_json(value)).decode()


def decode_json(text: str | bytes) -> Any:
    """Parse what :func:`encode_json` wrote; raises ``orjson.JSONDecodeError`` (a ValueError)."""
    parsed = orjson.loads(text)
    # A tag starts with '"$'; without one in the text there is nothing to convert.
    marker = b'"$' if isinstance(text, bytes) else '"$'
    return from_json(parsed) if marker in text else parsed  # type: ignore[operator]


def check_json(value: Any) -> None:
    """Raise :class:`CallDataError` if ``value`` holds anything :func:`encode_json` refuses."""
    to_json(value)


JSON_FIELDS = ("data", "counters", "stack")
"""The record's JSON columns, in the order :func:`call_row` takes them already encoded."""
CALL_JSON = [CALL_COLUMNS.index(name) for name in JSON_FIELDS]
CALL_TIMES = [i for i, c in enumerate(calls.columns) if isinstance(c.type, DateTime)]
EVENT_JSON = EVENT_COLUMNS.index("params")
EVENT_TIME = EVENT_COLUMNS.index("at")
call_fields = operator.attrgetter(*CALL_COLUMNS)
event_fields = operator.attrgetter(*EVENT_COLUMNS)


def _same(value: Any) -> Any:
    return value


def call_row(
    record: CallRecord,
    format_time: Callable[[datetime | None], Any] = _same,
    *,
    encoded: Sequence[str] | None = None,
) -> tuple[Any, ...]:
    """The calls row in ``CALL_COLUMNS`` order, JSON encoded, times through ``format_time``.

    ``encoded``: the ``JSON_FIELDS`` as ``CallSession.save`` already encoded them, so a
    webhook's data is walked once, not once to check it and again to write it."""
    values = list(call_fields(record))
    if encoded is None:
        encoded = [encode_json(values[i]) for i in CALL_JSON]
    for i, text in zip(CALL_JSON, encoded, strict=True):
        values[i] = text
    if format_time is not _same:
        for i in CALL_TIMES:
            values[i] = format_time(values[i])
    return tuple(values)


def event_row(
    item: CallEvent, format_time: Callable[[datetime | None], Any] = _same
) -> tuple[Any, ...]:
    """The events row in ``EVENT_COLUMNS`` order (no id)."""
    values = list(event_fields(item))
    values[EVENT_JSON] = encode_json(values[EVENT_JSON])
    values[EVENT_TIME] = format_time(values[EVENT_TIME])
    return tuple(values)


def record_from_values(values: Sequence[Any]) -> CallRecord:
    """A CallRecord from a calls row in ``CALL_COLUMNS`` order, from any driver.

    Times may come as datetimes (PostgreSQL, SQLAlchemy) or as ISO text (raw sqlite3).
    Raises :class:`StoredRowError` naming the call and column it cannot read."""
    row = list(values)
    for i in CALL_JSON:
        try:
            row[i] = decode_json(row[i])
        except (ValueError, TypeError) as error:
            raise StoredRowError(
                f"call {row[0]}: stored column {calls.name}.{CALL_COLUMNS[i]} cannot be read "
                f"({error}); it was written by another version or by hand. Fix the value "
                f"(it must be JSON ivrkit wrote) or end the call: "
                f"DELETE FROM {calls.name} WHERE call_sid = '{row[0]}'"
            ) from None
    for i in CALL_TIMES:
        if type(row[i]) is str:
            row[i] = datetime.fromisoformat(row[i])
    return CallRecord(**dict(zip(CALL_COLUMNS, row, strict=True)))


def record_from_mapping(row: Any) -> CallRecord:
    """A CallRecord from a mapping of column names (an asyncpg Record, a dict)."""
    return record_from_values([row[name] for name in CALL_COLUMNS])


def record_from_row(row: Any) -> CallRecord:
    """A CallRecord from a SQLAlchemy row of the calls table."""
    return record_from_mapping(row._mapping)


def event_from_mapping(row: Any) -> CallEvent:
    """A CallEvent from a mapping of the events columns (the id and extras ignored)."""
    values = {name: row[name] for name in EVENT_COLUMNS}
    values["params"] = decode_json(values["params"])
    return CallEvent(**values)
