"""Checks of the arguments a state kind is given, reported when the Flow class is defined.

A node cannot raise a useful error from its constructor: it does not know its state's name
yet (Python tells it in ``__set_name__``) nor its flow's. So each constructor records what is
wrong as :class:`ArgumentProblem` values and keeps safe stand-ins; the Flow class turns them
into located errors (file:line, flow, state, argument, what was given, what is expected) the
moment it is created, before anything else reads the node.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KEY_PATTERN = re.compile(r"[0-9*#]+")
ONE_KEY = re.compile(r"[0-9*#]")
_REPR_LIMIT = 40


@dataclass(frozen=True)
class ArgumentProblem:
    """One argument that cannot work: which one, what it was, what it should be."""

    argument: str
    problem: str
    expected: str

    def text(self) -> str:
        return f"{self.argument}: {self.problem}; {self.expected}"

    def inside(self, owner: str) -> ArgumentProblem:
        """The same problem seen from the argument that holds it (``retries.no_input``)."""
        return ArgumentProblem(f"{owner}.{self.argument}", self.problem, self.expected)


Problems = list[ArgumentProblem]


def given(value: Any) -> str:
    """``1 is an int``, ``"7" is a str``: what the author wrote, shortened, and its type."""
    shown = repr(value)
    if isinstance(value, str):
        shown = '"' + value.replace('"', '\\"') + '"'
    if len(shown) > _REPR_LIMIT:
        shown = shown[: _REPR_LIMIT - 3] + "..."
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    return f"{shown} is {article} {kind}"


def whole_number(argument: str, value: Any, low: int, high: int | None, meaning: str) -> Problems:
    """An int in ``low..high`` (``high`` None: no upper bound); bools are not numbers here."""
    limit = f"{low} or more" if high is None else f"{low}-{high}"
    if isinstance(value, bool) or not isinstance(value, int):
        return [ArgumentProblem(argument, given(value), f"expected an int ({limit}): {meaning}")]
    if value < low or (high is not None and value > high):
        return [
            ArgumentProblem(argument, f"{value} is out of range", f"expected {limit}: {meaning}")
        ]
    return []


def flag(argument: str, value: Any) -> Problems:
    if isinstance(value, bool):
        return []
    return [ArgumentProblem(argument, given(value), "expected True or False")]


def optional_text(argument: str, value: Any, example: str) -> Problems:
    """None, or a non-empty str (voices, languages, caller ids, URLs)."""
    if value is None or (isinstance(value, str) and value.strip()):
        return []
    return [ArgumentProblem(argument, given(value), f"expected a non-empty str, e.g. {example}")]


def required_text(argument: str, value: Any, example: str) -> Problems:
    if isinstance(value, str) and value.strip():
        return []
    return [ArgumentProblem(argument, given(value), f"expected a non-empty str, e.g. {example}")]


def name(argument: str, value: Any, example: str) -> Problems:
    """A Python identifier: state names, ``save_as`` keys, flow names."""
    if isinstance(value, str) and value.isidentifier():
        return []
    return [ArgumentProblem(argument, given(value), f"expected a simple name, e.g. {example}")]


def one_of(argument: str, value: Any, allowed: Sequence[str]) -> Problems:
    if isinstance(value, str) and value in allowed:
        return []
    options = ", ".join(f'"{option}"' for option in allowed)
    return [ArgumentProblem(argument, given(value), f"expected one of {options}")]


def is_target(value: Any, *, repeat: bool = False) -> bool:
    """A state name, a node declared inline, or (for keys) REPEAT."""
    from ivrkit import nodes as n  # nodes imports this module: resolve at call time

    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, n.Node) or (repeat and isinstance(value, n.Repeat))


def target(argument: str, value: Any, *, optional: bool, repeat: bool = False) -> Problems:
    if (optional and value is None) or is_target(value, repeat=repeat):
        return []
    also = " or REPEAT" if repeat else ""
    return [
        ArgumentProblem(
            argument,
            given(value),
            f'expected a state name like "voicemail" or a state like Hangup(){also}',
        )
    ]


def key_map(
    argument: str, value: Any, *, optional: bool, example: str = '{"1": "sales"}'
) -> Problems:
    """``{"1": "sales", "*": REPEAT}``: keys are digit strings, values are targets."""
    if value is None and optional:
        return []
    if not isinstance(value, Mapping):
        return [ArgumentProblem(argument, given(value), f"expected a dict like {example}")]
    problems: Problems = []
    for key, where in value.items():
        if not isinstance(key, str):
            problems.append(
                ArgumentProblem(
                    argument,
                    f"key {given(key)}",
                    'keys are the digits as strings, e.g. "1"',
                )
            )
        elif not KEY_PATTERN.fullmatch(key):
            problems.append(
                ArgumentProblem(
                    argument,
                    f'key "{key}" is not made of 0-9, * and #',
                    'keys are what the caller presses, e.g. "1", "0", "*" or "12"',
                )
            )
        problems += target(f"{argument}[{key!r}]", where, optional=False, repeat=True)
    return problems


def word_map(argument: str, value: Any) -> Problems:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [ArgumentProblem(argument, given(value), 'expected a dict like {"sales": "sales"}')]
    problems: Problems = []
    for word, where in value.items():
        if not isinstance(word, str) or not word.strip():
            problems.append(
                ArgumentProblem(argument, f"word {given(word)}", 'words are str, e.g. "sales"')
            )
        problems += target(f"{argument}[{word!r}]", where, optional=False, repeat=True)
    return problems


def outcome_map(argument: str, kind: str, what: str, value: Any, known: Sequence[str]) -> Problems:
    """``on={"busy": "voicemail", "*": ...}`` for Dial and Enqueue."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [ArgumentProblem(argument, given(value), 'expected a dict like {"*": "voicemail"}')]
    problems: Problems = []
    for outcome, where in value.items():
        if outcome != "*" and outcome not in known:
            shown = f'"{outcome}"' if isinstance(outcome, str) else given(outcome)
            problems.append(
                ArgumentProblem(
                    argument,
                    f"{kind} outcome {shown} is not {what}",
                    f"use {', '.join(known)} or '*'",
                )
            )
        problems += target(f"{argument}[{outcome!r}]", where, optional=False)
    return problems


def strings(argument: str, value: Any, example: str) -> Problems:
    """An iterable of str that is not itself a str (hints)."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        return [ArgumentProblem(argument, given(value), f"expected a list of str, e.g. {example}")]
    wrong = [item for item in value if not isinstance(item, str)]
    if wrong:
        return [
            ArgumentProblem(
                argument, f"item {given(wrong[0])}", f"expected a list of str, e.g. {example}"
            )
        ]
    return []


def function(argument: str, value: Any, signature: str) -> Problems:
    if value is None or callable(value):
        return []
    return [ArgumentProblem(argument, given(value), f"expected a function {signature}")]


def pattern(argument: str, value: Any) -> Problems:
    if value is None:
        return []
    if not isinstance(value, str):
        return [
            ArgumentProblem(argument, given(value), r'expected a regular expression, e.g. r"\d{4}"')
        ]
    try:
        re.compile(value)
    except re.error as error:
        return [ArgumentProblem(argument, f'"{value}" is not a regular expression ({error})',
                                r'expected e.g. r"\d{4}"')]  # fmt: skip
    return []


def digit_range(argument: str, value: Any) -> Problems:
    """``digits=8`` or ``digits=(4, 8)``: how many keys an entry has."""
    expected = "expected an int (1-30) or a range like (4, 8)"
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        return (
            []
            if 1 <= value <= 30
            else [ArgumentProblem(argument, f"{value} is out of range", expected)]
        )
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        low, high = value
        if 1 <= low <= high <= 30:
            return []
        return [
            ArgumentProblem(argument, f"{tuple(value)} is not a range from low to high", expected)
        ]
    return [ArgumentProblem(argument, given(value), expected)]


def one_key(argument: str, value: Any, *, allow_none: bool) -> Problems:
    """A single key (0-9, * or #), or "" for none where that makes sense."""
    if isinstance(value, str) and (ONE_KEY.fullmatch(value) or (allow_none and value == "")):
        return []
    also = ' or "" for none' if allow_none else ""
    return [ArgumentProblem(argument, given(value), f"expected one key: 0-9, * or #{also}")]


def text_source(argument: str, value: Any) -> Problems:
    """What Say speaks: a non-empty str, or a function ``(call) -> str``."""
    if callable(value) or (isinstance(value, str) and value.strip()):
        return []
    return [
        ArgumentProblem(
            argument,
            given(value),
            'expected the text to speak, e.g. "Hello.", or a function (call) -> str',
        )
    ]


def nested(owner: str, value: Any) -> Problems:
    """Problems a value (a Retries, a prompt part) recorded itself, seen from its owner."""
    found: Iterable[ArgumentProblem] = getattr(value, "argument_problems", ())
    return [problem.inside(owner) for problem in found]


def first_of(*checks: Callable[[], Problems]) -> Problems:
    """Run checks in order and stop at the first that finds something (dependent checks)."""
    for check in checks:
        problems = check()
        if problems:
            return problems
    return []
