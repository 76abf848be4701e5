"""The checker's rules, in modules by family; :func:`check_flow` runs them on one flow.

- :mod:`~ivrkit.rules.findings`: the Finding a rule reports, with file, line and fix
- :mod:`~ivrkit.rules.targets`: outcomes to unknown states, dead ends, decisions
- :mod:`~ivrkit.rules.asking`: Menu and Collect: keys, retries, notices, read-back
- :mod:`~ivrkit.rules.connecting`: Dial and Enqueue outcomes
- :mod:`~ivrkit.rules.paths`: walks of the flow's graph: reachability, loops, traps
- :mod:`~ivrkit.rules.subflows`: sub-flows across the flows loaded together
- :mod:`~ivrkit.rules.source`: what only the source text shows

Errors stop a flow from loading (and so ``ivrkit serve`` from starting); warnings are shown
by ``ivrkit check``. The rules run once, when the flow class is created, never per request,
and each is linear in the flow's size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ivrkit import nodes as n
from ivrkit.outbound import amd
from ivrkit.rules.asking import MAX_SENSIBLE_RETRIES, check_asking, check_global_keys
from ivrkit.rules.connecting import check_connecting
from ivrkit.rules.findings import (
    ERROR,
    RULES,
    WARNING,
    Finding,
    Reporter,
    did_you_mean,
    relative_path,
)
from ivrkit.rules.paths import check_paths
from ivrkit.rules.subflows import check_subflows
from ivrkit.rules.targets import (
    check_decision,
    check_give_up,
    check_global_key_targets,
    check_outcomes,
)

if TYPE_CHECKING:
    from ivrkit.flow import Flow

__all__ = [
    "ERROR",
    "MAX_SENSIBLE_RETRIES",
    "RULES",
    "WARNING",
    "Finding",
    "check_flow",
    "check_subflows",
    "did_you_mean",
    "relative_path",
]


def check_flow(flow: type[Flow]) -> list[Finding]:
    """Every finding for one flow class, errors first, then by line."""
    report = Reporter(flow)
    states: dict[str, n.Node] = flow.__ivrkit_states__
    initial = flow.__ivrkit_initial__
    if not states:
        report.add(
            "IVR002",
            ERROR,
            None,
            "has no states",
            'declare states as class attributes, e.g. welcome = Say("Hi", then=Hangup())',
        )
        return report.findings
    if initial not in states:
        report.add(
            "IVR002",
            ERROR,
            None,
            f'initial state "{initial}" does not exist',
            f"set initial to one of the states{did_you_mean(initial, states)}",
        )
    for node in states.values():
        check_outcomes(report, node, states)
        check_give_up(report, flow, node)
        check_asking(report, flow, node)
        check_connecting(report, node, states)
        check_decision(report, flow, node)
    check_global_key_targets(report, flow, states)
    check_global_keys(report, flow, states)
    amd.check_targets(report, flow, states)
    check_paths(report, flow, states, initial)
    report.findings.sort(key=lambda f: (f.severity != ERROR, f.line))
    return report.findings
