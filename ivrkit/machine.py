"""The one module that talks to `transitions`: a state machine per Flow class.

One shared machine per flow class, built when the class is defined; a request fires an
event on a throw-away position object instead of adding and removing a model, which costs
about a fifth as much and leaves the machine untouched by concurrent calls.

No conditions or callbacks are ever attached, so where a trigger leads from a state is a
fixed fact of the machine: transitions decides each (state, trigger) pair the first time it
is fired, and its answer is remembered for the calls after.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from transitions import Machine, MachineError

from ivrkit.errors import FlowRuntimeError

# transitions logs every state change at INFO: a line per webhook nobody asked for, and
# time spent on the hot path. Its warnings and errors still come through.
logging.getLogger("transitions").setLevel(logging.WARNING)


class _Position:
    """The model transitions moves: only the current state's name."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


class FlowMachine:
    """States and triggers of one flow, checked by `transitions` on every move."""

    def __init__(
        self, flow: str, states: list[str], transitions: Iterable[tuple[str, str, str]]
    ) -> None:
        self.flow = flow
        self._machine = Machine(
            model=None,
            states=states,
            initial=states[0],
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )
        for trigger, source, dest in transitions:
            self._machine.add_transition(trigger, source, dest)
        self._decided: dict[tuple[str, str], str] = {}

    def fire(self, state: str, trigger: str) -> str:
        """Move from ``state`` by ``trigger`` and return the new state's name."""
        dest = self._decided.get((state, trigger))
        if dest is None:
            dest = self._decided[state, trigger] = self._fire(state, trigger)
        return dest

    def _fire(self, state: str, trigger: str) -> str:
        position = _Position(state)
        event = self._machine.events.get(trigger)
        if event is None:
            raise FlowRuntimeError(f"{self.flow}: no transition {trigger!r} from {state!r}")
        try:
            event.trigger(position)
        except MachineError as error:
            raise FlowRuntimeError(f"{self.flow}: {error.value}") from error
        return position.state

    def triggers(self, state: str) -> list[str]:
        return self._machine.get_triggers(state)

    def edges(self) -> list[tuple[str, str, str]]:
        """(source, trigger, dest) for every transition, for graphs and coverage."""
        found = []
        for trigger, event in self._machine.events.items():
            for source, transitions in event.transitions.items():
                for transition in transitions:
                    if transition.dest is not None:  # ours are never internal transitions
                        found.append((source, trigger, transition.dest))
        return found
