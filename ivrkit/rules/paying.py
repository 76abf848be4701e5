"""Rules for ``Pay`` states (card payments through Twilio's ``<Pay>``).

IVR070: a payment needs a state for success and for every failure, or the caller who paid
(or could not) is left in silence. IVR071: a flow that takes payments is in PCI DSS scope,
so what its callers key elsewhere must not sit in the event log in clear. IVR072: a prompt
for a step this Pay never asks is never heard (a typo, or an option turned off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ivrkit import nodes as n
from ivrkit.pay import Pay
from ivrkit.rules.findings import ERROR, WARNING, Reporter
from ivrkit.sensitive import keep_mode

if TYPE_CHECKING:
    from ivrkit.flow import Flow


def check_paying(report: Reporter, flow: type[Flow], states: dict[str, n.Node]) -> None:
    pays = [node for node in states.values() if isinstance(node, Pay)]
    for node in pays:
        _check_outcomes(report, node)
        _check_prompts(report, node)
    if pays:
        _check_masked(report, flow, states, pays[0])


def _check_outcomes(report: Reporter, node: Pay) -> None:
    missing = node.unhandled_results()
    if "success" in missing:
        report.add(
            "IVR070",
            ERROR,
            node,
            'no outcome for "success": a caller who paid would be left in silence',
            'add on={"success": "<state>"}, e.g. a thank-you with the confirmation code',
        )
    failures = [result for result in missing if result != "success"]
    if failures:
        report.add(
            "IVR070",
            ERROR,
            node,
            f"no outcome for {', '.join(failures)}",
            'add on={"*": "<state>"} for the failures, e.g. an offer to try again or an agent',
        )


def _check_prompts(report: Reporter, node: Pay) -> None:
    asked = set(node.steps())
    for prompt in node.prompts:
        if prompt.step not in asked:
            why = {
                "security-code": "security_code=False",
                "postal-code": "postal_code is not True",
            }.get(prompt.step, "the step is not asked")
            report.add(
                "IVR072",
                WARNING,
                node,
                f'PayPrompt for "{prompt.step}" is never played ({why})',
                "drop the prompt, or ask for that step",
            )
        if prompt.attempt and max(prompt.attempt) > node.max_attempts:
            report.add(
                "IVR072",
                WARNING,
                node,
                f'PayPrompt for "{prompt.step}" names attempt {max(prompt.attempt)}, but '
                f"max_attempts is {node.max_attempts}",
                "raise max_attempts or drop that attempt",
            )


def _check_masked(report: Reporter, flow: type[Flow], states: dict[str, n.Node], pay: Pay) -> None:
    """IVR071: every Collect of a flow with a Pay must be masked in the event log."""
    clear = [
        name
        for name, node in states.items()
        if isinstance(node, n.Collect) and keep_mode(flow, node) is None
    ]
    if clear:
        listed = ", ".join(f'"{name}"' for name in clear)
        report.add(
            "IVR071",
            WARNING,
            pay,
            f"this flow takes payments, but its events are not masked: {listed} "
            f"{'keeps' if len(clear) == 1 else 'keep'} what the caller keys in clear in the "
            "event log and call data",
            f"add sensitive=True to {listed}, or list them in the flow's sensitive = (...)",
        )
