"""Checks a flow's definition: every finding names the file, line, flow, state and the fix.

Errors stop a flow from loading (and so `ivrkit serve` from starting); warnings are shown by
`ivrkit check`. The rules run once, when the flow class is created, never per request.
"""

from __future__ import annotations

import ast
import difflib
import functools
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ivrkit import nodes as n

if TYPE_CHECKING:
    from ivrkit.flow import Flow

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem in a flow, with where it is and how to fix it."""

    code: str
    severity: str
    file: str
    line: int
    flow: str
    state: str
    message: str
    fix: str

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        state = f".{self.state}" if self.state else ""
        return (
            f"{where}: {self.code} {self.severity}: {self.flow}{state}: {self.message} ({self.fix})"
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


RULES = {
    "IVR001": "transition to a state that does not exist",
    "IVR002": "no initial state",
    "IVR003": "menu with no give-up target",
    "IVR004": "dead end: a state with no way out and no hang-up",
    "IVR005": "dial without a busy / no-answer / failed outcome",
    "IVR006": "unreachable state",
    "IVR007": "states that loop without ever waiting for the caller",
    "IVR008": "menu key that can never be entered, or twice the same choice",
    "IVR009": "decision that can return a state that does not exist",
    "IVR010": "sub-flow that does not exist",
    "IVR011": "reject after the call was answered",
    "IVR012": "enqueue without an outcome for leave / queue-full / error",
    "IVR013": "retry loop with no limit: a silent caller goes round forever",
    "IVR014": "menu with no no-input or no-match notice",
    "IVR015": "redirect to this flow's own webhook",
    "IVR016": "states from which the call can never end",
}

MAX_SENSIBLE_RETRIES = 10
"""More attempts than this is a loop in all but name: nobody listens to a menu ten times."""


def relative_path(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


class _Reporter:
    def __init__(self, flow: type[Flow]) -> None:
        self.flow = flow
        self.findings: list[Finding] = []

    def add(self, code: str, severity: str, node: n.Node | None, message: str, fix: str) -> None:
        if node is not None and node.defined_at[1]:
            file, line = node.defined_at
        else:
            file, line = self.flow.__ivrkit_source__
        self.findings.append(
            Finding(
                code=code,
                severity=severity,
                file=relative_path(file),
                line=line,
                flow=self.flow.__name__,
                state=node.name if node is not None else "",
                message=message,
                fix=fix,
            )
        )


def did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def check_flow(flow: type[Flow]) -> list[Finding]:
    """Every finding for one flow class, errors first."""
    report = _Reporter(flow)
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
        _check_targets(report, node, states)
        _check_node(report, flow, node)

    _check_global_keys(report, flow, states)
    _check_passthrough_loops(report, flow, states)
    _check_silent_loops(report, flow, states)
    _check_traps(report, flow, states)
    if initial in states:
        _check_reachable(report, flow, states, initial)
        _check_self_redirect(report, flow, states, initial)
    report.findings.sort(key=lambda f: (f.severity != ERROR, f.line))
    return report.findings


def _check_targets(report: _Reporter, node: n.Node, states: dict[str, n.Node]) -> None:
    for trigger, target in node.outcomes():
        if isinstance(target, str) and target not in states:
            code = "IVR009" if isinstance(node, n.Decision) else "IVR001"
            what = (
                "can return"
                if isinstance(node, n.Decision)
                else f"{_outcome_words(trigger)} goes to"
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
                f"{_outcome_words(trigger)} leads nowhere",
                'add then="<next state>" or then=Hangup()',
            )


def _outcome_words(trigger: str) -> str:
    kind, _, value = trigger.partition(":")
    return {
        "press": f'choice "{value}"',
        "say": f'word "{value}"',
        "dial": f'dial outcome "{value}"',
        "queue": f'queue result "{value}"',
        "goto": "decision",
        "next": "then",
        "entered": "then",
        "recorded": "then",
        "empty": "on_empty",
        "returned": "then",
    }.get(kind, trigger)


def _check_node(report: _Reporter, flow: type[Flow], node: n.Node) -> None:
    if isinstance(node, n.Menu | n.Collect):
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
    if isinstance(node, n.Menu | n.Collect):
        _check_retries(report, node)
    if isinstance(node, n.Menu):
        _check_duplicate_keys(report, node)
        for key, target in node.choices.items():
            if flow.target_name(target, node.name) == node.name and target is not n.REPEAT:
                report.add(
                    "IVR013",
                    WARNING,
                    node,
                    f'choice "{key}" goes back to {node.name} itself, replaying it without '
                    "counting a retry",
                    "use REPEAT to replay the menu on purpose, or send the key elsewhere",
                )
        seen_words: set[str] = set()
        length = node.key_length()
        for key in node.choices:
            if node.finish_on_key and node.finish_on_key in key:
                report.add(
                    "IVR008",
                    ERROR,
                    node,
                    f'choice "{key}" contains the finish key "{node.finish_on_key}"',
                    "pick another key or set finish_on_key",
                )
            if node.input == "speech":
                report.add(
                    "IVR008",
                    ERROR,
                    node,
                    f'choice "{key}" cannot be pressed: input is speech',
                    'use input="dtmf speech"',
                )
        if length is None:
            report.add(
                "IVR008",
                WARNING,
                node,
                "choices have different lengths, so callers must press the finish key or wait",
                "give every key the same number of digits",
            )
        for word in node.words:
            if word in seen_words:
                report.add("IVR008", ERROR, node, f'word "{word}" is listed twice', "remove one")
            seen_words.add(word)
    if isinstance(node, n.Dial):
        missing = node.unhandled_statuses()
        if missing:
            report.add(
                "IVR005",
                ERROR,
                node,
                f"no outcome for {', '.join(missing)}",
                'add on={"*": "voicemail"} or map each status to a state',
            )
    if isinstance(node, n.Enqueue):
        missing = [r for r in n.QUEUE_RESULTS if node.target_for(r) is None]
        if missing:
            report.add(
                "IVR012",
                ERROR,
                node,
                f"no outcome for {', '.join(missing)}",
                'add on={"*": "<state>"}; then= is only where a caller goes after an agent',
            )
    if isinstance(node, n.Decision) and node.targets:
        _check_decision_literals(report, flow, node)
    if isinstance(node, n.Decision) and node.targets == ():
        report.add(
            "IVR009",
            WARNING,
            node,
            "returns no state name ivrkit can see",
            "return string literals or pass targets=[...] to @decision",
        )


def _successors(flow: type[Flow], node: n.Node, *, open_decisions: bool = True) -> list[str]:
    targets: list[object] = [t for _, t in node.outcomes()]
    if isinstance(node, n.Menu | n.Collect):
        targets.append(flow.give_up_target(node))
        if isinstance(node, n.Menu) and node.global_keys:
            targets += list(flow.global_keys.values())
    found = [name for t in targets if (name := flow.target_name(t, node.name)) is not None]  # type: ignore[arg-type]
    if open_decisions and isinstance(node, n.Decision) and node.name in flow.__ivrkit_open__:
        found += list(flow.__ivrkit_states__)
    return found


def _check_reachable(
    report: _Reporter, flow: type[Flow], states: dict[str, n.Node], initial: str
) -> None:
    # Entry points are roots too; inline states (then=Hangup()) are reported with their owner.
    seen = {initial, *(name for name in flow.entry_points if name in states)}
    todo = list(seen)
    while todo:
        for target in _successors(flow, states[todo.pop()]):
            if target in states and target not in seen:
                seen.add(target)
                todo.append(target)
    for name, node in states.items():
        if name not in seen and name.isidentifier():
            report.add(
                "IVR006",
                WARNING,
                node,
                "no path from the initial state reaches it",
                "route a choice or outcome to it, or delete it",
            )
    _check_reject(report, flow, states, initial)


def _check_reject(
    report: _Reporter, flow: type[Flow], states: dict[str, n.Node], initial: str
) -> None:
    # Reject is only valid before anything answered the call: every path must be silent.
    silent = {initial}
    todo = [initial]
    while todo:
        node = states[todo.pop()]
        if isinstance(node, n.Decision | n.SubFlow):
            for target in _successors(flow, node):
                if target in states and target not in silent:
                    silent.add(target)
                    todo.append(target)
    for node in states.values():
        if isinstance(node, n.Reject) and node.name not in silent:
            report.add(
                "IVR011",
                WARNING,
                node,
                "Twilio only rejects calls before they are answered",
                "reach Reject straight from the initial state (or a decision), or use Hangup",
            )


def _check_passthrough_loops(
    report: _Reporter, flow: type[Flow], states: dict[str, n.Node]
) -> None:
    # A cycle of states that never wait for the caller would spin inside one webhook.
    passthrough = {
        name
        for name, node in states.items()
        if not node.waits_for_caller and not node.ends_call and not isinstance(node, n.SubFlow)
    }
    color: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        color[name] = 1
        for target in _successors(flow, states[name], open_decisions=False):
            if target not in passthrough:
                continue
            if color.get(target) == 1:
                cycle = path[path.index(target) :] + [target] if target in path else [name, target]
                report.add(
                    "IVR007",
                    ERROR,
                    states[target],
                    f"{' -> '.join(cycle)} loops without waiting for the caller",
                    "put a Menu, Record, Dial or Hangup in the loop",
                )
            elif target not in color:
                visit(target, path + [target])
        color[name] = 2

    for name in passthrough:
        if name not in color:
            visit(name, [name])


def _check_retries(report: _Reporter, node: n.Menu | n.Collect) -> None:
    retries = node.retries
    for what, count in (("no_input", retries.no_input), ("no_match", retries.no_match)):
        if count > MAX_SENSIBLE_RETRIES:
            report.add(
                "IVR013",
                WARNING,
                node,
                f"Retries({what}={count}) asks the caller {count} times before giving up",
                f"keep {what} at {MAX_SENSIBLE_RETRIES} or fewer (3 is usual)",
            )
    if retries.no_input_prompt is None:
        report.add(
            "IVR014",
            WARNING,
            node,
            "no no-input notice: after silence the caller hears the prompt again with no "
            "word that nothing was heard",
            'set Retries(no_input_prompt="Sorry, I didn\'t hear anything.")',
        )
    if retries.no_match_prompt is None:
        report.add(
            "IVR014",
            WARNING,
            node,
            "no no-match notice: a wrong entry replays the prompt with no word of what went wrong",
            'set Retries(no_match_prompt="Sorry, that is not a valid choice.")',
        )


@functools.lru_cache(maxsize=64)
def _parsed(file: str) -> ast.Module | None:
    try:
        with open(file, encoding="utf-8") as source:
            return ast.parse(source.read())
    except (OSError, SyntaxError, ValueError):
        return None


def _declaration(node: n.Node) -> ast.Call | None:
    """The ``Menu(...)`` call expression that declared a node, read from its source file."""
    file, line = node.defined_at
    tree = _parsed(file)
    if tree is None:
        return None
    name = type(node).__name__
    for expr in ast.walk(tree):
        if (
            isinstance(expr, ast.Call)
            and expr.lineno <= line <= (expr.end_lineno or expr.lineno)
            and getattr(expr.func, "id", getattr(expr.func, "attr", None)) == name
        ):
            return expr
    return None


def _check_duplicate_keys(report: _Reporter, node: n.Menu) -> None:
    # A dict literal keeps the last of two equal keys silently; only the source shows both.
    call = _declaration(node)
    if call is None:
        return
    for keyword in call.keywords:
        if keyword.arg not in ("choices", "words") or not isinstance(keyword.value, ast.Dict):
            continue
        seen: set[str] = set()
        for key in keyword.value.keys:
            if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
                continue
            value = key.value if keyword.arg == "choices" else key.value.lower().strip()
            if value in seen:
                what = "choice" if keyword.arg == "choices" else "word"
                report.add(
                    "IVR008",
                    ERROR,
                    node,
                    f'{what} "{value}" is listed twice; only the last one can be entered',
                    f'remove one of the two "{value}" entries',
                )
            seen.add(value)


def _check_decision_literals(report: _Reporter, flow: type[Flow], node: n.Decision) -> None:
    from ivrkit.flow import _returned_literals  # the flow module imports this one

    literals, _ = _returned_literals(node.function)
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


def _check_global_keys(report: _Reporter, flow: type[Flow], states: dict[str, n.Node]) -> None:
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
    for node in states.values():
        if not isinstance(node, n.Menu):
            continue
        keys = flow.global_keys_for(node)
        for key in keys:
            if node.finish_on_key and node.finish_on_key in key:
                report.add(
                    "IVR008",
                    ERROR,
                    node,
                    f'global key "{key}" contains the finish key "{node.finish_on_key}", '
                    "so it can never be entered here",
                    "set another finish_on_key on the menu, or global_keys=False",
                )
        if node.key_length() == 1 and any(len(key) > 1 for key in keys):
            report.add(
                "IVR008",
                WARNING,
                node,
                "a multi-digit global key turns this one-digit menu into one that waits for "
                "the finish key",
                "make every global key one digit",
            )


def _silent_successors(flow: type[Flow], node: n.Node) -> list[str]:
    """Where the call goes next when the caller does nothing at all."""
    targets: list[object] = []
    if isinstance(node, n.Say | n.Play | n.Pause | n.SubFlow | n.Decision):
        targets = [t for _, t in node.outcomes()]
    elif isinstance(node, n.Menu | n.Collect):
        targets = [flow.give_up_target(node)]
    elif isinstance(node, n.Record):
        targets = [node.on_empty or node.then]
    return [name for t in targets if (name := flow.target_name(t, node.name)) is not None]  # type: ignore[arg-type]


def _check_silent_loops(report: _Reporter, flow: type[Flow], states: dict[str, n.Node]) -> None:
    # Each Gather counts its retries, but a give-up that leads back to the same Gather starts
    # the count again: a silent caller (or an answering machine) is then asked forever.
    asking = [name for name, node in states.items() if isinstance(node, n.Menu | n.Collect)]
    for start in asking:
        path = [start]
        seen = {start}
        state = start
        while True:
            following = [t for t in _silent_successors(flow, states[state]) if t in states]
            if not following:
                break
            state = following[0]
            if state == start:
                via_code = any(isinstance(states[s], n.Decision) for s in path)
                report.add(
                    "IVR013",
                    WARNING if via_code else ERROR,
                    states[start],
                    f"a silent caller goes round {' -> '.join(path + [start])} forever: each "
                    "give-up starts the retry count again",
                    "give up to a state that ends the call: a Hangup, a voicemail or an operator",
                )
                break
            if state in seen:
                break  # a loop elsewhere; reported from its own first Gather
            seen.add(state)
            path.append(state)


def _check_traps(report: _Reporter, flow: type[Flow], states: dict[str, n.Node]) -> None:
    # States that cannot reach an end: the caller can only hang up on us.
    predecessors: dict[str, set[str]] = {name: set() for name in states}
    for name, node in states.items():
        for target in _successors(flow, node):
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
        first = states[trapped[0]]
        report.add(
            "IVR016",
            ERROR,
            first,
            f"no path from {', '.join(trapped)} ever ends the call",
            "route a choice, give-up or outcome from them to a Hangup, a voicemail or an operator",
        )


def _check_self_redirect(
    report: _Reporter, flow: type[Flow], states: dict[str, n.Node], initial: str
) -> None:
    own = f"/voice/{flow.name}"
    waiting_free = {initial}
    todo = [initial]
    while todo:
        node = states[todo.pop()]
        if node.waits_for_caller:
            continue
        for target in _successors(flow, node):
            if target in states and target not in waiting_free:
                waiting_free.add(target)
                todo.append(target)
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
