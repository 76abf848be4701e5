"""Flow coverage: which states and transitions the tests made calls take.

The recorder is a :class:`~ivrkit.observers.CallObserver`: ``pytest --ivr-coverage``
registers it on the runtime's observer hook (:func:`start`), so the runtime knows nothing
of coverage and pays nothing in production, when no observer is registered. The total a
flow is measured against is its state machine's edges, less the aliases no webhook can
fire (see :func:`transitions_of`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ivrkit import nodes as n
from ivrkit import observers
from ivrkit.flow import Flow
from ivrkit.outbound import amd

Edge = tuple[str, str, str]
"""(source state, trigger, destination state)."""

RECORDER: CoverageRecorder | None = None
"""The active recorder; None (the default) means coverage is off."""


def transitions_of(flow: type[Flow]) -> set[Edge]:
    """Every transition a call can take in ``flow``.

    A key mapped to ``REPEAT`` fires ``repeat`` rather than ``press:<key>``, so the
    ``press:<key>`` alias is left out, and ``repeat`` counts only where some key repeats;
    with ``Retries(no_input=1)`` the first silence gives up, so no ``no_input`` loop exists.
    A sub-flow hand-off counts as an ``enter`` transition to the other flow.
    """
    states = flow.states()
    found: set[Edge] = set()
    for source, trigger, dest in flow.machine().edges():
        node = states[source]
        if trigger == "repeat" and not _has_repeat_key(flow, node):
            continue
        if trigger in ("no_input", "no_match") and getattr(node.retries, trigger) == 1:  # type: ignore[attr-defined]
            continue  # the first miss already gives up
        if trigger.startswith("press:") and _key_repeats(flow, node, trigger[6:]):
            continue
        found.add((source, trigger, dest))
    for name, node in states.items():
        if isinstance(node, n.SubFlow):
            found.add((name, "enter", node.flow))
    found |= amd.coverage_edges(flow)  # a call routed by who answered (AnsweredBy)
    return found


def _key_target(flow: type[Flow], node: n.Node, key: str) -> object:
    if isinstance(node, n.Menu) and key in node.choices:
        return node.choices[key]
    return flow.global_keys_for(node).get(key)


def _key_repeats(flow: type[Flow], node: n.Node, key: str) -> bool:
    return isinstance(_key_target(flow, node, key), n.Repeat)


def _has_repeat_key(flow: type[Flow], node: n.Node) -> bool:
    if not isinstance(node, n.Menu):
        return False
    keys = list(node.choices) + list(flow.global_keys_for(node))
    return any(_key_repeats(flow, node, key) for key in keys)


def flow_id(flow: type[Flow]) -> str:
    return f"{flow.__module__}.{flow.__qualname__}"


@dataclass
class FlowCoverage:
    """What the tests did in one flow."""

    flow: type[Flow]
    states: set[str] = field(default_factory=set)
    taken: set[Edge] = field(default_factory=set)

    @property
    def all_states(self) -> set[str]:
        return set(self.flow.states())

    @property
    def all_transitions(self) -> set[Edge]:
        return transitions_of(self.flow)

    @property
    def missed(self) -> list[Edge]:
        return sorted(self.all_transitions - self.taken)

    @property
    def missed_states(self) -> list[str]:
        return sorted(self.all_states - self.states)


class CoverageRecorder(observers.CallObserver):
    """Collects visited states and taken transitions for every flow loaded into an app."""

    def __init__(self) -> None:
        self.flows: dict[str, FlowCoverage] = {}

    def _entry(self, flow: type[Flow]) -> FlowCoverage:
        key = flow_id(flow)
        entry = self.flows.get(key)
        if entry is None:
            entry = self.flows[key] = FlowCoverage(flow)
        return entry

    def flows_loaded(self, flows: Iterable[type[Flow]]) -> None:
        for flow in flows:
            self._entry(flow)

    def state_entered(self, flow: type[Flow], state: str, call_sid: str = "") -> None:
        self._entry(flow).states.add(state)

    def trigger_taken(
        self, flow: type[Flow], source: str, trigger: str, dest: str, call_sid: str = ""
    ) -> None:
        entry = self._entry(flow)
        entry.taken.add((source, trigger, dest))
        entry.states.add(source)
        if trigger != "enter":
            entry.states.add(dest)

    def report(self, *, exclude: Iterable[str] = (), root: Path | None = None) -> CoverageReport:
        """Flows by name, less those from modules matching ``exclude`` or outside ``root``."""
        skipped = tuple(exclude)
        rows = [
            entry
            for entry in sorted(self.flows.values(), key=lambda entry: entry.flow.name)
            if not any(_module_matches(entry.flow.__module__, pattern) for pattern in skipped)
            and (root is None or _inside(entry.flow.__ivrkit_source__[0], root))
        ]
        return CoverageReport(rows)


def _inside(file: str, root: Path) -> bool:
    return Path(file).resolve().is_relative_to(root.resolve())


def _module_matches(module: str, pattern: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module == pattern or module.startswith(pattern + ".") or last.startswith(pattern)


@dataclass
class CoverageReport:
    flows: list[FlowCoverage]

    @property
    def total_transitions(self) -> int:
        return sum(len(entry.all_transitions) for entry in self.flows)

    @property
    def taken_transitions(self) -> int:
        return sum(len(entry.all_transitions & entry.taken) for entry in self.flows)

    @property
    def percent(self) -> float:
        total = self.total_transitions
        return 100.0 if total == 0 else 100.0 * self.taken_transitions / total

    def table(self) -> str:
        header = ("flow", "states", "transitions", "cover")
        rows = [header]
        for entry in self.flows:
            states = len(entry.all_states & entry.states)
            taken = len(entry.all_transitions & entry.taken)
            total = len(entry.all_transitions)
            rows.append(
                (
                    entry.flow.name,
                    f"{states}/{len(entry.all_states)}",
                    f"{taken}/{total}",
                    _percent(taken, total),
                )
            )
        rows.append(
            (
                "TOTAL",
                f"{sum(len(e.all_states & e.states) for e in self.flows)}"
                f"/{sum(len(e.all_states) for e in self.flows)}",
                f"{self.taken_transitions}/{self.total_transitions}",
                _percent(self.taken_transitions, self.total_transitions),
            )
        )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = []
        for index, row in enumerate(rows):
            cells = [row[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells))
            if index == 0 or index == len(rows) - 2:
                lines.append("-" * len(lines[-1]))
        return "\n".join(lines)

    def missed_lines(self) -> list[str]:
        return [
            f"{entry.flow.name}: {source} -{trigger}-> {dest}"
            for entry in self.flows
            for source, trigger, dest in entry.missed
        ]


def _percent(taken: int, total: int) -> str:
    return "100%" if total == 0 else f"{100.0 * taken / total:.0f}%"


def start() -> CoverageRecorder:
    """Install a fresh recorder (the pytest plugin does this when asked)."""
    global RECORDER
    if RECORDER is not None:
        observers.remove(RECORDER)
    RECORDER = CoverageRecorder()
    observers.add(RECORDER)
    return RECORDER


def stop() -> CoverageRecorder | None:
    global RECORDER
    recorder, RECORDER = RECORDER, None
    if recorder is not None:
        observers.remove(recorder)
    return recorder
