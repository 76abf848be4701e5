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


@dataclass(frozen=True)
class SourceIndex:
    """One module's calls and classes by line, from a single parse."""

    calls: dict[tuple[str, int], ast.Call]
    """(callee name, line) -> the outermost call of that name spanning the line."""
    classes: dict[str, int]
    """Class qualified name -> the line of its ``class`` statement (or first decorator)."""


def _callee(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


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
            elif not isinstance(child, ast.expr):
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
    calls: dict[tuple[str, int], ast.Call] = {}
    # ast.walk goes breadth first, so an outer call claims its lines before the calls in it.
    for expr in ast.walk(tree):
        if isinstance(expr, ast.Call) and (name := _callee(expr)) is not None:
            for line in range(expr.lineno, (expr.end_lineno or expr.lineno) + 1):
                calls.setdefault((name, line), expr)
    return SourceIndex(calls, _classes(tree))


def source_index(file: str) -> SourceIndex | None:
    try:
        status = os.stat(file)
    except OSError:
        return None
    return _index(file, (status.st_mtime_ns, status.st_size))


def declaration(node: n.Node) -> ast.Call | None:
    """The ``Menu(...)`` call expression that declared a node, read from its source file."""
    file, line = node.defined_at
    index = source_index(file)
    return None if index is None else index.calls.get((type(node).__name__, line))


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
    return (file, line) if line is not None else ("<unknown>", 0)


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
