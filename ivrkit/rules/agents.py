"""Rules for Agent states (ConversationRelay): IVR060-IVR062.

- IVR060: the agent can end with a hand-off key that ``on=`` does not map (it lands in
  ``"*"``, probably not what was meant), or ``on=`` maps a key the agent never sends.
- IVR061: no ``on_failure=`` or no ``on_hangup=``: a failed session or a caller who hung
  up goes where the defaults say ("*", the end of the call), unstated.
- IVR062: a hand-off field whose name says it is a secret (account, pin, card...) but is
  not in ``secrets=``: it would be stored and logged in clear.
"""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

from ivrkit import nodes as n
from ivrkit.relay.node import Agent
from ivrkit.rules.findings import WARNING, Reporter

SECRET_WORDS = ("pin", "password", "passcode", "card", "account", "ssn", "cvv", "cvc", "iban")


def check_agent(report: Reporter, node: n.Node) -> None:
    if not isinstance(node, Agent):
        return
    declared = node.declared_keys()
    mapped = set(node.handoff_keys())
    for key in declared:
        if key not in mapped:
            report.add(
                "IVR060",
                WARNING,
                node,
                f'hand-off key "{key}" of the agent has no target in on=: it goes to "*"',
                f'add "{key}": "<state>" to on=',
            )
    if declared:
        for key in sorted(mapped - set(declared)):
            report.add(
                "IVR060",
                WARNING,
                node,
                f'on= maps hand-off key "{key}", which the agent never sends',
                "remove it, or make the agent hand off with it",
            )
    missing = [
        argument
        for argument, value in (("on_failure", node.on_failure), ("on_hangup", node.on_hangup))
        if value is None
    ]
    if missing:
        report.add(
            "IVR061",
            WARNING,
            node,
            f"no {' and no '.join(missing)}: a failed session goes to \"*\" and a caller who "
            "hung up ends the call, without the flow saying so",
            'add on_failure="<state>" (e.g. an operator) and on_hangup=Hangup()',
        )
    for field in sorted(_fields(node) - node.secrets):
        if _looks_secret(field):
            report.add(
                "IVR062",
                WARNING,
                node,
                f'hand-off field "{field}" looks like a caller secret but is not in secrets=',
                f'add secrets=("{field}",) so it is never stored or logged in clear',
            )


def _fields(node: Agent) -> set[str]:
    names: set[str] = set()
    for schema in node.schemas.values():
        if dataclasses.is_dataclass(schema):
            names.update(f.name for f in dataclasses.fields(schema))
        else:
            names.update(get_type_hints(schema))
    return names


def _looks_secret(name: str) -> bool:
    return any(
        word in SECRET_WORDS or any(word.startswith(s) for s in SECRET_WORDS if len(s) > 3)
        for word in name.lower().split("_")
    )
