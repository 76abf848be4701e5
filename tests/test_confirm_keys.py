"""Read-back confirmation keys are Collect's parameters (issue 14, finding 4).

``confirm_key`` accepts the entry and ``retry_key`` asks for it again; the defaults stay "1"
and "2". The read-back Gather offers the two keys as speech hints when speech is on.
"""

from __future__ import annotations

import pytest

from ivrkit import Collect, Flow, FlowDefinitionError, Hangup, Retries, Say
from tests.conftest import phone

READ_BACK = "You entered {value}. Press 9 if that is right, or 7 to enter it again."


class Refill(Flow):
    rx = Collect(
        "Enter your prescription number.",
        save_as="rx",
        digits=4,
        input="dtmf speech",
        confirm=READ_BACK,
        confirm_key="9",
        retry_key="7",
        retries=Retries(give_up="bye"),
        then="done",
    )
    done = Say(lambda call: f"Refilling {call.data['rx']}.", then="bye")
    bye = Hangup()


class DefaultKeys(Flow):
    rx = Collect(
        "Enter your prescription number.",
        save_as="rx",
        digits=4,
        confirm="You entered {value}. Press 1 if right, 2 to retry.",
        retries=Retries(give_up="bye"),
        then="done",
    )
    done = Say(lambda call: f"Refilling {call.data['rx']}.", then="bye")
    bye = Hangup()


async def test_confirm_key_accepts_and_the_hints_name_the_keys(serve):
    async with serve([Refill]) as (_, client):
        call = phone(client, "refill")
        await call.start()
        read_back = await call.press("1234")
        assert read_back.said() == [READ_BACK.format(value="1, 2, 3, 4")]
        gather = read_back.find("Gather")
        assert (gather.attrib["numDigits"], gather.attrib["hints"]) == ("1", "nine, seven")
        wrong = await call.press("1")  # the default confirm key means nothing here
        assert wrong.said()[0] == "Sorry, that is not a valid choice."
        done = await call.press("9")
        assert done.said() == ["Refilling 1234."]


async def test_retry_key_asks_again_and_speech_says_the_key(serve):
    async with serve([Refill]) as (_, client):
        call = phone(client, "refill")
        await call.start()
        await call.press("1234")
        again = await call.press("7")
        assert again.said() == ["Enter your prescription number."]
        await call.press("5678")
        done = await call.speak("nine")
        assert done.said() == ["Refilling 5678."]


async def test_defaults_stay_one_and_two(serve):
    async with serve([DefaultKeys]) as (_, client):
        call = phone(client, "default_keys")
        await call.start()
        await call.press("1234")
        again = await call.press("2")
        assert again.said() == ["Enter your prescription number."]
        await call.press("4321")
        assert (await call.press("1")).said() == ["Refilling 4321."]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"confirm_key": 1}, 'confirm_key: 1 is an int (expected one key: 0-9, * or #)'),
        ({"retry_key": "22"}, 'retry_key: "22" is a str (expected one key: 0-9, * or #)'),
        ({"confirm_key": "3", "retry_key": "3"},
         'retry_key: "3" is also the confirm_key (give them different keys)'),
        ({"confirm_key": "#"}, 'confirm_key: "#" is also the finish_on_key, so pressing it '
         "sends nothing (pick another key or another finish_on_key)"),
    ],
)  # fmt: skip
def test_confirm_keys_are_checked_at_definition(keys, message):
    with pytest.raises(FlowDefinitionError) as caught:

        class Wrong(Flow):
            rx = Collect("Enter.", save_as="rx", confirm="You said {value}.", then="bye", **keys)
            bye = Hangup()

    (finding,) = caught.value.findings
    assert (finding.code, finding.state) == ("IVR000", "rx")
    assert f"{finding.message} ({finding.fix})" == message
