"""The line a frame is at, in constant time even in a class body of thousands of lines.

``frame.f_lineno`` decodes the code object's line table from its start on every call
(CPython 3.11), so recording where each of 10,000 states was declared took time quadratic
in the class's size. Here a code object's table is decoded once into sorted offsets and
looked up by bisection. The cache is keyed by identity (hashing a code object reads all
of it) and holds the few code objects that declare states right now.
"""

from __future__ import annotations

import bisect
from types import CodeType, FrameType

from ivrkit.memo import BoundedMemo

CACHED_CODE_OBJECTS = 8

_tables: BoundedMemo[int, tuple[CodeType, list[int], list[int | None]]] = BoundedMemo(
    CACHED_CODE_OBJECTS
)


def _table(code: CodeType) -> tuple[list[int], list[int | None]]:
    cached = _tables.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1], cached[2]
    starts: list[int] = []
    lines: list[int | None] = []
    for start, _end, line in code.co_lines():
        starts.append(start)
        lines.append(line)
    _tables.keep(id(code), (code, starts, lines))
    return starts, lines


def line_of(frame: FrameType) -> int:
    """``frame.f_lineno``, without decoding the code's whole line table each time."""
    starts, lines = _table(frame.f_code)
    index = bisect.bisect_right(starts, frame.f_lasti) - 1
    line = lines[index] if index >= 0 else None
    return line if line is not None else frame.f_lineno
