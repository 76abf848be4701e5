"""Caller secrets: never in the database, the log, the event log, ``ivrkit events`` or last_twiml.

The walk goes through the real app (HTTP via the ASGI transport) on a real SQLite file and a
real PostgreSQL server; afterwards the test reads what a thief of the disk, the logs or the
event export would read, and looks for the account number and the PIN.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from flows.account_pin import AccountPin
from ivrkit import (
    Collect,
    ConfigError,
    Flow,
    FlowDefinitionError,
    FlowRuntimeError,
    Hangup,
    Menu,
    Say,
    Settings,
    create_app,
    matches,
    reveal,
)
from ivrkit.cli import main
from ivrkit.secret_rules import looks_secret, secret_findings
from ivrkit.sensitive import KEY_ENV, Keyring
from ivrkit.store import create_store
from tests.conftest import phone
from tests.driver import TOKEN

ACCOUNT = "87654321"
PIN = "1111"
SPOKEN_ACCOUNT = "eight seven six five four three two one"
FLOW_FILE = str(Path(__file__).parents[1] / "flows" / "account_pin.py")
# Text that is random by construction (tokens, salts, sids, timestamps) may hold any run of
# digits; it is cut out before looking for the 4-digit PIN, so the test cannot flake.
RANDOM_TEXT = re.compile(
    r"fernet:[A-Za-z0-9_\-=]+|hmac-sha256:[0-9a-f:]+|[0-9A-Za-z]{12,}|"
    r"\d{4}-\d\d-\d\d[ T][\d:.+]+"
)


def leaks(found: str) -> list[str]:
    """Which forms of the caller's secrets appear in ``found``."""
    forms = [ACCOUNT, ", ".join(ACCOUNT), SPOKEN_ACCOUNT]
    hits = [form for form in forms if form in found]
    if PIN in RANDOM_TEXT.sub(" ", found) or ", ".join(PIN) in found:
        hits.append(PIN)
    return hits


async def database_text(url: str) -> str:
    """Everything the store holds, as a thief of its files would read it."""
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        files = sorted(path.parent.glob(path.name + "*"))  # the file, its -wal and -shm
        assert files, f"no database file at {path}"
        return "\n".join(file.read_bytes().decode("latin-1") for file in files)
    store = create_store(url)
    try:
        async with store.engine.connect() as conn:
            tables = (
                await conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = current_schema()"
                    )
                )
            ).scalars()
            rows = []
            for table in list(tables):
                found = await conn.execute(text(f'SELECT CAST(t AS text) FROM "{table}" t'))
                rows += [f"{table}: {row}" for row in found.scalars()]
    finally:
        await store.close()
    assert any("ivrkit_calls" in row for row in rows), "the dump missed the calls table"
    return "\n".join(rows)


async def test_account_pin_walk_leaves_no_secret_anywhere(
    serve: Any, database_url: str, caplog: pytest.LogCaptureFixture, capsys: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve([AccountPin]) as (app, client):
        call = phone(client, "account_pin")
        await call.start()
        spoken = await call.speak(SPOKEN_ACCOUNT)
        assert "8, 7, 6, 5, 4, 3, 2, 1" in spoken.said()[0]
        await call.press("2")  # enter it again, by keypad this time
        url = call._action("Gather")
        readback = await call.press(ACCOUNT)
        heard = (
            "You entered 8, 7, 6, 5, 4, 3, 2, 1. Press 1 if that is right, or 2 to enter it again."
        )
        assert readback.said() == [heard]

        # What is stored of that answer is masked, and the entry awaits confirmation sealed.
        record = await app.state.ivr.store.load(call.sid)
        assert "You entered ****." in record.last_twiml
        assert record.counters["pending"].startswith("fernet:")

        # Twilio retries the read-back webhook: the caller hears the same question again.
        retried = await call.post(url, Digits=ACCOUNT)
        assert retried.body == readback.body

        assert (await call.press("1")).said() == ["Please enter your four digit PIN."]
        assert (await call.press("0000")).said()[0] == "That PIN is not right."
        done = await call.press(PIN)
        assert done.said() == ["Thank you, you are verified."]
        record = await app.state.ivr.store.load(call.sid)
        assert reveal(record.data["account"]) == ACCOUNT
        assert record.data["pin_ok"] is True
        assert leaks(record.last_twiml) == []
        while_running = await database_text(database_url)

    after_close = await database_text(database_url)
    assert await asyncio.to_thread(main, ["events", call.sid, "--database-url", database_url]) == 0
    exported = capsys.readouterr().out
    events = [json.loads(line) for line in exported.splitlines()]
    assert [event["params"].get("Digits") for event in events if event["state"] == "account"] == [
        None,  # the spoken entry
        "****",
        "****",
        "****",  # the retried webhook
        "****",
    ]
    assert [e["params"]["SpeechResult"] for e in events if "SpeechResult" in e["params"]] == [
        "****"
    ]
    assert "0000" not in RANDOM_TEXT.sub(" ", exported)  # the wrong PIN is a secret too
    assert leaks(while_running) == []
    assert leaks(after_close) == []
    assert leaks(caplog.text) == []
    assert leaks(" ".join(str(record.args) for record in caplog.records)) == []
    assert leaks(exported) == []


class Lounge(Flow):
    give_up = "bye"
    """A menu (its keys stay visible) before a PIN kept as a salted hash."""

    seen: list[str] = []

    menu = Menu("Press 1 to sign in.", choices={"1": "pin"})
    pin = Collect(
        "Your PIN, please.",
        digits=4,
        validate=lambda value, call: Lounge.seen.append(value) is None,
        save_as="pin",
        keep="hash",
        then="bye",
    )
    bye = Say("Welcome.", then=Hangup())


async def test_hash_keeps_a_salted_comparable_digest_and_menu_keys_stay_visible(
    serve: Any, database_url: str
) -> None:
    Lounge.seen.clear()
    async with serve([Lounge]) as (app, client):
        digests = []
        for _ in range(2):
            call = phone(client, "lounge")
            await call.start()
            await call.press("1")
            assert (await call.press("2468")).said() == ["Welcome."]
            digests.append((await app.state.ivr.store.load(call.sid)).data["pin"])
        events = await app.state.ivr.store.call_events(call.sid)
    assert Lounge.seen == ["2468", "2468"]  # the validator gets the clear value
    assert all(matches(digest, "2468") for digest in digests)
    assert not matches(digests[0], "2469")
    assert digests[0] != digests[1]  # salted: equal PINs do not give equal strings
    assert [event.params.get("Digits") for event in events] == [None, "1", "****"]


async def test_flow_level_list_marks_a_collect_by_its_save_as_key(serve: Any) -> None:
    class Survey(Flow):
        give_up = "bye"
        sensitive = ("card_number",)
        card = Collect("Your card number.", digits=(12, 19), save_as="card_number", then="bye")
        bye = Say("Thanks.", then=Hangup())

    async with serve([Survey]) as (app, client):
        call = phone(client, "survey")
        await call.start()
        await call.press("4111111111111111")
        record = await app.state.ivr.store.load(call.sid)
        events = await app.state.ivr.store.call_events(call.sid)
    assert record.data == {"card_number": True}  # the default keep: only the verdict
    assert events[-1].params["Digits"] == "****"


class Vault(Flow):
    give_up = "bye"
    pin = Collect(
        "PIN?", digits=4, sensitive=True, confirm="You said {value}.", save_as="pin", then="bye"
    )
    bye = Say("Bye.", then=Hangup())


def test_a_missing_or_short_key_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", auth_token=TOKEN)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(
        ConfigError, match=r"AccountPin\.account .*keep=\"encrypted\".*IVRKIT_SECRET_KEY is not set"
    ):
        create_app([AccountPin], settings=settings)
    with pytest.raises(ConfigError, match=r"Vault\.pin .*confirms the read-back"):
        create_app([Vault], settings=settings)
    monkeypatch.setenv(KEY_ENV, "too-short")
    with pytest.raises(ConfigError, match="shorter than 32 characters"):
        create_app([Vault], settings=settings)

    class Verdict(Flow):  # no read-back, no hash, no cipher: no key needed
        give_up = "bye"
        pin = Collect("PIN?", digits=4, sensitive=True, save_as="pin", then="bye")
        bye = Say("Bye.", then=Hangup())

    monkeypatch.delenv(KEY_ENV)
    assert create_app([Verdict], settings=settings) is not None


def test_definition_mistakes_are_named() -> None:
    with pytest.raises(FlowDefinitionError, match='keep: "plain" .*expected one of "verdict"'):

        class Plain(Flow):
            give_up = "bye"
            pin = Collect("PIN?", save_as="pin", then="bye", keep="plain")
            bye = Say("Bye.", then=Hangup())

    class Typo(Flow):
        give_up = "bye"
        sensitive = ("pn",)
        pin = Collect("PIN?", save_as="pin_ok", then="bye")
        bye = Say("Bye.", then=Hangup())

    class Text(Flow):
        give_up = "bye"
        sensitive = "pin"  # type: ignore[assignment]
        pin = Collect("PIN?", save_as="pin_ok", then="bye")
        bye = Say("Bye.", then=Hangup())

    with pytest.raises(FlowRuntimeError) as found:
        create_app([Typo, Text], settings=Settings(auth_token=TOKEN))
    assert "Typo.sensitive names 'pn', which is neither" in str(found.value)
    assert "(known: pin, pin_ok)" in str(found.value)
    assert "Text.sensitive is the text 'pin'; write a tuple" in str(found.value)


def test_kept_values_refuse_the_wrong_key_and_the_wrong_kind() -> None:
    ours, theirs = Keyring("k" * 32), Keyring("t" * 32)
    sealed = ours.seal("12345678")
    assert ours.reveal(sealed) == "12345678"
    with pytest.raises(FlowRuntimeError, match="encrypted under another IVRKIT_SECRET_KEY"):
        theirs.reveal(sealed)
    with pytest.raises(FlowRuntimeError, match="reads keep='encrypted' values only"):
        ours.reveal("12345678")
    with pytest.raises(FlowRuntimeError, match="is not a keep='hash' value"):
        ours.matches(sealed, "12345678")
    assert not theirs.matches(ours.digest("1234"), "1234")


def test_serve_refuses_to_start_without_the_key_and_check_warns_of_secrets_in_clear(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv(KEY_ENV)
    assert main(["serve", FLOW_FILE, "--insecure-dev"]) == 2
    refused = capsys.readouterr().err
    assert refused.startswith("ivrkit: ")
    assert "AccountPin.account" in refused
    assert "IVRKIT_SECRET_KEY is not set" in refused
    assert "Traceback" not in refused

    # ivrkit check needs no key, and finds nothing to say about account_pin now ...
    assert main(["check", FLOW_FILE]) == 0
    assert capsys.readouterr().out == "0 error(s), 0 warning(s)\n"
    # ... but warns about a PIN collected in clear.
    assert secret_findings(AccountPin) == []
    assert [f.state for f in secret_findings(Lounge)] == []
    (finding,) = secret_findings(Clear)
    assert finding.code == "IVR050"
    assert finding.severity == "warning"
    assert finding.state == "card"
    assert "card_number" in finding.message
    assert finding.fix.startswith("add sensitive=True")
    assert [looks_secret(name) for name in ("pin_ok", "accountnumber", "date", "spinner")] == [
        True,
        True,
        False,
        False,
    ]


class Clear(Flow):
    give_up = "bye"
    card = Collect("Card number?", digits=16, save_as="card_number", then="date")
    date = Collect("Which day?", digits=4, save_as="requested_date", then="bye")
    bye = Say("Bye.", then=Hangup())


async def test_a_changed_key_gets_the_fallback_and_leaves_the_sealed_entry_as_it_was(
    serve: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve([AccountPin]) as (app, client):
        call = phone(client, "account_pin")
        await call.start()
        await call.press(ACCOUNT)
        before = await app.state.ivr.store.load(call.sid)
        sealed, step = before.counters["pending"], before.step
        monkeypatch.setenv(KEY_ENV, "a-new-key-that-did-not-seal-the-entry")
        answer = await call.press("1")
        assert answer.status == 200
        assert answer.verbs[-1] in ("Dial", "Hangup")  # the flow's apology and fallback
        assert "encrypted under another IVRKIT_SECRET_KEY" in caplog.text
        after = await app.state.ivr.store.load(call.sid)
    assert (after.step, after.counters["pending"]) == (step, sealed)
    assert leaks(caplog.text) == []
