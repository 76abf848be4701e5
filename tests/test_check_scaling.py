"""Loading and checking stay linear in a flow's size (the timings: benchmarks/check_scaling.py).

No test here measures time: each pins down the structure that made a step quadratic.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import FrameType

import pytest

from ivrkit import Flow, Hangup, Menu, Say
from ivrkit.lines import line_of
from ivrkit.loader import load_module_flows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from check_scaling import expected, flow_source  # noqa: E402


def test_a_module_of_many_menus_is_walked_once(tmp_path, monkeypatch):
    """IVR008 used to walk the module's whole syntax tree once per Menu."""
    walks = 0
    real_walk = ast.walk

    def counting_walk(node: ast.AST):  # type: ignore[no-untyped-def]
        nonlocal walks
        if isinstance(node, ast.Module):
            walks += 1
        return real_walk(node)

    monkeypatch.setattr(ast, "walk", counting_walk)
    path = tmp_path / "chain_walked.py"
    path.write_text(flow_source(300))
    (flow,) = load_module_flows(path)
    assert sum(isinstance(node, Menu) for node in flow.states().values()) == 297
    assert walks == 1


def test_generated_chain_has_the_expected_findings(tmp_path):
    path = tmp_path / "chain_found.py"
    path.write_text(flow_source(103))
    (flow,) = load_module_flows(path)
    assert {code: sum(f.code == code for f in flow.findings()) for code in expected(103)} == (
        expected(103)
    )
    assert all(f.file.endswith("chain_found.py") and f.line > 0 for f in flow.findings())


def test_a_chain_longer_than_the_recursion_limit_loads():
    """The loop check was recursive, one frame per chained prompt: a guard on its rewrite."""
    states: dict[str, object] = {
        f"say_{i}": Say(f"Part {i}.", then=f"say_{i + 1}") for i in range(1_200)
    }
    states["say_1200"] = Hangup("Bye.")
    long_flow = type("LongAnnouncement", (Flow,), states)
    assert len(long_flow.states()) == 1_201
    assert [f.code for f in long_flow.findings()] == []


def test_line_of_agrees_with_f_lineno_across_a_large_class_body():
    seen: list[tuple[int, int]] = []

    def here(_index: int) -> None:
        frame = sys._getframe(1)  # the class body's frame, as when a state is declared
        seen.append((line_of(frame), frame.f_lineno))

    body = "".join(f"    v{i} = here(\n        {i},\n    )\n" for i in range(500))
    exec(compile("class Big:\n" + body, "<big>", "exec"), {"here": here})
    assert len(seen) == 500
    assert all(fast == slow for fast, slow in seen)
    assert [fast for fast, _ in seen] == [2 + 3 * i for i in range(500)]


@pytest.mark.parametrize("offset", [0, 1])
def test_line_of_a_frame_in_a_small_function(offset):
    def where() -> FrameType:
        return sys._getframe(1)

    frame = where() if offset == 0 else (lambda: where())()
    assert line_of(frame) == frame.f_lineno
