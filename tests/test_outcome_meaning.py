"""One meaning for Dial and Enqueue outcomes (issue 14, finding 3).

After a successful bridge the caller's call ends, or goes to ``then=``; ``"*"`` stands for
every outcome where the caller is still on the line and was not connected. The calls are
driven by the simulator's phone through the real app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ivrkit import Dial, Enqueue, Flow, Hangup, Record, Say, Settings, create_app
from tests.conftest import OPEN_HOURS
from tests.test_readme import readme_flow

TOKEN = "outcome-meaning-token"


@asynccontextmanager
async def running(flows: list[Any], folder: Path) -> AsyncIterator[Any]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{folder / 'calls.db'}", auth_token=TOKEN)
    app = create_app(flows, settings=settings, clock=lambda: OPEN_HOURS)
    async with app.router.lifespan_context(app):
        yield app


class Kitchen(Flow):
    queue = Enqueue("orders", prompt="Connecting you.", on={"*": "message"})
    message = Record("Leave your message after the beep.", then="bye")
    bye = Hangup("Goodbye.")


class KitchenWithSurvey(Flow):
    queue = Enqueue("orders", on={"*": "message"}, then="survey")
    survey = Say("Thanks for talking to us.", then=Hangup())
    message = Record("Leave your message after the beep.", then=Hangup())


class Sales(Flow):
    sales = Dial("+15005550111", on={"*": "message"})
    message = Record("Leave your message after the beep.", then=Hangup())


async def test_readme_pizza_caller_who_talked_to_the_kitchen_is_not_sent_to_voicemail(
    phone, tmp_path
):
    flow = readme_flow(tmp_path)
    async with running([flow], tmp_path) as app:
        call = await phone.call("/voice/pizza_line", app=app, auth_token=TOKEN).start()
        await call.press("1")
        assert call.waiting_for == "enqueue"
        await call.queue("bridged")
        call.assert_not_heard("Leave your message after the beep.")
        assert call.ended


async def test_readme_pizza_caller_nobody_answered_leaves_a_message(phone, tmp_path):
    flow = readme_flow(tmp_path)
    async with running([flow], tmp_path) as app:
        call = await phone.call("/voice/pizza_line", app=app, auth_token=TOKEN).start()
        await call.press("1")
        await call.queue("queue-full")
        call.assert_heard("Leave your message after the beep.")
        assert call.waiting_for == "record"


@pytest.mark.parametrize("result", ["bridged", "bridging-in-process"])
async def test_enqueue_star_does_not_catch_a_bridge(phone, tmp_path, result):
    async with running([Kitchen], tmp_path) as app:
        call = await phone.call("/voice/kitchen", app=app, auth_token=TOKEN).start()
        await call.queue(result)
        call.assert_not_heard("Leave your message after the beep.")
        assert call.ended


@pytest.mark.parametrize("result", ["leave", "queue-full", "error", "system-error"])
async def test_enqueue_star_catches_every_unsuccessful_result(phone, tmp_path, result):
    async with running([Kitchen], tmp_path) as app:
        call = await phone.call("/voice/kitchen", app=app, auth_token=TOKEN).start()
        await call.queue(result)
        assert call.waiting_for == "record"


def test_enqueue_then_is_only_after_a_bridge_and_a_gone_caller_ends_the_flow():
    node = KitchenWithSurvey.state("queue")
    targets = {r: KitchenWithSurvey.target_name(node.target_for(r), "queue") for r in (
        "bridged", "bridging-in-process", "leave", "queue-full", "error", "system-error",
        "hangup", "redirected", "redirected-from-bridged")}  # fmt: skip
    assert targets["bridged"] == targets["bridging-in-process"] == "survey"
    assert {targets[r] for r in ("leave", "queue-full", "error", "system-error")} == {"message"}
    gone = {targets[r] for r in ("hangup", "redirected", "redirected-from-bridged")}
    assert gone == {"queue>hangup"}
    assert isinstance(KitchenWithSurvey.state("queue>hangup"), Hangup)


def test_enqueue_then_alone_no_longer_covers_the_failures():
    from ivrkit import FlowDefinitionError

    with pytest.raises(FlowDefinitionError) as caught:

        class OldMeaning(Flow):
            queue = Enqueue("orders", then="message")
            message = Record("Leave a message.", then=Hangup())

    (finding,) = [f for f in caught.value.findings if f.code == "IVR012"]
    assert finding.message == (
        "no outcome for error, leave, queue-full, system-error: "
        "then= only follows a finished bridge"
    )
    assert finding.fix.startswith('add on={"*": "message"} for the failures')


@pytest.mark.parametrize(("status", "heard_message"), [
    ("completed", False), ("answered", False),
    ("busy", True), ("no-answer", True), ("failed", True), ("canceled", True),
])  # fmt: skip
def test_dial_star_means_every_unsuccessful_status(status, heard_message):
    node = Sales.state("sales")
    dest = Sales.target_name(node.target_for(status), "sales")
    assert (dest == "message") is heard_message
    assert Sales.machine().fire("sales", f"dial:{status}") == dest


async def test_dial_bridge_ends_the_call_through_the_simulator(phone, tmp_path):
    async with running([Sales], tmp_path) as app:
        call = await phone.call("/voice/sales", app=app, auth_token=TOKEN).start()
        await call.dial("completed")
        call.assert_not_heard("Leave your message after the beep.")
        assert call.ended
