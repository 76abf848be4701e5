"""IVR010: a SubFlow whose flow is not among the flows loaded together.

This is the one rule that needs every flow at once, so it runs over the set the tools load
(``ivrkit check``, ``graph``, ``prompts``) and the set the app serves, with the same
finding, file and line in each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ivrkit import nodes as n
from ivrkit.rules.findings import ERROR, Finding, Reporter

if TYPE_CHECKING:
    from ivrkit.flow import Flow


def check_subflows(flows: Iterable[type[Flow]]) -> list[Finding]:
    """One finding per SubFlow, in every flow, whose target flow is not in ``flows``."""
    flows = list(flows)
    loaded = {flow.name for flow in flows}
    names = ", ".join(sorted(loaded)) or "none"
    findings: list[Finding] = []
    for flow in flows:
        report = Reporter(flow)
        for node in flow.states().values():
            if isinstance(node, n.SubFlow) and node.flow not in loaded:
                report.add(
                    "IVR010",
                    ERROR,
                    node,
                    f'sub-flow "{node.flow}" is not loaded (loaded: {names})',
                    f'load the module that defines the flow named "{node.flow}" too, e.g. '
                    "give the whole folder",
                )
        findings += report.findings
    return findings
