"""Repeated identical failures are logged once per interval with a count (issue 10, defect 9).

During an outage every webhook failed the same way and logged a full traceback each.
"""

from __future__ import annotations

import logging

from ivrkit import Call, Flow, Hangup, Menu, Retries, decision
from ivrkit.logthrottle import MAX_KINDS, LogThrottle
from tests.conftest import phone
from tests.driver import BASE, TOKEN


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_interval_then_the_count(caplog):
    clock = Clock()
    throttle = LogThrottle(logging.getLogger("t"), interval=10, clock=clock)
    error = OSError("database or disk is full")
    with caplog.at_level(logging.DEBUG, "t"):
        assert throttle.failure("storage", error, "call %s: storage failed", "CA1")
        for n in range(1071):
            clock.now += 0.001
            assert not throttle.failure("storage", error, "call %s: storage failed", f"CA{n}")
        # Another kind is not held back by the first.
        assert throttle.failure("storage", ValueError("x"), "call %s: storage failed", "CA2")
        clock.now += 10
        assert throttle.failure("storage", error, "call %s: storage failed", "CA3")
        throttle.log(logging.WARNING, "refused", "refused %s", "one")
        throttle.log(logging.WARNING, "refused", "refused %s", "two")
        throttle.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "call CA1: storage failed: OSError: database or disk is full",
        "call CA2: storage failed: ValueError: x",
        "call CA3: storage failed: OSError: database or disk is full "
        "(and 1,071 more like it in the last 10 s)",
        "refused one",
        "refused: 1 more like it were not logged in the last 10 s",
    ]
    # The first of each interval carries the traceback, the count line too; refusals none.
    assert [bool(r.exc_info) for r in caplog.records] == [True, True, True, False, False]


def test_a_flood_of_distinct_kinds_does_not_grow_the_memo():
    throttle = LogThrottle(logging.getLogger("t"), clock=Clock())
    for n in range(MAX_KINDS * 3):
        throttle.log(logging.DEBUG, n, "kind %s", n)
    assert len(throttle._kinds) <= MAX_KINDS


class Unsaveable(Flow):
    """Puts a value no codec stores into call data: every save of the call fails."""

    welcome = Menu("Press 1.", choices={"1": "keep"}, retries=Retries(give_up="bye"))
    bye = Hangup()

    @decision("keep", targets=["bye"])
    def keep(self, call: Call) -> str:
        call.data["handle"] = object()
        return "bye"


async def test_a_flows_data_mistake_on_many_calls_logs_one_located_line(serve, caplog):
    async with serve([Unsaveable]) as (_, client):
        calls = [phone(client, "unsaveable") for _ in range(12)]
        for call in calls:
            await call.start()
        with caplog.at_level(logging.INFO, "ivrkit.app"):
            answers = [await call.press("1") for call in calls]
    assert {a.verbs[0] for a in answers} == {"Say"}  # the apology, every time
    mistakes = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and "call.data['handle'] is a object" in r.getMessage()
    ]
    assert len(mistakes) == 1, [r.getMessage() for r in mistakes]
    assert not mistakes[0].exc_info  # the flow's bug, said with its place: no traceback
    assert calls[0].sid in mistakes[0].getMessage()
    assert "tests/test_logthrottle.py:" in mistakes[0].getMessage()
    assert "Unsaveable." in mistakes[0].getMessage()
    assert not any("storage failed" in r.getMessage() for r in caplog.records)
    assert any("11 more like it" in r.getMessage() for r in caplog.records)  # at shutdown


async def test_identical_refusals_log_one_line(serve, caplog):
    async with serve([Unsaveable]) as (_, client):
        with caplog.at_level(logging.WARNING, "ivrkit.app"):
            for _ in range(20):
                response = await client.post(
                    f"{BASE}/voice/unsaveable", data={"CallSid": "CA" + "1" * 32}
                )
                assert response.status_code == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "ivrkit.app"]
    assert len(lines) == 2, lines  # the first, and the count at shutdown
    assert "X-Twilio-Signature missing or wrong" in lines[0]
    assert TOKEN not in lines[0]
    assert "19 more like it" in lines[1]
