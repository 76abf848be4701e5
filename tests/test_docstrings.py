"""What an IDE shows for Flow and each state kind: what it does, outcomes, defaults, an example."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

import ivrkit

KINDS = ["Flow", "Say", "Play", "Pause", "Menu", "Collect", "Dial", "Record", "Enqueue",
         "SubFlow", "Return", "Reject", "Redirect", "Hangup", "Retries", "BusinessHours",
         "decision"]  # fmt: skip


@pytest.mark.parametrize("name", KINDS)
def test_docstring_has_an_example_that_is_python(name):
    doc = inspect.getdoc(getattr(ivrkit, name)) or ""
    example = [line for line in doc.splitlines() if line.startswith("    ")]
    assert len(example) >= 1, f"{name}: no indented example in its docstring"
    ast.parse(textwrap.dedent("\n".join(example)))  # raises if the example is not Python


@pytest.mark.parametrize("name", ["Say", "Menu", "Collect", "Dial", "Record", "Enqueue"])
def test_docstring_names_outcomes_and_defaults(name):
    doc = (inspect.getdoc(getattr(ivrkit, name)) or "").lower()
    assert "outcome" in doc
    assert "default" in doc
