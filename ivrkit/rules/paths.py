"""Rules about the paths a call can take through a flow, each one walk of the graph.

IVR006 unreachable, IVR007 loops that never wait, IVR011 reject after answering, IVR013
a silent caller going round forever, IVR015 redirect to the flow itself, IVR016 no way to
end. Every walk is iterative and visits each state and edge once, so a flow of 10,000
states checks in linear time and never hits Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ivrkit import nodes as n
from ivrkit.outbound import amd
from ivrkit.rules.findings import ERROR, WARNING, Reporter

if TYPE_CHECKING:
    from ivrkit.flow import Flow


def successors(flow: type[Flow], node: n.Node, *, open_decisions: bool = True) -> list[str]:
    """Every state the call can go to from ``node``, by any outcome, key or give-up."""
    targets: list[object] = [t for _, t in node.outcomes()]
    if isinstance(node, n.Menu | n.Collect):
        targets.append(flow.give_up_target(node))
        if isinstance(node, n.Menu) and node.global_keys:
            targets += list(flow.global_keys.values())
    found = [name for t in targets if (name := flow.target_name(t, node.name)) is not None]  # type: ignore[arg-type]
    if open_decisions and isinstance(node, n.Decision) and node.name in flow.__ivrkit_open__:
        found += list(flow.__ivrkit_states__)
    return found


def silent_successors(flow: type[Flow], node: n.Node) -> list[str]:
    """Where the call goes next when the caller does nothing at all."""
    targets: list[object] = []
    if isinstance(node, n.Say | n.Play | n.Pause | n.SubFlow | n.Decision):
        targets = [t for _, t in node.outcomes()]
    elif isinstance(node, n.Menu | n.Collect):
        targets = [flow.give_up_target(node)]
    elif isinstance(node, n.Record):
        targets = [node.on_empty or node.then]
    return [name for t in targets if (name := flow.target_name(t, node.name)) is not None]  # type: ignore[arg-type]


def check_paths(
    report: Reporter, flow: type[Flow], states: dict[str, n.Node], initial: str
) -> None:
    _check_passthrough_loops(report, flow, states)
    _check_silent_loops(report, flow, states)
    _check_traps(report, flow, states)
    if initial in states:
        _check_reachable(report, flow, states, initial)
        _check_reject(report, flow, states, initial)
        _check_self_redirect(report, flow, states, initial)


def _walk(
    flow: type[Flow],
    states: dict[str, n.Node],
    roots: set[str],
    *,
    through: Callable[[n.Node], bool] | None = None,
) -> set[str]:
    """States reached from ``roots``; with ``through``, only leaving states it accepts."""
    seen = set(roots)
    todo = list(roots)
    while todo:
        node = states[todo.pop()]
        if through is not None and not through(node):
            continue
        for target in successors(flow, node):
            if target in states and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _check_reachable(
    report: Reporter, flow: type[Flow], states: dict[str, n.Node], initial: str
) -> None:
    # Entry points are roots too; inline states (then=Hangup()) are reported with their owner.
    entries = {*flow.entry_points, *amd.entry_states(flow)}  # also: who answered
    seen = _walk(flow, states, {initial, *(name for name in entries if name in states)})
    for name, node in states.items():
        if name not in seen and name.isidentifier():
            report.add(
                "IVR006",
                WARNING,
                node,
                "no path from the initial state reaches it",
                "route a choice or outcome to it, or delete it",
            )


def _check_reject(
    report: Reporter, flow: type[Flow], states: dict[str, n.Node], initial: str
) -> None:
    # Reject is only valid before anything answered the call: every path must be silent.
    silent = _walk(
        flow, states, {initial}, through=lambda node: isinstance(node, n.Decision | n.SubFlow)
    )
    for node in states.values():
        if isinstance(node, n.Reject) and node.name not in silent:
            report.add(
                "IVR011",
                WARNING,
                node,
                "Twilio only rejects calls before they are answered",
                "reach Reject straight from the initial state (or a decision), or use Hangup",
            )


def _check_passthrough_loops(report: Reporter, flow: type[Flow], states: dict[str, n.Node]) -> None:
    # A cycle of states that never wait for the caller would spin inside one webhook.
    passthrough = {
        name
        for name, node in states.items()
        if not node.waits_for_caller and not node.ends_call and not isinstance(node, n.SubFlow)
    }
    done: set[str] = set()
    for root in states:  # in declaration order, so the same flow reports the same cycle
        if root not in passthrough or root in done:
            continue
        # Depth first without recursion: ``path`` is the current branch, ``position`` its index.
        path = [root]
        position = {root: 0}
        pending = [iter(successors(flow, states[root], open_decisions=False))]
        while pending:
            target = next(pending[-1], None)
            if target is None:
                pending.pop()
                finished = path.pop()
                del position[finished]
                done.add(finished)
                continue
            if target not in passthrough:
                continue
            if target in position:
                cycle = path[position[target] :] + [target]
                report.add(
                    "IVR007",
                    ERROR,
                    states[target],
                    f"{' -> '.join(cycle)} loops without waiting for the caller",
                    "put a Menu, Record, Dial or Hangup in the loop",
                )
            elif target not in done:
                position[target] = len(path)
                path.append(target)
                pending.append(iter(successors(flow, states[target], open_decisions=False)))


def _silent_cycles(flow: type[Flow], states: dict[str, n.Node]) -> dict[str, list[str]]:
    """State -> the cycle it lies on (in order, starting anywhere) when nobody presses a key.

    Silence gives each state at most one next state (the first silent successor), so the
    states form chains that end or fall into one cycle: one pass with colours finds them all.
    """
    following: dict[str, str] = {}
    for name, node in states.items():
        nxt = [t for t in silent_successors(flow, node) if t in states]
        if nxt:
            following[name] = nxt[0]
    on_cycle: dict[str, list[str]] = {}
    finished: set[str] = set()
    for start in states:
        chain: list[str] = []
        where: dict[str, int] = {}
        state: str | None = start
        while state is not None and state not in finished and state not in where:
            where[state] = len(chain)
            chain.append(state)
            state = following.get(state)
        if state is not None and state in where:
            cycle = chain[where[state] :]
            for member in cycle:
                on_cycle[member] = cycle
        finished.update(chain)
    return on_cycle


def _check_silent_loops(report: Reporter, flow: type[Flow], states: dict[str, n.Node]) -> None:
    # Each Gather counts its retries, but a give-up that leads back to the same Gather starts
    # the count again: a silent caller (or an answering machine) is then asked forever.
    cycles = _silent_cycles(flow, states)
    for start, node in states.items():
        if not isinstance(node, n.Menu | n.Collect) or start not in cycles:
            continue
        cycle = cycles[start]
        at = cycle.index(start)
        path = cycle[at:] + cycle[:at]
        via_code = any(isinstance(states[s], n.Decision) for s in path)
        report.add(
            "IVR013",
            WARNING if via_code else ERROR,
            node,
            f"a silent caller goes round {' -> '.join(path + [start])} forever: each "
            "give-up starts the retry count again",
            "give up to a state that ends the call: a Hangup, a voicemail or an operator",
        )


def _check_traps(report: Reporter, flow: type[Flow], states: dict[str, n.Node]) -> None:
    # States that cannot reach an end: the caller can only hang up on us.
    predecessors: dict[str, set[str]] = {name: set() for name in states}
    for name, node in states.items():
        for target in successors(flow, node):
            if target in predecessors:
                predecessors[target].add(name)
    can_end = {name for name, node in states.items() if node.ends_call}
    todo = list(can_end)
    while todo:
        for source in predecessors[todo.pop()]:
            if source not in can_end:
                can_end.add(source)
                todo.append(source)
    trapped = [name for name in states if name not in can_end]
    if trapped:
        report.add(
            "IVR016",
            ERROR,
            states[trapped[0]],
            f"no path from {', '.join(trapped)} ever ends the call",
            "route a choice, give-up or outcome from them to a Hangup, a voicemail or an operator",
        )


def _check_self_redirect(
    report: Reporter, flow: type[Flow], states: dict[str, n.Node], initial: str
) -> None:
    own = f"/voice/{flow.name}"
    waiting_free = _walk(flow, states, {initial}, through=lambda node: not node.waits_for_caller)
    for node in states.values():
        if not isinstance(node, n.Redirect):
            continue
        path = node.url.split("?", 1)[0].rstrip("/")
        if not (path.endswith(own) or path.endswith(f"{own}/action")):
            continue
        forever = node.name in waiting_free
        report.add(
            "IVR015",
            ERROR if forever else WARNING,
            node,
            f"redirects to this flow's own webhook {node.url!r}: the call starts again from "
            + (
                "the top without waiting for the caller, so Twilio requests it forever"
                if forever
                else "the top as a new call, losing its retry counts"
            ),
            f'go to the state itself (then="{initial}") instead of redirecting',
        )
