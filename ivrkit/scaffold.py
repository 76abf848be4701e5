"""`ivrkit new NAME`: a new flow module and its test, ready to pass `ivrkit check` and pytest.

The template is the smallest flow a real line needs: a welcome, a menu with separate
no-input / no-match retries and a give-up, a voicemail, and a goodbye. Nothing is overwritten.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

FLOW_TEMPLATE = '''\
"""{title}: welcome, a menu with retries and a give-up, voicemail, goodbye."""

from ivrkit import Flow, Hangup, Menu, Record, Retries, Say


class {cls}(Flow):
    """Who calls this number and why (shown by `ivrkit check` and in graphs)."""

    welcome = Say("Thanks for calling.", then="main_menu")
    main_menu = Menu(
        "For our opening hours press 1. To leave a message press 2.",
        short_prompt="Press 1 for opening hours, or 2 to leave a message.",
        choices={{"1": "hours", "2": "message"}},
        retries=Retries(no_input=3, no_match=3, give_up="message"),
    )
    hours = Say("We are open Monday to Friday, 9 to 5.", then="goodbye")
    message = Record(
        "Please leave a message after the beep, then press pound.",
        finish_on_key="#",
        then="thanks",
        on_empty="goodbye",
    )
    thanks = Say("Thank you, we will call you back.", then="goodbye")
    goodbye = Hangup("Goodbye.")
'''

TEST_TEMPLATE = '''\
"""{cls} end to end with the simulator's in-process phone (the ``phone`` fixture)."""

from pathlib import Path

import pytest
from ivrkit import Settings, create_app, load_flows

FLOW_FILE = Path(__file__).resolve().parents[1] / "flows" / "{name}.py"
TOKEN = "test-auth-token-{name}"
pytestmark = pytest.mark.asyncio


@pytest.fixture
def app(tmp_path):
    """The real app on a fresh SQLite file; the phone fixture starts and stops it."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{{tmp_path / 'calls.db'}}", auth_token=TOKEN
    )
    return create_app(load_flows([str(FLOW_FILE)]), settings=settings)


async def start(phone, app):
    return await phone.call("/voice/{name}", app=app, auth_token=TOKEN).start()


async def test_opening_hours(phone, app):
    call = await start(phone, app)
    call.assert_heard("Thanks for calling.")
    await call.press("1")
    call.assert_heard("We are open Monday to Friday, 9 to 5.")
    assert call.ended


async def test_leave_a_message(phone, app):
    call = await start(phone, app)
    await call.press("2")
    await call.record(12)
    call.assert_heard("Thank you, we will call you back.")
    assert call.ended


async def test_wrong_key_then_no_message(phone, app):
    call = await start(phone, app)
    await call.press("9")
    call.assert_heard("Sorry, that is not a valid choice.")
    await call.press("2")
    await call.record(0)
    call.assert_heard("Goodbye.")
    assert call.ended


async def test_silence_gives_up_to_voicemail(phone, app):
    call = await start(phone, app)
    for _ in range(3):
        await call.timeout()
    assert call.waiting_for == "record"
    call.assert_heard("Sorry, I didn't hear anything.")
'''

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def create(name: str, *, root: str | Path = ".") -> list[Path]:
    """Write ``flows/<name>.py`` and ``tests/test_<name>.py`` under ``root``; return them."""
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ValueError(
            f"{name!r} is not a module name: use lower_snake_case starting with a letter, "
            "e.g. billing_line"
        )
    base = Path(root)
    flow_file = base / "flows" / f"{name}.py"
    test_file = base / "tests" / f"test_{name}.py"
    for path in (flow_file, test_file):
        if path.exists():
            raise FileExistsError(f"{path} already exists; pick another name or delete it first")
    values = {"name": name, "cls": class_name(name), "title": name.replace("_", " ").capitalize()}
    for path, template in ((flow_file, FLOW_TEMPLATE), (test_file, TEST_TEMPLATE)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    return [flow_file, test_file]
