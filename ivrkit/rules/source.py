"""What only a flow's source text shows: duplicate dict keys and the literals a decision returns.

A module is parsed once and its calls indexed by (callee name, line), so finding the
``Menu(...)`` that declared each of a thousand menus costs one parse, not a thousand walks.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivrkit import nodes as n

Duplicate = tuple[str, str]
"""("choice" or "word", the key written twice)."""


@dataclass(frozen=True)
class SourceIndex:
    """What the rules need from one module, from a single parse (the syntax tree is dropped)."""

    duplicates: dict[tuple[str, int], list[Duplicate]]
    """(callee name, line) -> keys written twice in its ``choices=`` / ``words=`` dict, for
    every line the call spans; only calls with duplicates are kept."""
    classes: dict[str, int]
    """Class qualified name -> the line of its ``class`` statement (or first decorator)."""


def _callee(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _written_twice(call: ast.Call) -> list[Duplicate]:
    # A dict literal keeps the last of two equal keys silently; only the source shows both.
    found: list[Duplicate] = []
    for keyword in call.keywords:
        if keyword.arg not in ("choices", "words") or not isinstance(keyword.value, ast.Dict):
            continue
        seen: set[str] = set()
        for key in keyword.value.keys:
            if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
                continue
            value = key.value if keyword.arg == "choices" else key.value.lower().strip()
            if value in seen:
                found.append(("choice" if keyword.arg == "choices" else "word", value))
            seen.add(value)
    return found


def _classes(tree: ast.Module) -> dict[str, int]:
    found: dict[str, int] = {}
    todo: list[tuple[ast.AST, str]] = [(tree, "")]
    while todo:
        parent, prefix = todo.pop()
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, ast.ClassDef):
                qualname = prefix + child.name
                lines = [d.lineno for d in child.decorator_list] + [child.lineno]
                found.setdefault(qualname, min(lines))
                todo.append((child, qualname + "."))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                todo.append((child, f"{prefix}{child.name}.<locals>."))
            elif isinstance(child, ast.stmt):
                todo.append((child, prefix))  # if/try/with blocks keep the same prefix
    return found


@functools.lru_cache(maxsize=64)
def _index(file: str, stamp: tuple[int, int]) -> SourceIndex | None:
    """``file`` parsed once; ``stamp`` (mtime, size) makes an edited file read again."""
    try:
        with open(file, encoding="utf-8") as source:
            tree = ast.parse(source.read())
    except (OSError, SyntaxError, ValueError):
        return None
    duplicates: dict[tuple[str, int], list[Duplicate]] = {}
    claimed: set[tuple[str, int]] = set()
    # ast.walk goes breadth first, so an outer call claims its lines before the calls in it.
    for expr in ast.walk(tree):
        if not isinstance(expr, ast.Call) or (name := _callee(expr)) is None:
            continue
        lines = range(expr.lineno, (expr.end_lineno or expr.lineno) + 1)
        twice = _written_twice(expr) if expr.keywords else []
        for line in lines:
            if (name, line) not in claimed:
                claimed.add((name, line))
                if twice:
                    duplicates[name, line] = twice
    return SourceIndex(duplicates, _classes(tree))


def source_index(file: str) -> SourceIndex | None:
    try:
        status = os.stat(file)
    except OSError:
        return None
    return _index(file, (status.st_mtime_ns, status.st_size))


def written_twice(node: n.Node) -> list[Duplicate]:
    """Keys written twice in the ``choices=`` / ``words=`` dict of the call declaring ``node``."""
    file, line = node.defined_at
    index = source_index(file)
    return [] if index is None else index.duplicates.get((type(node).__name__, line), [])


def class_site(cls: type) -> tuple[str, int]:
    """(file, line) of a class statement, ``("<unknown>", 0)`` when its source is not found.

    ``inspect.getsourcelines`` would do, but it tokenizes the whole class body (seconds for
    a flow of 10,000 states); this reuses the one parse of the module the rules need anyway.
    """
    try:
        file = inspect.getsourcefile(cls)
    except (OSError, TypeError):  # built-in, or defined where no source file exists (-c, REPL)
        file = None
    if file is None:
        return "<unknown>", 0
    index = source_index(file)
    line = index.classes.get(cls.__qualname__) if index is not None else None
    if line is None:  # source only in linecache (a notebook cell, exec'd code): ask inspect
        try:
            line = inspect.getsourcelines(cls)[1]
        except (OSError, TypeError):
            return "<unknown>", 0
    return file, line


def returned_literals(function: Callable[..., Any]) -> tuple[tuple[str, ...], bool]:
    """String literals a decision returns, and whether it may return anything else."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return (), True
    found: list[str] = []
    is_open = False

    def literal(expr: ast.expr | None) -> None:
        nonlocal is_open
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            if expr.value not in found:
                found.append(expr.value)
        elif isinstance(expr, ast.IfExp):
            literal(expr.body)
            literal(expr.orelse)
        else:
            is_open = True

    for node in ast.walk(tree):
        if isinstance(node, ast.Return):
            literal(node.value)
    return tuple(found), is_open
