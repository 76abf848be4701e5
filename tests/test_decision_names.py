"""``@decision`` names the state after the method unless told otherwise (finding 6)."""

from __future__ import annotations

from ivrkit import Call, Flow, Hangup, Say, decision


def test_bare_decorator_names_the_state_after_the_method():
    class Line(Flow):
        welcome = Say("Hi.", then="open_now")
        open_ = Say("We are open.", then="bye")
        closed = Say("We are closed.", then="bye")
        bye = Hangup()

        @decision
        def open_now(self, call: Call) -> str:
            return "open_" if call.data.get("open") else "closed"

    assert Line.state("open_now").targets == ("open_", "closed")
    assert Line.machine().fire("welcome", "next") == "open_now"
    assert Line.findings() == []


def test_empty_call_and_explicit_name():
    class Line(Flow):
        welcome = Say("Hi.", then="route")
        bye = Hangup()

        @decision()
        def route(self, call: Call) -> str:
            return "other"

        @decision("other", targets=["bye"])
        async def pick(self, call: Call) -> str:
            return "bye"

    assert set(Line.states()) == {"welcome", "bye", "route", "other"}
    assert Line.machine().fire("route", "goto:other") == "other"
    assert Line.machine().fire("other", "goto:bye") == "bye"
