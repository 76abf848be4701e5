"""What a call did, told to whoever listens: the hook coverage (and later metrics) hang off.

The runtime reports each state a call enters and each trigger it takes (a key, a retry, a
give-up, a sub-flow hand-off) to the observers in :data:`ACTIVE`. With none registered
(production, by default) each report is one check of an empty tuple, so the webhook path
pays nothing. Observers run inside the webhook, so keep them quick; one that raises is
logged and skipped, and the call goes on as if nobody watched.

    class Counter(CallObserver):
        def trigger_taken(self, flow, source, trigger, dest, call_sid):
            counts[trigger] += 1

    observers.add(Counter())
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ivrkit.flow import Flow

log = logging.getLogger("ivrkit.observers")

RETRY_TRIGGERS = frozenset({"no_input", "no_match", "reenter"})
"""Triggers that ask the caller again in the same state."""
GIVE_UP_TRIGGER = "give_up"
SUBFLOW_TRIGGER = "enter"
"""A hand-off to a sub-flow: ``dest`` is then the other flow's name."""


class CallObserver:
    """Base of an observer: override what you need; every method does nothing here."""

    def flows_loaded(self, flows: Iterable[type[Flow]]) -> None:
        """An app (or a registry) was built over these flows."""

    def state_entered(self, flow: type[Flow], state: str, call_sid: str) -> None:
        """The call reached ``state`` (it may pass through it within the same webhook)."""

    def trigger_taken(
        self, flow: type[Flow], source: str, trigger: str, dest: str, call_sid: str
    ) -> None:
        """The call moved from ``source`` by ``trigger`` to ``dest`` (which may be ``source``)."""

    def retried(self, flow: type[Flow], state: str, trigger: str, call_sid: str) -> None:
        """The caller is asked again in ``state`` after ``trigger`` (no_input, no_match...)."""

    def gave_up(self, flow: type[Flow], state: str, dest: str, call_sid: str) -> None:
        """``state`` ran out of retries and sent the call to ``dest``."""


ACTIVE: tuple[CallObserver, ...] = ()
"""The registered observers, in the order they were added (a tuple: cheap to test empty)."""


def add(observer: CallObserver) -> None:
    global ACTIVE
    if observer not in ACTIVE:
        ACTIVE = (*ACTIVE, observer)


def remove(observer: CallObserver) -> None:
    global ACTIVE
    ACTIVE = tuple(active for active in ACTIVE if active is not observer)


def flows_loaded(flows: Iterable[type[Flow]]) -> None:
    loaded = list(flows)
    for observer in ACTIVE:
        _tell(observer, observer.flows_loaded, loaded)


def state_entered(flow: type[Flow], state: str, call_sid: str) -> None:
    for observer in ACTIVE:
        _tell(observer, observer.state_entered, flow, state, call_sid)


def trigger_taken(flow: type[Flow], source: str, trigger: str, dest: str, call_sid: str) -> None:
    """Report a move, and the retry or give-up it stands for."""
    for observer in ACTIVE:
        _tell(observer, observer.trigger_taken, flow, source, trigger, dest, call_sid)
        if trigger in RETRY_TRIGGERS:
            _tell(observer, observer.retried, flow, source, trigger, call_sid)
        elif trigger == GIVE_UP_TRIGGER:
            _tell(observer, observer.gave_up, flow, source, dest, call_sid)


def _tell(observer: CallObserver, method: Callable[..., None], *args: Any) -> None:
    try:
        method(*args)
    except Exception:  # an observer's bug must not cost the caller the call
        log.exception(
            "observer %s failed in %s; the call goes on without it",
            type(observer).__name__,
            method.__name__,
        )
