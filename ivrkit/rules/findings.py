"""What a rule reports: a :class:`Finding` with file, line, flow, state and the fix.

Every rule family writes through a :class:`Reporter`, which locates a finding at the line
that declared the state (or the flow's class line when no state is to blame).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ivrkit import nodes as n

if TYPE_CHECKING:  # the flow module imports the rules at run time, not the other way round
    from ivrkit.flow import Flow

ERROR = "error"
WARNING = "warning"

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
    "IVR010": "sub-flow that is not loaded",
    "IVR011": "reject after the call was answered",
    "IVR012": "enqueue without an outcome for leave / queue-full / error",
    "IVR013": "retry loop with no limit: a silent caller goes round forever",
    "IVR014": "menu with no no-input or no-match notice",
    "IVR015": "redirect to this flow's own webhook",
    "IVR016": "states from which the call can never end",
    "IVR017": "read-back confirmation that does not say which keys to press",
    "IVR018": 'dial or queue whose "*" was written to catch a finished bridge',
    "IVR060": "agent hand-off key with no target (or a target for a key never sent)",
    "IVR061": "agent state with no outcome for a failed session or a caller hanging up",
    "IVR062": "agent hand-off field that looks secret but is not in secrets=",
    "IVR070": "payment without a success or failure outcome",
    "IVR071": "payment in a flow whose events are not masked",
    "IVR072": "payment prompt that is never played",
}


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


def relative_path(path: str) -> str:
    """``path`` relative to the current directory when it lies below it, else unchanged.

    Every tool prints paths through this, so ``check``, ``graph`` and ``prompts`` name a file
    the same way whether it was given as ``flows/x.py`` or ``/abs/path/flows/x.py``.
    """
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


class Reporter:
    """Collects one flow's findings, each located where its state was declared."""

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


def outcome_words(trigger: str) -> str:
    """A trigger as the author wrote it: ``press:1`` is choice "1", ``next`` is then."""
    kind, _, value = trigger.partition(":")
    return {
        "press": f'choice "{value}"',
        "say": f'word "{value}"',
        "dial": f'dial outcome "{value}"',
        "queue": f'queue result "{value}"',
        "pay": f'payment result "{value}"',
        "goto": "decision",
        "next": "then",
        "entered": "then",
        "recorded": "then",
        "empty": "on_empty",
        "returned": "then",
    }.get(kind, trigger)
