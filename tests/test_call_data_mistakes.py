"""A flow that puts into call.data what the store cannot keep: the caller hears the apology,
one log line names the flow's file, class and state, nothing is saved, and the call goes on."""

from __future__ import annotations

import logging
from typing import Any

from ivrkit import Call, Flow, Hangup, Menu, Retries, Say, decision
from tests.conftest import phone


class Keeper(Flow):
    """Press 1 and the flow keeps a set, which JSON cannot hold."""

    menu = Menu(
        "Press 1.",
        choices={"1": "remember"},
        retries=Retries(give_up="bye"),
    )
    bye = Say("Bye.", then=Hangup())

    @decision
    def remember(self, call: Call) -> str:
        call.data["seen"] = {"a", "set"}
        return "bye"


async def test_the_flow_is_named_with_its_file_and_the_call_is_not_moved(
    serve: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="ivrkit")
    async with serve([Keeper]) as (app, client):
        call = phone(client, "keeper")
        first = await call.start()
        assert first.said() == ["Press 1."]
        answer = await call.press("1")
        assert answer.status == 200
        assert "sorry" in " ".join(answer.said()).lower()
        record = await app.ivr.store.load(call.sid)
        assert (record.state, record.step) == ("menu", 1)  # nothing of the failed turn saved
        assert "seen" not in record.data
    lines = [r for r in caplog.records if "call.data['seen'] is a set" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].exc_info is None
    message = lines[0].getMessage()
    assert "tests/test_call_data_mistakes.py:" in message
    assert "Keeper.remember" in message or "Keeper.bye" in message
    assert "storage failed" not in caplog.text
