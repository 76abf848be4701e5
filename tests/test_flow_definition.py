"""A flow with a mistake fails when it is defined, naming the file, flow, state and fix."""

from __future__ import annotations

import pytest

from ivrkit import Dial, Flow, FlowDefinitionError, Hangup, Menu, Retries, Say, SubFlow
from ivrkit.errors import FlowRuntimeError
from ivrkit.runtime import FlowRegistry


def test_unknown_target_with_did_you_mean():
    with pytest.raises(FlowDefinitionError) as caught:

        class SupportLine(Flow):
            main_menu = Menu(
                "Press 3.", choices={"3": "voicemal"}, retries=Retries(give_up="voicemail")
            )
            voicemail = Hangup()

    message = str(caught.value)
    assert "tests/test_flow_definition.py:" in message
    assert 'SupportLine.main_menu: choice "3" goes to unknown state "voicemal" ' in message
    assert '(did you mean "voicemail"?)' in message
    assert caught.value.findings[0].code == "IVR001"


def test_menu_without_give_up_fails():
    with pytest.raises(FlowDefinitionError, match=r"Retries\(give_up="):

        class NoGiveUp(Flow):
            menu = Menu("Press 1.", choices={"1": "bye"})
            bye = Hangup()


def test_dead_end_prompt_fails():
    with pytest.raises(FlowDefinitionError, match="then leads nowhere"):

        class DeadEnd(Flow):
            hello = Say("Hello.")


def test_dial_without_busy_outcome_fails():
    with pytest.raises(FlowDefinitionError, match="no outcome for busy, no-answer, failed"):

        class Sales(Flow):
            sales = Dial("+15550100")


def test_no_states_fails():
    with pytest.raises(FlowDefinitionError, match="has no states"):

        class Empty(Flow):
            pass


def test_bad_initial_fails():
    with pytest.raises(FlowDefinitionError, match='initial state "wlcome" does not exist'):

        class BadInitial(Flow):
            initial = "wlcome"
            welcome = Say("Hi.", then=Hangup())


def test_loop_without_input_fails():
    with pytest.raises(FlowDefinitionError, match="loops without waiting for the caller"):

        class Spin(Flow):
            a = Say("A.", then="b")
            b = Say("B.", then="a")


def test_unknown_subflow_fails_when_flows_are_registered():
    class Parent(Flow):
        start = SubFlow("missing_flow", then="bye")
        bye = Hangup()

    with pytest.raises(FlowRuntimeError, match='sub-flow "missing_flow" is not loaded'):
        FlowRegistry([Parent])


def test_valid_flow_has_machine_and_version():
    class Fine(Flow):
        menu = Menu("Press 1.", choices={"1": "bye"}, retries=Retries(give_up="bye"))
        bye = Hangup()

    assert Fine.name == "fine"
    assert Fine.machine().fire("menu", "press:1") == "bye"
    assert Fine.machine().fire("menu", "no_input") == "menu"
    assert len(Fine.version()) == 12
    with pytest.raises(FlowRuntimeError):
        Fine.machine().fire("bye", "press:1")


def test_misspelled_dial_and_queue_outcomes_fail_with_the_valid_names():
    from ivrkit import Enqueue

    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            sales = Dial("+15550100", on={"bussy": "voicemail", "*": "voicemail"})
            queue = Enqueue("support", on={"left": "voicemail", "*": "voicemail"})
            voicemail = Hangup()

    assert [f"{f.state}: {f.message} ({f.fix})" for f in caught.value.findings] == [
        'sales: on: Dial outcome "bussy" is not a DialCallStatus (use completed, answered, '
        "busy, no-answer, failed, canceled or '*')",
        'queue: on: Enqueue outcome "left" is not a QueueResult (use bridged, '
        "bridging-in-process, error, hangup, leave, redirected, redirected-from-bridged, "
        "queue-full, system-error or '*')",
    ]
