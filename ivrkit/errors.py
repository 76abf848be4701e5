"""Exceptions raised by ivrkit.

IvrkitError
├── FlowDefinitionError   a flow is wrong as written; raised when it is loaded
├── FlowLoadError         a flow module cannot be found or imported
├── FlowRuntimeError      a flow's own code misbehaved during a call
├── ConfigError           settings are missing or contradict each other
└── StoreInUseError       the SQLite file is already served by another store
"""

from __future__ import annotations

from typing import Any


class IvrkitError(Exception):
    """Base class for every error ivrkit raises on purpose."""


class FlowDefinitionError(IvrkitError):
    """A flow is wrong as written (unknown target, dead end, missing give-up ...).

    Carries every problem found, so an author fixes them in one pass.
    """

    def __init__(self, problems: list[str], findings: list[Any] | None = None) -> None:
        self.problems = list(problems)
        self.findings = list(findings or [])
        super().__init__("\n".join(self.problems))


class FlowLoadError(IvrkitError):
    """A flow module could not be found or imported."""


class FlowRuntimeError(IvrkitError):
    """A flow's own code did something the runtime cannot follow."""


class ConfigError(IvrkitError):
    """Settings are missing or contradict each other."""


class StoreInUseError(IvrkitError):
    """The SQLite file is open in another store: one process owns it, or calls get lost.

    Each store trusts its memory of live calls, so a second one would overwrite the first's
    changes with stale rows."""
