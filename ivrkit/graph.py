"""`ivrkit graph`: a flow's diagram drawn from its code, as Mermaid, DOT, SVG or PNG.

The graph is a small model (nodes, labelled edges of a few kinds) built from what the
validator already knows about a flow; renderers only format it. Mermaid and DOT are plain
text, so they work everywhere; SVG and PNG need Graphviz's ``dot`` program.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

from ivrkit import nodes as n
from ivrkit.errors import FlowLoadError, IvrkitError
from ivrkit.flow import Flow
from ivrkit.outbound import amd

CHOICE = "choice"
WORD = "word"
OUTCOME = "outcome"
RETRY = "retry"
GIVE_UP = "give-up"
GLOBAL = "global"
SUBFLOW = "subflow"
EDGE_KINDS = (CHOICE, WORD, OUTCOME, RETRY, GIVE_UP, GLOBAL, SUBFLOW)

LABEL_WIDTH = 40
EDGE_LABEL_WIDTH = 48
_ENDS = ("hangup", "return", "reject", "redirect")
_ASKS = ("menu", "collect")


@dataclass(frozen=True)
class GraphNode:
    """A state (or a sub-flow the flow hands calls to) with what the caller hears there."""

    id: str
    name: str
    kind: str
    heard: str = ""

    @property
    def label(self) -> str:
        return f"{self.name}\n{self.heard}" if self.heard else self.name


@dataclass(frozen=True)
class GraphEdge:
    source: str
    dest: str
    label: str
    kind: str


@dataclass
class Graph:
    nodes: dict[str, GraphNode] = field(default_factory=dict)
    edges: list[GraphEdge] = field(default_factory=list)

    def add_edge(self, source: str, dest: str, label: str, kind: str) -> None:
        # Twilio outcomes that share a source and a destination become one arrow; keys and
        # words stay one arrow each, so a diff shows the very key a change adds.
        for index, edge in enumerate(self.edges):
            if kind == OUTCOME and (edge.source, edge.dest, edge.kind) == (source, dest, kind):
                if label and label not in edge.label.split(" / "):
                    joined = f"{edge.label} / {label}" if edge.label else label
                    self.edges[index] = GraphEdge(source, dest, joined, kind)
                return
        self.edges.append(GraphEdge(source, dest, label, kind))


def shorten(text: str, width: int = LABEL_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def _outcome_label(trigger: str) -> tuple[str, str]:
    """(label, kind) of an outcome trigger as the caller or Twilio experiences it."""
    kind, _, value = trigger.partition(":")
    if kind == "press":
        return value, CHOICE
    if kind == "say":
        return f"'{value}'", WORD
    if kind in ("dial", "queue"):
        return ("hang-up" if value == "hangup" else value), OUTCOME
    return {
        "next": "",
        "goto": "",
        "entered": "entered",
        "recorded": "recorded",
        "empty": "no recording",
        "returned": "returned",
    }.get(kind, trigger), OUTCOME


def build_graph(flows: list[type[Flow]]) -> Graph:
    """One graph for the flows given; with several, node ids are prefixed by the flow name."""
    graph = Graph()
    prefix = len(flows) > 1
    names = {flow.name: flow for flow in flows}

    def node_id(flow: type[Flow], state: str) -> str:
        return f"{flow.name}.{state}" if prefix else state

    for flow in flows:
        for state, node in flow.states().items():
            heard = node.describe()
            graph.nodes[node_id(flow, state)] = GraphNode(
                node_id(flow, state), state, node.kind, shorten(heard) if heard != node.kind else ""
            )
        for state, node in flow.states().items():
            source = node_id(flow, state)
            for trigger, target in node.outcomes():
                dest = flow.target_name(target, state)
                if dest is not None:
                    label, kind = _outcome_label(trigger)
                    graph.add_edge(source, node_id(flow, dest), label, kind)
            if isinstance(node, n.Menu | n.Collect):
                misses = "no-input / no-match"
                if isinstance(node, n.Collect) and node.confirm:
                    misses += " / re-enter"
                graph.add_edge(source, source, misses, RETRY)
                give_up = flow.target_name(flow.give_up_target(node), state)
                if give_up is not None:
                    graph.add_edge(source, node_id(flow, give_up), "give up", GIVE_UP)
                for key, key_target in flow.global_keys_for(node).items():
                    dest = flow.target_name(key_target, state)
                    if dest is not None:
                        graph.add_edge(source, node_id(flow, dest), key, GLOBAL)
            if isinstance(node, n.SubFlow):
                other = names.get(node.flow)
                if other is not None:
                    dest = node_id(other, other.initial_state())
                else:
                    dest = f"flow:{node.flow}"
                    graph.nodes.setdefault(dest, GraphNode(dest, node.flow, "flow", "(sub-flow)"))
                graph.add_edge(source, dest, "enter", SUBFLOW)
        # Outbound calls: who answered sends the call elsewhere instead of the first state.
        start = node_id(flow, flow.initial_state())
        for key, target in amd.declared(flow).items():
            dest = flow.target_name(target, flow.initial_state())
            if dest is not None:
                graph.add_edge(start, node_id(flow, dest), f"answered by {key}", GIVE_UP)
    return graph


# -- loading --------------------------------------------------------------------------------------


def load_target(spec: str) -> list[type[Flow]]:
    """Flows named by ``path.py`` or a folder (all of them) or ``path.py:ClassName`` (one)."""
    drawn, _ = load_targets([spec])
    return drawn


def load_targets(specs: list[str]) -> tuple[list[type[Flow]], list[type[Flow]]]:
    """(flows to draw, every flow loaded) for specs like ``check`` takes, plus ``:ClassName``.

    A class selector picks what is drawn; the other flows of its module still count as
    loaded, so a sub-flow defined beside the selected flow is not reported missing.
    """
    from ivrkit.loader import flow_files, load_module_flows
    from ivrkit.validation import relative_path

    drawn: list[type[Flow]] = []
    loaded: list[type[Flow]] = []
    for spec in specs:
        path, _, class_name = spec.partition(":")
        flows: list[type[Flow]] = []
        for file in flow_files([path]):
            flows += load_module_flows(file)
        loaded += [flow for flow in flows if flow not in loaded]
        if class_name:
            chosen = [flow for flow in flows if class_name in (flow.__name__, flow.name)]
            if not chosen:
                known = ", ".join(flow.__name__ for flow in flows) or "none"
                raise FlowLoadError(
                    f"{relative_path(path)}: no flow {class_name!r} (flows there: {known})"
                )
            flows = chosen
        if not flows:
            raise FlowLoadError(f"{relative_path(path)}: no Flow subclasses found")
        drawn += [flow for flow in flows if flow not in drawn]
    return drawn, loaded


# -- renderers ------------------------------------------------------------------------------------


def _safe_id(raw: str) -> str:
    return re.sub(r"\W", "_", raw)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


_MERMAID_SHAPES = {
    "menu": '{{"%s"}}',
    "collect": '{{"%s"}}',
    "decision": '{"%s"}',
    "subflow": '[["%s"]]',
    "flow": '[["%s"]]',
    **{kind: '(["%s"])' for kind in _ENDS},
}
_MERMAID_ARROWS = {GIVE_UP: "-.->", RETRY: "-.->", GLOBAL: "==>", SUBFLOW: "==>"}
_MERMAID_EDGE_PREFIX = {GIVE_UP: "", GLOBAL: "global ", RETRY: "", SUBFLOW: ""}


def to_mermaid(graph: Graph, *, classes: dict[str, str] | None = None) -> str:
    """A ``flowchart`` block; ``classes`` maps node ids / edge keys to added/removed."""
    classes = classes or {}
    lines = ["flowchart TD"]
    for node in graph.nodes.values():
        shape = _MERMAID_SHAPES.get(node.kind, '["%s"]')
        lines.append(f"    {_safe_id(node.id)}{shape % _mermaid_text(node.label)}")
    styles: list[str] = []
    for index, edge in enumerate(graph.edges):
        arrow = _MERMAID_ARROWS.get(edge.kind, "-->")
        label = shorten(_MERMAID_EDGE_PREFIX.get(edge.kind, "") + edge.label, EDGE_LABEL_WIDTH)
        text = f'|"{_mermaid_text(label)}"|' if label else ""
        lines.append(f"    {_safe_id(edge.source)} {arrow}{text} {_safe_id(edge.dest)}")
        change = classes.get(edge_key(edge))
        if change:
            styles.append(f"    linkStyle {index} stroke:{_COLOURS[change]},stroke-width:2px")
    lines += styles
    marked = [(node_id, change) for node_id, change in classes.items() if node_id in graph.nodes]
    if marked:
        for change, colour in _COLOURS.items():
            lines.append(f"    classDef {change} stroke:{colour},stroke-width:3px")
        for node_id, change in marked:
            lines.append(f"    class {_safe_id(node_id)} {change}")
    return "\n".join(lines) + "\n"


_DOT_SHAPES = {
    "menu": "hexagon",
    "collect": "hexagon",
    "decision": "diamond",
    "subflow": "component",
    "flow": "component",
    **{kind: "oval" for kind in _ENDS},
}
_DOT_EDGE_STYLE = {
    GIVE_UP: 'style=dashed color="#b03a2e"',
    RETRY: 'style=dotted color="#7f8c8d"',
    GLOBAL: 'style=bold color="#2e86c1"',
    SUBFLOW: 'style=bold color="#7d3c98"',
}


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(graph: Graph, *, name: str = "flow") -> str:
    lines = [
        f'digraph "{_dot_text(name)}" {{',
        '    node [shape=box fontname="Helvetica" fontsize=10];',
        '    edge [fontname="Helvetica" fontsize=9];',
    ]
    for node in graph.nodes.values():
        shape = _DOT_SHAPES.get(node.kind, "box")
        lines.append(f'    "{_dot_text(node.id)}" [label="{_dot_text(node.label)}" shape={shape}];')
    for edge in graph.edges:
        label = shorten(("global " if edge.kind == GLOBAL else "") + edge.label, EDGE_LABEL_WIDTH)
        style = _DOT_EDGE_STYLE.get(edge.kind, "")
        attrs = " ".join(part for part in (f'label="{_dot_text(label)}"', style) if part)
        lines.append(f'    "{_dot_text(edge.source)}" -> "{_dot_text(edge.dest)}" [{attrs}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


class GraphvizMissing(IvrkitError):
    """SVG and PNG need Graphviz's ``dot`` program."""


def render_image(dot_source: str, fmt: str) -> bytes:
    """SVG or PNG bytes from DOT source, through Graphviz's ``dot``."""
    binary = shutil.which("dot")
    if binary is None:
        raise GraphvizMissing(
            f"--format {fmt} needs Graphviz's dot program, which is not on PATH: install it "
            "(apt-get install graphviz, brew install graphviz) or use --format mermaid or dot"
        )
    done = subprocess.run(
        [binary, f"-T{fmt}"], input=dot_source.encode(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise IvrkitError(f"dot -T{fmt} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def render(graph: Graph, fmt: str, *, name: str = "flow") -> bytes:
    if fmt == "mermaid":
        return to_mermaid(graph).encode()
    if fmt == "dot":
        return to_dot(graph, name=name).encode()
    if fmt in ("svg", "png"):
        return render_image(to_dot(graph, name=name), fmt)
    raise ValueError(f"unknown graph format {fmt!r}: use svg, png, dot or mermaid")


# -- diff -----------------------------------------------------------------------------------------

ADDED = "added"
REMOVED = "removed"
_COLOURS = {ADDED: "#1e8449", REMOVED: "#c0392b"}


def edge_key(edge: GraphEdge) -> str:
    return f"{edge.source} -[{edge.label}]-> {edge.dest}"


@dataclass
class GraphDiff:
    added_nodes: list[GraphNode]
    removed_nodes: list[GraphNode]
    added_edges: list[GraphEdge]
    removed_edges: list[GraphEdge]
    merged: Graph

    @property
    def empty(self) -> bool:
        return not (
            self.added_nodes or self.removed_nodes or self.added_edges or self.removed_edges
        )

    def text(self) -> str:
        lines = [f"+ state {node.id}: {node.heard or node.kind}" for node in self.added_nodes]
        lines += [f"- state {node.id}: {node.heard or node.kind}" for node in self.removed_nodes]
        lines += [f"+ {edge.kind} {edge_key(edge)}" for edge in self.added_edges]
        lines += [f"- {edge.kind} {edge_key(edge)}" for edge in self.removed_edges]
        return "\n".join(lines or ["no change"]) + "\n"

    def mermaid(self) -> str:
        classes = {node.id: ADDED for node in self.added_nodes}
        classes |= {node.id: REMOVED for node in self.removed_nodes}
        classes |= {edge_key(edge): ADDED for edge in self.added_edges}
        classes |= {edge_key(edge): REMOVED for edge in self.removed_edges}
        return to_mermaid(self.merged, classes=classes)


def diff(old: Graph, new: Graph) -> GraphDiff:
    """What ``new`` adds to and removes from ``old`` (states by name, edges by label)."""
    old_edges = {edge_key(edge): edge for edge in old.edges}
    new_edges = {edge_key(edge): edge for edge in new.edges}
    merged = Graph(nodes={**old.nodes, **new.nodes}, edges=list(new.edges))
    merged.edges += [edge for key, edge in old_edges.items() if key not in new_edges]
    return GraphDiff(
        added_nodes=[node for key, node in new.nodes.items() if key not in old.nodes],
        removed_nodes=[node for key, node in old.nodes.items() if key not in new.nodes],
        added_edges=[edge for key, edge in new_edges.items() if key not in old_edges],
        removed_edges=[edge for key, edge in old_edges.items() if key not in new_edges],
        merged=merged,
    )
