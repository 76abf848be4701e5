"""A flow's diagram with its traffic drawn on it, as SVG the console serves itself.

Edges are as thick as the number of calls that took them, states are shaded by their
drop-off rate, and every state and edge has a ``<title>`` (the browser's hover tip) with
its counts. The layout needs nothing installed: states in rows by their distance from the
first state, edges as straight lines (or a loop for a retry). Only presentation
attributes are used, never ``style``, so the console's CSP (no inline style) allows it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from ivrkit.flow import Flow
from ivrkit.graph import build_graph
from ivrkit.stats import Funnel

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 150, 40, 30, 70, 20


@dataclass
class Traffic:
    """Counts for one flow: per state (reached, dropped), per (source, dest) edge calls."""

    states: dict[str, tuple[int, int]] = field(default_factory=dict)
    edges: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def from_funnel(cls, funnel: Funnel, flow: str) -> Traffic:
        """From an ``ivrkit.stats`` funnel: its states and transitions of ``flow``."""
        traffic = cls()
        for stats in funnel.states:
            if stats.flow == flow:
                traffic.states[stats.state] = (stats.reached, stats.dropped)
        for move in funnel.transitions:
            if move.flow == flow:
                key = (move.source, move.dest)
                traffic.edges[key] = traffic.edges.get(key, 0) + move.count
        return traffic


def _shade(rate: float) -> str:
    """White (nobody left here) to red (everybody did)."""
    rate = min(max(rate, 0.0), 1.0)
    green_blue = round(255 - 160 * rate)
    return f"#ff{green_blue:02x}{green_blue:02x}" if rate else "#ffffff"


def _layers(flow: type[Flow], names: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    start = flow.initial_state()
    depth = {start: 0} if start in names else {}
    queue = deque(depth)
    following: dict[str, list[str]] = {}
    for source, dest in edges:
        following.setdefault(source, []).append(dest)
    while queue:
        name = queue.popleft()
        for dest in following.get(name, []):
            if dest not in depth and dest in names:
                depth[dest] = depth[name] + 1
                queue.append(dest)
    deepest = max(depth.values(), default=-1)
    for name in names:  # unreachable from the start (sub-flow entries): a last row
        depth.setdefault(name, deepest + 1)
    return depth


def traffic_svg(flow: type[Flow], traffic: Traffic) -> str:
    """The SVG document of ``flow`` with ``traffic``."""
    graph = build_graph([flow])
    names = list(graph.nodes)
    pairs: dict[tuple[str, str], list[str]] = {}
    for edge in graph.edges:
        pairs.setdefault((edge.source, edge.dest), []).append(edge.label or "next")
    depth = _layers(flow, names, list(pairs))
    rows: dict[int, list[str]] = {}
    for name in names:
        rows.setdefault(depth[name], []).append(name)
    widest = max((len(r) for r in rows.values()), default=1)
    width = MARGIN * 2 + widest * NODE_W + (widest - 1) * GAP_X
    height = MARGIN * 2 + len(rows) * NODE_H + (len(rows) - 1) * GAP_Y
    where: dict[str, tuple[float, float]] = {}
    for level, row in rows.items():
        span = len(row) * NODE_W + (len(row) - 1) * GAP_X
        left = (width - span) / 2
        for index, name in enumerate(row):
            where[name] = (left + index * (NODE_W + GAP_X), MARGIN + level * (NODE_H + GAP_Y))
    busiest = max(traffic.edges.values(), default=0) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" '
        f'aria-label={quoteattr(f"Traffic map of {flow.name}")} class="traffic">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#555"/></marker></defs>',
    ]
    for (source, dest), labels in pairs.items():
        calls = traffic.edges.get((source, dest), 0)
        stroke = 1 + 7 * math.sqrt(calls / busiest) if calls else 1
        tip = escape(f"{source} -> {dest} ({', '.join(labels)}): {calls} call(s)")
        x1, y1 = where[source]
        x2, y2 = where[dest]
        colour = "#1f5fa8" if calls else "#bbbbbb"
        if source == dest:
            cx, cy = x1 + NODE_W, y1 + NODE_H / 2
            path = (f"M {cx:.0f} {cy - 8:.0f} C {cx + 40:.0f} {cy - 30:.0f} {cx + 40:.0f} "
                    f"{cy + 30:.0f} {cx:.0f} {cy + 8:.0f}")
        else:
            sx, sy = x1 + NODE_W / 2, y1 + (NODE_H if y2 > y1 else 0)
            tx, ty = x2 + NODE_W / 2, y2 + (0 if y2 > y1 else NODE_H)
            if y1 == y2:
                sy = ty = y1 + NODE_H / 2
                sx, tx = (x1 + NODE_W, x2) if x2 > x1 else (x1, x2 + NODE_W)
            path = f"M {sx:.0f} {sy:.0f} L {tx:.0f} {ty:.0f}"
        out.append(
            f'<g class="edge" data-source={quoteattr(source)} data-dest={quoteattr(dest)} '
            f'data-calls="{calls}"><title>{tip}</title>'
            f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="{stroke:.1f}" '
            f'marker-end="url(#arrow)"/></g>'
        )
    for name in names:
        x, y = where[name]
        reached, dropped = traffic.states.get(name, (0, 0))
        rate = dropped / reached if reached else 0.0
        node = graph.nodes[name]
        tip = escape(f"{name} ({node.kind}): reached by {reached} call(s), {dropped} hung up "
                     f"here ({rate:.0%})")
        out.append(
            f'<g class="state" data-state={quoteattr(name)} data-reached="{reached}" '
            f'data-dropped="{dropped}" tabindex="0"><title>{tip}</title>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6" '
            f'fill="{_shade(rate)}" stroke="#333"/>'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + 17:.0f}" text-anchor="middle" '
            f'font-family="sans-serif" font-size="12">{escape(name[:22])}</text>'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + 32:.0f}" text-anchor="middle" '
            f'font-family="sans-serif" font-size="10" fill="#444">{reached} in / '
            f"{dropped} left</text></g>"
        )
    out.append("</svg>")
    return "\n".join(out)


def traffic_dot(flow: type[Flow], traffic: Traffic) -> str:
    """The same picture as DOT for Graphviz: pen widths by calls, fills by drop-off,
    tooltips with the counts (Graphviz writes them as the SVG's hover titles)."""
    graph = build_graph([flow])
    busiest = max(traffic.edges.values(), default=0) or 1
    lines = [
        f'digraph "{_dot(flow.name)}" {{',
        '    node [shape=box style="rounded,filled" fontname="Helvetica" fontsize=10];',
        '    edge [fontname="Helvetica" fontsize=9 arrowsize=0.6];',
    ]
    for name, node in graph.nodes.items():
        reached, dropped = traffic.states.get(name, (0, 0))
        rate = dropped / reached if reached else 0.0
        tip = (f"{name} ({node.kind}): reached by {reached} call(s), {dropped} hung up here "
               f"({rate:.0%})")
        lines.append(
            f'    "{_dot(name)}" [label="{_dot(name)}\\n{reached} in / {dropped} left" '
            f'fillcolor="{_shade(rate)}" tooltip="{_dot(tip)}" id="state-{_dot(name)}" '
            'class="state"];'
        )
    seen: set[tuple[str, str]] = set()
    for edge in graph.edges:
        key = (edge.source, edge.dest)
        if key in seen:
            continue
        seen.add(key)
        calls = traffic.edges.get(key, 0)
        width = 1 + 7 * math.sqrt(calls / busiest) if calls else 1
        colour = "#1f5fa8" if calls else "#bbbbbb"
        tip = f"{edge.source} -> {edge.dest}: {calls} call(s)"
        lines.append(
            f'    "{_dot(edge.source)}" -> "{_dot(edge.dest)}" [penwidth={width:.1f} '
            f"arrowsize={0.8 / math.sqrt(width):.2f} "  # Graphviz scales heads by pen width'
            f'color="{colour}" label="{calls or ""}" tooltip="{_dot(tip)}" class="edge"];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def graphviz_svg(dot_source: str, flow: str) -> str:
    """``dot -Tsvg`` of ``dot_source`` as an element to put in a page: no XML prologue,
    the console's class and an accessible name on the root. Raises ``GraphvizMissing``."""
    from ivrkit.graph import render_image

    svg = render_image(dot_source, "svg").decode("utf-8")
    svg = svg[svg.index("<svg"):]
    return svg.replace(
        "<svg", f'<svg class="traffic" role="img" aria-label={quoteattr(f"Traffic map of {flow}")}',
        1,
    )


def render_traffic(flow: type[Flow], traffic: Traffic, *, graphviz: bool | None = None) -> str:
    """SVG by Graphviz when ``dot`` is installed (or ``graphviz=True``), else our layout."""
    import shutil

    if graphviz is None:
        graphviz = shutil.which("dot") is not None
    if graphviz:
        return graphviz_svg(traffic_dot(flow, traffic), flow.name)
    return traffic_svg(flow, traffic)
