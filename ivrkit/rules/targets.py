"""Where outcomes go: unknown states (IVR001, IVR009) and outcomes that lead nowhere (IVR004)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ivrkit import nodes as n
from ivrkit.rules.findings import ERROR, WARNING, Reporter, did_you_mean, outcome_words
from ivrkit.rules.source import returned_literals

if TYPE_CHECKING:
    from ivrkit.flow import Flow


def check_outcomes(report: Reporter, node: n.Node, states: dict[str, n.Node]) -> None:
    for trigger, target in node.outcomes():
        if isinstance(target, str) and target not in states:
            code = "IVR009" if isinstance(node, n.Decision) else "IVR001"
            what = (
                "can return"
                if isinstance(node, n.Decision)
                else f"{outcome_words(trigger)} goes to"
            )
            report.add(
                code,
                ERROR,
                node,
                f'{what} unknown state "{target}"{did_you_mean(target, states)}',
                "name an existing state or declare the missing one",
            )
        if target is None and not isinstance(node, n.Dial | n.Enqueue):
            report.add(
                "IVR004",
                ERROR,
                node,
                f"{outcome_words(trigger)} leads nowhere",
                'add then="<next state>" or then=Hangup()',
            )


def check_give_up(report: Reporter, flow: type[Flow], node: n.Node) -> None:
    """IVR003: a Menu or Collect needs somewhere to go when its retries run out."""
    if not isinstance(node, n.Menu | n.Collect):
        return
    give_up = flow.give_up_target(node)
    if give_up is None:
        report.add(
            "IVR003",
            ERROR,
            node,
            "has no give-up target for when retries run out",
            'add retries=Retries(give_up="operator") or set give_up on the flow',
        )
    elif isinstance(give_up, str) and give_up not in flow.__ivrkit_states__:
        report.add(
            "IVR001",
            ERROR,
            node,
            f'give-up goes to unknown state "{give_up}"'
            f"{did_you_mean(give_up, flow.__ivrkit_states__)}",
            "name an existing state",
        )


def check_decision(report: Reporter, flow: type[Flow], node: n.Node) -> None:
    """IVR009: what a decision's code can return must be among its declared targets."""
    if not isinstance(node, n.Decision):
        return
    if node.targets:
        literals, _ = returned_literals(node.function)
        for name in literals:
            if name not in node.targets:
                where = "" if name in flow.__ivrkit_states__ else " and is not a state"
                report.add(
                    "IVR009",
                    ERROR,
                    node,
                    f'can return "{name}", which is not in its targets{where}'
                    f"{did_you_mean(name, node.targets)}",
                    f'add "{name}" to targets=[...] of @decision or return one of them',
                )
    elif node.targets == ():
        report.add(
            "IVR009",
            WARNING,
            node,
            "returns no state name ivrkit can see",
            "return string literals or pass targets=[...] to @decision",
        )


def check_global_key_targets(report: Reporter, flow: type[Flow], states: dict[str, n.Node]) -> None:
    for key, target in flow.global_keys.items():
        if isinstance(target, str) and target not in states:
            report.add(
                "IVR001",
                ERROR,
                None,
                f'global key "{key}" goes to unknown state "{target}"'
                f"{did_you_mean(target, states)}",
                "name an existing state in global_keys",
            )
