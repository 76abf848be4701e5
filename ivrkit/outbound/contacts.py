"""The contacts file a campaign calls, the do-not-call list it skips, the results it writes.

A contacts file is CSV with a header row: ``number`` (E.164, e.g. +14155550123) is
required, ``time_zone`` (an IANA name such as America/New_York) is optional, and every
other column becomes ``call.data`` for that callee's call. Mistakes are reported all at
once, each with its file and line, before anyone is called.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivrkit.errors import IvrkitError
from ivrkit.masking import mask_number

NUMBER = "number"
TIME_ZONE = "time_zone"
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


class ContactsError(IvrkitError):
    """The contacts or do-not-call file has mistakes; ``problems`` lists each with its line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Contact:
    """One callee: the file's line, the number, its time zone and the flow's data."""

    row: int
    number: str
    time_zone: str
    data: dict[str, Any]


def read_contacts(path: str | Path, *, default_time_zone: str) -> list[Contact]:
    """Every contact of ``path``; raises :class:`ContactsError` naming each bad line.

    A number listed twice is a mistake too: a campaign calls each person once."""
    path = Path(path)
    _zone(default_time_zone, where="the default time zone")
    problems: list[str] = []
    contacts: list[Contact] = []
    first_line: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or NUMBER not in reader.fieldnames:
            raise ContactsError(
                [f"{path}:1: the header row needs a {NUMBER!r} column (E.164, e.g. +14155550123)"]
            )
        for values in reader:
            line = reader.line_num
            number = (values.get(NUMBER) or "").strip()
            zone = (values.get(TIME_ZONE) or "").strip() or default_time_zone
            if not E164.match(number):
                problems.append(
                    f"{path}:{line}: number {mask_number(number)!r} is not E.164 "
                    "(a + then the country code and number, digits only)"
                )
                continue
            if number in first_line:
                problems.append(
                    f"{path}:{line}: number {mask_number(number)} is already on line "
                    f"{first_line[number]}: list each callee once"
                )
                continue
            try:
                _zone(zone, where=f"{path}:{line}: time_zone")
            except ContactsError as error:
                problems.extend(error.problems)
                continue
            first_line[number] = line
            data = {
                key: value
                for key, value in values.items()
                if key not in (NUMBER, TIME_ZONE) and key is not None
            }
            contacts.append(Contact(row=line, number=number, time_zone=zone, data=data))
    if problems:
        raise ContactsError(problems)
    return contacts


def read_do_not_call(path: str | Path) -> frozenset[str]:
    """Numbers never to call: one E.164 number per line (a CSV's first column also
    works); blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    numbers: set[str] = set()
    problems: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for line, values in enumerate(csv.reader(handle), start=1):
            first = values[0].strip() if values else ""
            if not first or first.startswith("#") or first == NUMBER:
                continue
            if not E164.match(first):
                problems.append(f"{path}:{line}: {mask_number(first)!r} is not an E.164 number")
                continue
            numbers.add(first)
    if problems:
        raise ContactsError(problems)
    return frozenset(numbers)


RESULT_COLUMNS = ("row", "number", "outcome", "attempts", "answered_by", "result", "call_sid")


def write_results(
    path: str | Path,
    rows: Iterable[Mapping[str, Any]],
    *,
    clear_numbers: bool = False,
) -> int:
    """Write one line per contact; numbers are masked unless ``clear_numbers``.

    Masked by default: results files get mailed around, and ``row`` (the contact's line
    in the contacts file) already joins a result back to its callee. Returns the count."""
    count = 0
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*RESULT_COLUMNS, "detail"])
        writer.writeheader()
        for row in rows:
            number = str(row["number"])
            writer.writerow(
                {
                    **{key: row.get(key) for key in RESULT_COLUMNS},
                    "number": number if clear_numbers else mask_number(number),
                    "detail": row.get("detail"),
                }
            )
            count += 1
    return count


def _zone(name: str, *, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ContactsError(
            [f"{where}: {name!r} is not a known time zone (use an IANA name like America/New_York)"]
        ) from None
