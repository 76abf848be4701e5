"""The traffic map: the funnel's counts on the flow's own diagram (DOT, Mermaid, SVG)."""

from __future__ import annotations

import asyncio
import shutil
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from flows.support_line import SupportLine
from ivrkit.cli import main
from ivrkit.stats import funnel
from ivrkit.traffic import to_traffic_dot, to_traffic_mermaid, traffic_graph, traffic_svg
from tests.test_stats import set_schedule, walk_six_calls


def edge_count(drawn: Any, source: str, dest: str, label: str) -> int:
    for index, edge in enumerate(drawn.graph.edges):
        if (edge.source, edge.dest, edge.label) == (source, dest, label):
            return int(drawn.counts.get(index, 0))
    raise AssertionError(f"no arrow {source} -[{label}]-> {dest}")


async def walked_funnel(serve: Any) -> Any:
    async with serve([SupportLine]) as (app, client):
        await set_schedule(app.state.ivr.store, await walk_six_calls(client))
        return await funnel(app.state.ivr.store, flow="support_line")


async def test_counts_land_on_their_arrows(serve: Any) -> None:
    drawn = traffic_graph([SupportLine], await walked_funnel(serve))
    assert drawn.calls == 6
    assert drawn.unmatched == 0
    assert edge_count(drawn, "welcome", "main_menu", "") == 6
    assert edge_count(drawn, "main_menu", "sales", "1") == 3
    assert edge_count(drawn, "main_menu", "sales", "'sales'") == 0
    assert edge_count(drawn, "main_menu", "support_hours", "2") == 1
    assert edge_count(drawn, "main_menu", "main_menu", "no-input / no-match") == 2
    assert edge_count(drawn, "sales", "voicemail", "busy / no-answer / failed") == 1
    assert edge_count(drawn, "voicemail", "no_message", "no recording") == 1
    assert drawn.states["main_menu"].dropped == 1

    dot = to_traffic_dot(drawn, name="support_line")
    assert '...\\n6 reached, 1 hung up (17%)" shape=hexagon' in dot  # main_menu
    assert 'fillcolor="#ffdfdf"' in dot  # main_menu, shaded by its 1/6 drop-off
    busiest = '[label="6" tooltip="welcome -> main_menu: 6 time(s)" penwidth=8.00];'
    assert f'"welcome" -> "main_menu" {busiest}' in dot
    mermaid = to_traffic_mermaid(drawn)
    assert 'welcome -->|"6"| main_menu' in mermaid
    assert "style main_menu fill:#ffdfdf" in mermaid


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot for SVG")
async def test_svg_has_counts_and_tooltips(serve: Any) -> None:
    svg = traffic_svg(SupportLine, await walked_funnel(serve))
    root = ET.fromstring(svg)
    titles = [
        el.get("{http://www.w3.org/1999/xlink}title")
        for el in root.iter()
        if el.get("{http://www.w3.org/1999/xlink}title")
    ]
    assert "main_menu: 6 reached, 1 hung up (17%); median 3 s, p90 7 s" in titles
    assert "main_menu -> sales: 3 time(s)" in titles
    texts = {el.text for el in root.iter("{http://www.w3.org/2000/svg}text")}
    assert "6 reached, 1 hung up (17%)" in texts


def test_graph_traffic_command(serve: Any, database_url: str, capsys: Any) -> None:
    async def prepare() -> None:
        async with serve([SupportLine]) as (app, client):
            await set_schedule(app.state.ivr.store, await walk_six_calls(client))

    asyncio.run(prepare())
    args = ["graph", "flows/support_line.py", "--traffic", "--database-url", database_url]
    assert main([*args, "--format", "mermaid"]) == 0
    out = capsys.readouterr().out
    assert 'main_menu -->|"1 (3)"| sales' in out
    assert main([*args, "--format", "dot", "--since", "2030-01-01"]) == 0
    assert "support_line: 0 call(s)" in capsys.readouterr().out


def test_graph_traffic_without_an_event_log_says_so(tmp_path: Any, capsys: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"
    args = ["graph", "flows/support_line.py", "--traffic", "--database-url", url]
    assert main([*args, "--format", "dot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ivrkit graph: cannot read the event log: no such table")
    assert "Traceback" not in err
