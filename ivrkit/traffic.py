"""A flow's diagram with its traffic drawn on it: how many calls took each arrow, where
callers hung up.

The diagram is the one ``ivrkit graph`` draws (:func:`ivrkit.graph.build_graph`); the
traffic is a :class:`ivrkit.stats.Funnel`. Each transition the funnel counted is put on
the arrow it belongs to (by its source, destination and the key, word or outcome that
fired it); arrows get thicker with their share of the traffic and say how often they
were taken, states are shaded by their drop-off rate and say how many calls reached
them and hung up there (a tooltip in SVG). The console renders the same picture with
:func:`traffic_svg`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ivrkit.flow import Flow
from ivrkit.graph import (
    _DOT_EDGE_STYLE,
    _DOT_SHAPES,
    _MERMAID_SHAPES,
    GIVE_UP,
    GLOBAL,
    RETRY,
    Graph,
    GraphEdge,
    _dot_text,
    _mermaid_text,
    _outcome_label,
    _safe_id,
    build_graph,
    render_image,
    shorten,
)
from ivrkit.stats.model import Funnel, StateStats

RETRY_TRIGGERS = frozenset({"no_input", "no_match", "reenter"})
MAX_PEN = 8.0


@dataclass
class TrafficGraph:
    """The diagram, the count on each of its arrows, and each state's funnel figures."""

    graph: Graph
    counts: dict[int, int] = field(default_factory=dict)
    """Index in ``graph.edges`` -> transitions taken along it."""
    states: dict[str, StateStats] = field(default_factory=dict)
    """Node id -> the state's figures."""
    calls: int = 0
    unmatched: int = 0
    """Transitions of the log that no arrow of today's flow matches (a removed state)."""

    @property
    def busiest(self) -> int:
        return max(self.counts.values(), default=0)


def traffic_graph(flows: list[type[Flow]], funnel: Funnel) -> TrafficGraph:
    """The diagram of ``flows`` with ``funnel``'s counts placed on it."""
    graph = build_graph(flows)
    prefix = len(flows) > 1
    names = {flow.name for flow in flows}

    def node_id(flow: str, state: str) -> str:
        return f"{flow}.{state}" if prefix else state

    drawn = TrafficGraph(graph=graph, calls=funnel.calls)
    for stats in funnel.states:
        if stats.flow in names:
            key = node_id(stats.flow, stats.state)
            if key in graph.nodes:
                drawn.states[key] = stats
    for transition in funnel.transitions:
        if transition.flow not in names:
            continue
        dest = transition.dest
        if transition.trigger == "enter" and ":" in dest:
            other, _, state = dest.partition(":")
            dest_id = node_id(other, state) if other in names else f"flow:{other}"
        else:
            dest_id = node_id(transition.flow, dest)
        index = _edge_for(
            graph.edges, node_id(transition.flow, transition.source), dest_id, transition.trigger
        )
        if index is None:
            drawn.unmatched += transition.count
        else:
            drawn.counts[index] = drawn.counts.get(index, 0) + transition.count
    return drawn


def _edge_for(edges: list[GraphEdge], source: str, dest: str, trigger: str) -> int | None:
    """The arrow a transition was taken along: same ends, and the same key, word or kind."""
    candidates = [i for i, e in enumerate(edges) if e.source == source and e.dest == dest]
    if not candidates:
        return None
    if trigger in RETRY_TRIGGERS:
        wanted = [i for i in candidates if edges[i].kind == RETRY]
    elif trigger == "give_up":
        wanted = [i for i in candidates if edges[i].kind == GIVE_UP]
    elif trigger == "repeat":
        wanted = [i for i in candidates if edges[i].kind != RETRY]
    else:
        label, _ = _outcome_label(trigger)
        wanted = [i for i in candidates if label in edges[i].label.split(" / ")]
        wanted += [i for i in candidates if edges[i].kind == GLOBAL and edges[i].label == label]
    return (wanted or candidates)[0]


def _shade(rate: float) -> str:
    """White for no drop-off to a strong red for all: the fill of a state."""
    level = max(0.0, min(1.0, rate))
    green_blue = round(255 - 190 * level)
    return f"#ff{green_blue:02x}{green_blue:02x}"


def _state_text(stats: StateStats | None) -> str:
    if stats is None:
        return "no calls"
    text = f"{stats.reached} reached"
    if stats.dropped:
        text += f", {stats.dropped} hung up ({stats.drop_off_rate:.0%})"
    return text


def _pen(count: int, busiest: int) -> float:
    return 1.0 + (MAX_PEN - 1.0) * (count / busiest) if busiest else 1.0


def to_traffic_dot(drawn: TrafficGraph, *, name: str = "flow") -> str:
    """DOT with counts in the labels and tooltips (SVG ``<title>``s), pens by traffic."""
    lines = [
        f'digraph "{_dot_text(name)}" {{',
        '    node [shape=box fontname="Helvetica" fontsize=10 style=filled fillcolor="#ffffff"];',
        '    edge [fontname="Helvetica" fontsize=9];',
        f'    label="{_dot_text(f"{name}: {drawn.calls} call(s)")}"; labelloc=t;',
    ]
    for node in drawn.graph.nodes.values():
        stats = drawn.states.get(node.id)
        summary = _state_text(stats)
        fill = _shade(stats.drop_off_rate if stats else 0.0)
        tooltip = f"{node.name}: {summary}"
        if stats and stats.median_seconds is not None:
            tooltip += f"; median {stats.median_seconds:g} s, p90 {stats.p90_seconds:g} s"
        lines.append(
            f'    "{_dot_text(node.id)}" [label="{_dot_text(node.label + chr(10) + summary)}" '
            f'shape={_DOT_SHAPES.get(node.kind, "box")} fillcolor="{fill}" '
            f'tooltip="{_dot_text(tooltip)}"];'
        )
    busiest = drawn.busiest
    for index, edge in enumerate(drawn.graph.edges):
        count = drawn.counts.get(index, 0)
        base = shorten(("global " if edge.kind == GLOBAL else "") + edge.label, 40)
        label = f"{base} ({count})" if base else f"{count}"
        tooltip = f"{edge.source} -> {edge.dest}: {count} time(s)"
        attrs = [
            f'label="{_dot_text(label)}"',
            f'tooltip="{_dot_text(tooltip)}"',
            f"penwidth={_pen(count, busiest):.2f}",
        ]
        style = _DOT_EDGE_STYLE.get(edge.kind, "")
        if count == 0:
            style = 'style=dotted color="#bbbbbb"'
        if style:
            attrs.append(style)
        lines.append(
            f'    "{_dot_text(edge.source)}" -> "{_dot_text(edge.dest)}" [{" ".join(attrs)}];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_traffic_mermaid(drawn: TrafficGraph) -> str:
    """A Mermaid flowchart with counts in the labels, link widths and drop-off fills."""
    lines = ["flowchart TD"]
    styles = []
    for node in drawn.graph.nodes.values():
        stats = drawn.states.get(node.id)
        text = _mermaid_text(f"{node.label}\n{_state_text(stats)}")
        shape = _MERMAID_SHAPES.get(node.kind, '["%s"]')
        lines.append(f"    {_safe_id(node.id)}{shape % text}")
        if stats and stats.dropped:
            styles.append(f"    style {_safe_id(node.id)} fill:{_shade(stats.drop_off_rate)}")
    busiest = drawn.busiest
    for index, edge in enumerate(drawn.graph.edges):
        count = drawn.counts.get(index, 0)
        base = shorten(("global " if edge.kind == GLOBAL else "") + edge.label, 40)
        label = _mermaid_text(f"{base} ({count})" if base else f"{count}")
        arrow = "-.->" if edge.kind in (RETRY, GIVE_UP) else "-->"
        lines.append(f'    {_safe_id(edge.source)} {arrow}|"{label}"| {_safe_id(edge.dest)}')
        styles.append(f"    linkStyle {index} stroke-width:{_pen(count, busiest):.1f}px")
    return "\n".join(lines + styles) + "\n"


def render_traffic(drawn: TrafficGraph, fmt: str, *, name: str = "flow") -> bytes:
    if fmt == "mermaid":
        return to_traffic_mermaid(drawn).encode()
    if fmt == "dot":
        return to_traffic_dot(drawn, name=name).encode()
    if fmt in ("svg", "png"):
        return render_image(to_traffic_dot(drawn, name=name), fmt)
    raise ValueError(f"unknown graph format {fmt!r}: use svg, png, dot or mermaid")


def traffic_svg(flow: type[Flow], funnel: Funnel) -> bytes:
    """The traffic map of one flow as SVG (needs Graphviz's ``dot``): the console's picture."""
    return render_traffic(traffic_graph([flow], funnel), "svg", name=flow.name)


def traffic_dot(flow: type[Flow], funnel: Funnel) -> str:
    """The same picture as DOT source (no Graphviz needed to produce it)."""
    return to_traffic_dot(traffic_graph([flow], funnel), name=flow.name)
