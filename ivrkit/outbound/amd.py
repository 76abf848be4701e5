"""Answering machine detection in a flow: where a call goes by Twilio's ``AnsweredBy``.

A flow declares it with two class attributes::

    class Reminder(Flow):
        on_machine = "leave_message"              # every machine_* classification
        on_answered_by = {"fax": Hangup()}        # one classification (wins over on_machine)

``human`` and ``unknown`` start (or stay in) the flow's initial path unless
``on_answered_by`` names them. Twilio says who answered in one of two ways, and ivrkit
follows both:

- synchronous detection: the call's first webhook carries ``AnsweredBy`` (the call waited
  for the classification), so the call *starts* in the declared state;
- ``AsyncAmd``: the first webhook comes at once and the flow starts as for a person; the
  classification arrives later on the ``/voice/{flow}/amd`` callback, and a call that
  turns out to be a machine is *moved* to the declared state (see :mod:`ivrkit.outbound.moves`).

The targets are checked when the flow class is created, like every other outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ivrkit import arguments as check
from ivrkit import nodes as n
from ivrkit.rules.findings import ERROR, Reporter, did_you_mean

if TYPE_CHECKING:
    from ivrkit.flow import Flow

MACHINE_VALUES = ("machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other")
ANSWERED_BY = ("human", *MACHINE_VALUES, "fax", "unknown")
"""Twilio's AnsweredBy values (``Enable``: human, machine_start, fax, unknown;
``DetectMessageEnd``: human, machine_end_*, fax, unknown)."""
MACHINE = "machine"
"""An ``on_answered_by`` key standing for every machine_* value (what ``on_machine`` sets)."""
ROUTE_KEYS = (*ANSWERED_BY, MACHINE)
ANSWERED_SOURCE = "(answered)"
"""The source of an answered-by transition in coverage: the call's answer, not a state."""
DATA_KEY = "answered_by"
"""``call.data`` key holding Twilio's AnsweredBy once it is known."""


def declared(flow: type[Flow]) -> dict[str, n.Target]:
    """The flow's routes by route key (``machine`` for ``on_machine``), as declared."""
    routes: dict[str, n.Target] = {}
    if flow.on_machine is not None:
        routes[MACHINE] = flow.on_machine
    if isinstance(flow.on_answered_by, Mapping):
        routes.update(flow.on_answered_by)
    return routes


def route(flow: type[Flow], answered_by: str) -> tuple[str, str] | None:
    """(route key, state name) a call answered by ``answered_by`` goes to, or None to carry
    on as declared (a person, or a classification the flow names no state for)."""
    routes = declared(flow)
    key = answered_by if answered_by in routes else None
    if key is None and answered_by in MACHINE_VALUES and MACHINE in routes:
        key = MACHINE
    if key is None:
        return None
    dest = flow.target_name(routes[key], flow.initial_state())
    return (key, dest) if dest is not None else None


def wants_detection(flow: type[Flow]) -> bool:
    """Whether the flow declares anything to do per AnsweredBy."""
    return bool(declared(flow))


def argument_problems(flow: type[Flow]) -> list[check.ArgumentProblem]:
    """``on_machine`` and ``on_answered_by`` checked like a state's arguments."""
    problems = check.target("on_machine", flow.on_machine, optional=True)
    value: Any = flow.on_answered_by
    if not isinstance(value, Mapping):
        return problems + [
            check.ArgumentProblem(
                "on_answered_by", check.given(value), 'expected a dict like {"fax": "goodbye"}'
            )
        ]
    for key, target in value.items():
        if key not in ROUTE_KEYS:
            shown = f'"{key}"' if isinstance(key, str) else check.given(key)
            problems.append(
                check.ArgumentProblem(
                    "on_answered_by",
                    f"{shown} is not an AnsweredBy value",
                    f"use {', '.join(ROUTE_KEYS)}",
                )
            )
        problems += check.target(f"on_answered_by[{key!r}]", target, optional=False)
    return problems


def check_targets(report: Reporter, flow: type[Flow], states: dict[str, n.Node]) -> None:
    """IVR001 for a route to a state that does not exist, with a "did you mean"."""
    for key, target in declared(flow).items():
        if isinstance(target, str) and target not in states:
            where = (
                "on_machine"
                if key == MACHINE and flow.on_machine == target
                else (f'on_answered_by["{key}"]')
            )
            report.add(
                "IVR001",
                ERROR,
                None,
                f'{where} goes to unknown state "{target}"{did_you_mean(target, states)}',
                "name an existing state or declare the missing one",
            )


def entry_states(flow: type[Flow]) -> set[str]:
    """States a call may start in (or be moved to) by who answered: reachable ones."""
    found = set()
    for target in declared(flow).values():
        name = flow.target_name(target, flow.initial_state())
        if name is not None:
            found.add(name)
    return found


def coverage_edges(flow: type[Flow]) -> set[tuple[str, str, str]]:
    """One edge per declared route: ``(answered) -answered_by:<key>-> state``."""
    edges = set()
    for key, target in declared(flow).items():
        name = flow.target_name(target, flow.initial_state())
        if name is not None:
            edges.add((ANSWERED_SOURCE, f"answered_by:{key}", name))
    return edges
