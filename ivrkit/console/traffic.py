"""A flow's traffic map as SVG for the console's pages.

The picture is ``ivrkit.traffic``'s (the one ``ivrkit graph FLOW --traffic`` draws): the
funnel's transitions placed on the flow's arrows, states shaded by drop-off, counts in
tooltips. With Graphviz's ``dot`` installed it is Graphviz's drawing; without it the
console lays the same graph out itself: states in rows by their distance from the first
state, arrows as straight lines (a loop for a retry), as thick as the calls that took them.
Only presentation attributes are used, never ``style``, so the console's CSP (no inline
style) allows either inline in a page.
"""

from __future__ import annotations

import math
import shutil
from collections import deque
from xml.sax.saxutils import escape, quoteattr

from ivrkit.console.calls import scrub
from ivrkit.flow import Flow
from ivrkit.graph import render_image
from ivrkit.stats import Funnel
from ivrkit.traffic import TrafficGraph, _shade, _state_text, traffic_dot, traffic_graph

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 150, 40, 30, 70, 20


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


def layout_svg(flow: type[Flow], drawn: TrafficGraph) -> str:
    """The console's own drawing of ``drawn`` (no Graphviz needed)."""
    graph = drawn.graph
    names = list(graph.nodes)
    pairs: dict[tuple[str, str], list[str]] = {}
    counts: dict[tuple[str, str], int] = {}
    for index, edge in enumerate(graph.edges):
        key = (edge.source, edge.dest)
        pairs.setdefault(key, []).append(edge.label or "next")
        counts[key] = counts.get(key, 0) + drawn.counts.get(index, 0)
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
    busiest = max(counts.values(), default=0) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" '
        f'aria-label={quoteattr(f"Traffic map of {flow.name}")} class="traffic">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#555"/></marker></defs>',
    ]
    for (source, dest), labels in pairs.items():
        calls = counts[(source, dest)]
        stroke = 1 + 7 * math.sqrt(calls / busiest) if calls else 1
        tip = escape(f"{source} -> {dest} ({', '.join(labels)}): {calls} time(s)")
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
        stats = drawn.states.get(name)
        reached, dropped = (stats.reached, stats.dropped) if stats else (0, 0)
        rate = stats.drop_off_rate if stats else 0.0
        node = graph.nodes[name]
        tip = escape(f"{node.name}: {_state_text(stats)}")
        out.append(
            f'<g class="node state" data-state={quoteattr(name)} data-reached="{reached}" '
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



def traffic_map(flow: type[Flow], funnel: Funnel, *, graphviz: bool | None = None) -> str:
    """``flow``'s traffic map as an ``<svg>`` element to put in a page: Graphviz's drawing
    when ``dot`` is installed (or ``graphviz=True``), else the console's own layout."""
    if graphviz is None:
        graphviz = shutil.which("dot") is not None
    if not graphviz:
        return layout_svg(flow, traffic_graph([flow], funnel))
    # The diagram names what a state dials: the console shows no phone number unmasked.
    svg = render_image(scrub(traffic_dot(flow, funnel)), "svg").decode("utf-8")
    svg = svg[svg.index("<svg"):]  # no XML prologue or DOCTYPE inside a page
    label = quoteattr(f"Traffic map of {flow.name}")
    return svg.replace("<svg", f'<svg class="traffic" role="img" aria-label={label}', 1)
