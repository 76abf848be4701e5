"""The Flow base class: states declared on a class, checked and compiled when it is defined.

A subclass is validated the moment Python creates it, so a typo in a target state fails at
import (``ivrkit serve`` and ``ivrkit check``) instead of during a live call.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ivrkit import arguments as check
from ivrkit import nodes as n
from ivrkit.errors import FlowDefinitionError
from ivrkit.machine import FlowMachine
from ivrkit.outbound import amd
from ivrkit.rules.source import class_site
from ivrkit.rules.source import returned_literals as _returned_literals
from ivrkit.validation import ERROR, Finding, check_flow, relative_path

DEFAULT_APOLOGY = "We're sorry, we are having trouble handling your call."


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


ARGUMENT_CODE = "IVR000"
"""Findings for a state's argument of the wrong type or out of range (raised at definition)."""


class Flow:
    """Base class of every call flow: subclass it and declare the states as attributes.

    A call starts in the first state (or ``initial``), hears what each state says, and moves
    along the outcomes (``then=``, ``choices=``, ``on=``...) until a state hangs up. The class
    is checked when Python creates it: a wrong argument, an unknown target or a menu without
    a give-up raises FlowDefinitionError naming the file, line, state and fix. Flow-wide
    options are plain class attributes, listed below with their defaults.

        class Hello(Flow):
            welcome = Say("Hello from ivrkit.", then=Hangup("Goodbye."))
    """

    name: ClassVar[str] = ""
    """URL and database name of the flow; defaults to the class name in snake_case."""
    number: ClassVar[str | Sequence[str] | None] = None
    """Phone number(s) whose calls this flow answers when routed by the ``To`` parameter."""
    initial: ClassVar[str | None] = None
    """The state calls start in; None: the first state declared."""
    global_keys: ClassVar[Mapping[str, n.Target | n.Repeat]] = {}
    """Keys that work in every Menu of the flow, e.g. {"0": "operator", "*": REPEAT}."""
    give_up: ClassVar[n.Target | None] = None
    """Where a Menu goes when its retries run out, unless its Retries name another state."""
    fallback_number: ClassVar[str | None] = None
    """Where callers are transferred when the flow's own code fails; None: hang up."""
    apology: ClassVar[str] = DEFAULT_APOLOGY
    """What the caller hears when the flow's own code fails, before the fallback."""
    voice: ClassVar[str | None] = None
    """Text-to-speech voice of every Say, e.g. "Polly.Joanna"; None: Twilio's default."""
    language: ClassVar[str | None] = None
    """Language of speech and speech recognition, e.g. "en-GB"; None: Twilio's (en-US)."""
    languages: ClassVar[tuple[str, ...]] = ()
    """Languages every prompt must be written in; ``ivrkit prompts`` flags the gaps."""
    migrations: ClassVar[Mapping[str, str]] = {}
    """Old state name -> new state name, for calls in progress when a state was removed."""
    sensitive: ClassVar[tuple[str, ...]] = ()
    """Collect states (by state name or save_as key) whose entry is a caller secret."""
    entry_points: ClassVar[tuple[str, ...]] = ()
    """States entered from outside the flow's own transitions (not reported unreachable)."""
    on_machine: ClassVar[n.Target | None] = None
    """Outbound calls: where a call answered by a machine goes (every AnsweredBy machine_*),
    e.g. a state leaving a message after the beep; None: machines hear the flow as people do."""
    on_answered_by: ClassVar[Mapping[str, n.Target]] = {}
    """Outbound calls: a state per AnsweredBy value (human, machine_start, machine_end_beep,
    machine_end_silence, machine_end_other, fax, unknown; "machine" for all machine_*),
    winning over ``on_machine``."""
    abstract: ClassVar[bool] = False
    """True on a base class that only shares states: it is not checked or served itself."""

    __ivrkit_states__: ClassVar[dict[str, n.Node]] = {}
    __ivrkit_initial__: ClassVar[str] = ""
    __ivrkit_machine__: ClassVar[FlowMachine]
    __ivrkit_version__: ClassVar[str] = ""
    __ivrkit_source__: ClassVar[tuple[str, int]] = ("<unknown>", 0)
    __ivrkit_open__: ClassVar[frozenset[str]] = frozenset()
    __ivrkit_names__: ClassVar[dict[int, str]] = {}
    __ivrkit_findings__: ClassVar[list[Finding]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract", False):
            return
        if not cls.__dict__.get("name"):
            cls.name = _snake_case(cls.__name__)
        cls.__ivrkit_source__ = class_site(cls)
        flow_problems = _flow_argument_problems(cls)
        _compile(cls)
        wrong_arguments = _argument_findings(cls, flow_problems)
        if wrong_arguments:
            # The rules below would trip over the same wrong values; these say it first.
            cls.__ivrkit_findings__ = wrong_arguments
            raise FlowDefinitionError([f.format() for f in wrong_arguments], wrong_arguments)
        cls.__ivrkit_findings__ = check_flow(cls)
        errors = [f for f in cls.__ivrkit_findings__ if f.severity == ERROR]
        if errors:
            raise FlowDefinitionError([f.format() for f in errors], cls.__ivrkit_findings__)
        cls.__ivrkit_machine__ = FlowMachine(
            cls.name, list(cls.__ivrkit_states__), _transitions(cls)
        )
        cls.__ivrkit_version__ = _version(cls)

    # -- queries used by the runtime, the checker and the graph ------------------------------

    @classmethod
    def state(cls, name: str) -> n.Node:
        return cls.__ivrkit_states__[name]

    @classmethod
    def states(cls) -> dict[str, n.Node]:
        return dict(cls.__ivrkit_states__)

    @classmethod
    def initial_state(cls) -> str:
        return cls.__ivrkit_initial__

    @classmethod
    def version(cls) -> str:
        return cls.__ivrkit_version__

    @classmethod
    def target_name(cls, target: n.Target | n.Repeat | None, source: str) -> str | None:
        """The state name an outcome target stands for (REPEAT stays on ``source``)."""
        if target is None:
            return None
        if isinstance(target, str):
            return target
        if isinstance(target, n.Repeat):
            return source
        return cls.__ivrkit_names__.get(id(target))

    @classmethod
    def give_up_target(cls, node: n.Node) -> n.Target | None:
        retries = getattr(node, "retries", None)
        if retries is not None and retries.give_up is not None:
            return retries.give_up  # type: ignore[no-any-return]
        return cls.give_up

    @classmethod
    def global_keys_for(cls, node: n.Node) -> dict[str, n.Target | n.Repeat]:
        if not isinstance(node, n.Menu) or not node.global_keys:
            return {}
        return {k: t for k, t in cls.global_keys.items() if k not in node.choices}

    @classmethod
    def machine(cls) -> FlowMachine:
        return cls.__ivrkit_machine__

    @classmethod
    def findings(cls) -> list[Finding]:
        return list(cls.__ivrkit_findings__)


def _declared_nodes(cls: type[Flow]) -> dict[str, n.Node]:
    states: dict[str, n.Node] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, n.Node):
                states[attr] = value
            elif callable(value) and isinstance(
                getattr(value, "__ivrkit_decision__", None), n.DecisionMark
            ):
                mark: n.DecisionMark = value.__ivrkit_decision__
                state, targets = mark.state, mark.targets
                literal, is_open = (
                    _returned_literals(value) if targets is None else (targets, False)
                )
                node = n.Decision(value, literal)
                node.argument_problems += mark.argument_problems
                node.name = state
                states[state] = node
                if is_open:
                    cls.__ivrkit_open__ = cls.__ivrkit_open__ | {state}
    return states


def _compile(cls: type[Flow]) -> None:
    """Collect states, name inline nodes (``then=Hangup()``) and pick the initial state."""
    cls.__ivrkit_open__ = frozenset()
    states = _declared_nodes(cls)
    names: dict[int, str] = {id(node): name for name, node in states.items()}
    for name, node in states.items():
        node.name = node.name or name
    queue = list(states.items())
    global_keys = cls.global_keys if isinstance(cls.global_keys, Mapping) else {}
    extra_targets: list[tuple[str, n.Target | n.Repeat | None]] = [
        ("give_up", cls.give_up),
        *((f"key {key}", target) for key, target in global_keys.items()),
        *((f"answered_by {key}", target) for key, target in amd.declared(cls).items()),
    ]
    for label, target in extra_targets:
        if isinstance(target, n.Node) and id(target) not in names:
            generated = f"({label})"
            names[id(target)] = generated
            states[generated] = target
            target.name = target.name or generated
            queue.append((generated, target))
    while queue:
        source, node = queue.pop(0)
        outcomes: list[tuple[str, Any]] = list(node.outcomes())
        retries = getattr(node, "retries", None)
        if retries is not None:
            outcomes.append(("give_up", retries.give_up))
        for trigger, target in outcomes:
            if isinstance(target, n.Node) and id(target) not in names:
                plain_end = isinstance(target, n.Hangup) and not target.prompt
                generated = f"{source}>hangup" if plain_end else f"{source}>{trigger}"
                names[id(target)] = generated
                states[generated] = target
                target.name = target.name or generated
                queue.append((generated, target))
    cls.__ivrkit_states__ = states
    cls.__ivrkit_names__ = names
    initial = cls.__dict__.get("initial") or cls.initial
    cls.__ivrkit_initial__ = initial or next(iter(states), "")


def _flow_argument_problems(cls: type[Flow]) -> list[check.ArgumentProblem]:
    """The flow-wide options, checked like a state's arguments (before anything reads them)."""
    number = cls.number
    numbers = [number] if isinstance(number, str) or number is None else number
    problems: list[check.ArgumentProblem] = []
    if not isinstance(numbers, list | tuple):
        problems.append(
            check.ArgumentProblem("number", check.given(number), 'expected "+15550100" or a list')
        )
    else:
        for item in numbers:
            problems += check.optional_text("number", item, '"+15550100"')
    return (
        problems
        + check.name("name", cls.name, '"support_line"')
        + (check.name("initial", cls.initial, '"welcome"') if cls.initial is not None else [])
        + check.key_map("global_keys", cls.global_keys, optional=False, example='{"0": "operator"}')
        + check.target("give_up", cls.give_up, optional=True)
        + check.optional_text("fallback_number", cls.fallback_number, '"+15550100"')
        + check.required_text("apology", cls.apology, '"Sorry, something went wrong."')
        + check.optional_text("voice", cls.voice, '"Polly.Joanna"')
        + check.optional_text("language", cls.language, '"en-US"')
        + amd.argument_problems(cls)
    )


def _argument_findings(
    cls: type[Flow], flow_problems: list[check.ArgumentProblem]
) -> list[Finding]:
    """One error finding per wrong argument, located at the state that was given it."""
    source_file, source_line = cls.__ivrkit_source__
    found = [
        _argument_finding(cls, "", (source_file, source_line), problem)
        for problem in flow_problems
    ]
    seen: set[int] = set()
    for name, node in cls.__ivrkit_states__.items():
        if id(node) in seen:
            continue
        seen.add(id(node))
        found += [_argument_finding(cls, name, node.defined_at, p) for p in node.argument_problems]
    return found


def _argument_finding(
    cls: type[Flow], state: str, where: tuple[str, int], problem: check.ArgumentProblem
) -> Finding:
    return Finding(
        code=ARGUMENT_CODE,
        severity=ERROR,
        file=relative_path(where[0]),
        line=where[1],
        flow=cls.__name__,
        state=state,
        message=f"{problem.argument}: {problem.problem}",
        fix=problem.expected,
    )


def _transitions(cls: type[Flow]) -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    for source, node in cls.__ivrkit_states__.items():
        for trigger, target in node.outcomes():
            dest = cls.target_name(target, source)
            if dest is not None:
                found.append((trigger, source, dest))
        if isinstance(node, n.Menu | n.Collect):
            found += [(trigger, source, source) for trigger in ("no_input", "no_match", "repeat")]
            if isinstance(node, n.Collect) and node.confirm:
                found += [("confirm", source, source), ("reenter", source, source)]
            give_up = cls.target_name(cls.give_up_target(node), source)
            if give_up is not None:
                found.append(("give_up", source, give_up))
            for key, key_target in cls.global_keys_for(node).items():
                dest = cls.target_name(key_target, source)
                if dest is not None:
                    found.append((f"press:{key}", source, dest))
        if isinstance(node, n.Decision) and source in cls.__ivrkit_open__:
            known = {t for t, s, _ in found if s == source}
            found += [
                (f"goto:{state}", source, state)
                for state in cls.__ivrkit_states__
                if f"goto:{state}" not in known
            ]
    return found


def _version(cls: type[Flow]) -> str:
    """A short hash of what the flow does, so calls can tell a redeploy changed it."""
    digest = hashlib.sha256()
    for name, node in cls.__ivrkit_states__.items():
        digest.update(f"{name}|{node.kind}|{node.describe()}|".encode())
        for trigger, target in node.outcomes():
            digest.update(f"{trigger}>{cls.target_name(target, name)};".encode())
        for value in vars(node).values():
            code = getattr(value, "__code__", None)
            if code is not None:
                digest.update(code.co_code)
    return digest.hexdigest()[:12]
