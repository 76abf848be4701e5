"""A campaign's failure paths: the request in doubt, an unreachable API, outcomes that cannot
be read for a while, a runner cancelled mid-way or taken for dead, bad files."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time

import pytest

from ivrkit.outbound.calling_hours import CallingHours
from ivrkit.outbound.campaign import Campaign, CampaignSettings
from ivrkit.outbound.contacts import ContactsError, read_contacts, read_do_not_call
from ivrkit.outbound.dialer import DialOutcome, DialUnknown, Unreachable
from tests.campaign_phones import ScriptedPhones, numbers
from tests.test_campaign import ALWAYS, FAST, contacts, run, store  # noqa: F401 (fixture)


async def test_a_request_without_an_answer_is_never_placed_again(store):  # noqa: F811
    doubtful, fine = numbers(2)
    phones = ScriptedPhones(errors={doubtful: [DialUnknown("read timed out")]})
    _, report = await run(store, phones, contacts([doubtful, fine]), max_retries=3)
    results = {r["number"]: r for r in await store.results(report.campaign_id)}
    assert results[doubtful]["outcome"] == "unknown"
    assert "may exist" in results[doubtful]["detail"]
    assert [n for n, _ in phones.requests].count(doubtful) == 1
    assert phones.placed_to() == [fine]


async def test_an_unreachable_api_stops_the_campaign_and_loses_nobody(store):  # noqa: F811
    people = numbers(3)
    phones = ScriptedPhones(errors={people[0]: [Unreachable("connection refused")]})
    _, report = await run(store, phones, contacts(people), max_in_progress=1)
    assert "connection refused" in (report.stop_reason or "")
    assert report.counts["pending"] == 3
    await store.reopen_campaign(report.campaign_id, datetime.now(UTC))
    _, again = await run(store, phones, contacts(people))
    assert again.finished
    assert sorted(phones.placed_to()) == sorted(people)


class FlakyOutcomes(ScriptedPhones):
    """The store behind ``outcome`` fails its first reads."""

    failures: int = 5

    async def outcome(self, call_sid: str) -> DialOutcome | None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store unavailable")
        return await super().outcome(call_sid)


async def test_outcomes_that_cannot_be_read_for_a_while_are_read_later(store, caplog):  # noqa: F811
    phones = FlakyOutcomes()
    _, report = await run(store, phones, contacts(numbers(2)))
    assert report.finished
    assert report.counts["done:completed"] == 2
    assert phones.failures == 0
    assert "reading the outcome" in caplog.text


async def test_a_cancelled_runner_gives_back_what_it_claimed(store):  # noqa: F811
    people = numbers(20)
    phones = ScriptedPhones(duration=0.05)
    campaign = Campaign(
        store,
        phones,
        name="cancelled",
        flow="appointment_reminder",
        from_="+15005550006",
        settings=CampaignSettings(**{**FAST, "calling_hours": ALWAYS, "calls_per_second": 50.0}),
    )
    await campaign.load(contacts(people))
    running = asyncio.create_task(campaign.run())
    while len(phones.calls) < 3:
        await asyncio.sleep(0.005)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    counts = await store.counts(campaign.campaign_id)
    assert counts.get("claimed", 0) == 0  # released on the way out
    assert counts.get("requesting", 0) == 0
    _, report = await run(store, phones, contacts(people), name="cancelled")
    assert report.finished
    assert sorted(phones.placed_to()) == sorted(people)


async def test_a_runner_taken_for_dead_stops_placing(store):  # noqa: F811
    people = numbers(30)
    phones = ScriptedPhones(duration=0.05)
    campaign = Campaign(
        store,
        phones,
        name="presumed-dead",
        flow="appointment_reminder",
        from_="+15005550006",
        settings=CampaignSettings(
            **{**FAST, "calling_hours": ALWAYS, "calls_per_second": 40.0, "heartbeat": 0.05}
        ),
    )
    await campaign.load(contacts(people))
    running = asyncio.create_task(campaign.run())
    while len(phones.calls) < 3:
        await asyncio.sleep(0.005)
    # Another runner decided this one was dead (its heartbeat too late) and took over.
    await store.recover(campaign.campaign_id, "other-runner", datetime.now(UTC), stale_after=-1)
    report = await asyncio.wait_for(running, 10)
    assert "taken over" in (report.stop_reason or "")
    assert len(phones.calls) < 30
    assert len(set(phones.placed_to())) == len(phones.calls)


def test_a_contacts_file_names_every_bad_line(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text(
        "number,time_zone,name\n"
        "+14155550100,America/New_York,Ann\n"
        "555-0100,,Bob\n"
        "+14155550101,Mars/Olympus,Cy\n"
        "+14155550100,,Ann again\n"
    )
    with pytest.raises(ContactsError) as raised:
        read_contacts(path, default_time_zone="UTC")
    problems = raised.value.problems
    assert len(problems) == 3
    assert problems[0].startswith(f"{path}:3: number")
    assert "E.164" in problems[0]
    assert problems[1].startswith(f"{path}:4: time_zone")
    assert "Mars/Olympus" in problems[1]
    assert problems[2].startswith(f"{path}:5:")
    assert "already on line 2" in problems[2]
    assert "0100" not in problems[0]  # numbers masked in messages


def test_contacts_data_and_default_zone(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text("number,appointment\n+14155550100,Monday at 9\n")
    (person,) = read_contacts(path, default_time_zone="America/Chicago")
    assert (person.row, person.time_zone, person.data) == (
        2,
        "America/Chicago",
        {"appointment": "Monday at 9"},
    )
    missing = tmp_path / "bad.csv"
    missing.write_text("phone\n+14155550100\n")
    with pytest.raises(ContactsError, match="needs a 'number' column"):
        read_contacts(missing, default_time_zone="UTC")


def test_do_not_call_file(tmp_path):
    path = tmp_path / "dnc.txt"
    path.write_text("# opted out\n+14155550100\n\n+14155550101,2026-01-02\n")
    assert read_do_not_call(path) == {"+14155550100", "+14155550101"}
    path.write_text("0100\n")
    with pytest.raises(ContactsError, match=":1: "):
        read_do_not_call(path)


def test_calling_hours_in_the_callees_zone_across_a_dst_change():
    hours = CallingHours(time(9), time(20), days=frozenset(range(5)))  # weekdays
    # Friday 2026-03-06 21:00 in New York: closed; next opening Monday 9:00 EDT (13:00 UTC),
    # after the clocks went forward on Sunday the 8th.
    friday_night = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)
    assert not hours.allows(friday_night, "America/New_York")
    assert hours.next_opening(friday_night, "America/New_York") == datetime(
        2026, 3, 9, 13, 0, tzinfo=UTC
    )
    assert hours.allows(datetime(2026, 3, 9, 13, 0, tzinfo=UTC), "America/New_York")
    assert not hours.allows(datetime(2026, 3, 9, 13, 0, tzinfo=UTC), "Asia/Tokyo")  # 22:00
    with pytest.raises(ValueError, match="end .* before they start"):
        CallingHours(time(20), time(9))
    with pytest.raises(ValueError, match="write e.g. 09:00-20:00"):
        CallingHours.parse("9am-8pm")


async def test_a_placed_call_whose_record_fails_at_first_is_recorded_on_a_retry(
    store,  # noqa: F811
    monkeypatch,
):
    real = store.placed
    failures = []

    async def flaky(*args, **kwargs):
        if len(failures) < 2:
            failures.append(1)
            raise ConnectionError("database connection lost")
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "placed", flaky)
    monkeypatch.setattr("ivrkit.outbound.campaign.PLACED_RETRIES", (0.01, 0.01, 0.01))
    phones = ScriptedPhones()
    (person,) = numbers(1)
    _, report = await run(store, phones, contacts([person]))
    assert len(failures) == 2
    assert report.counts["done:completed"] == 1
    assert phones.placed_to() == [person]


def test_the_command_names_bad_contact_lines_and_calls_nobody(tmp_path, monkeypatch, capsys):
    from ivrkit.cli import main

    monkeypatch.setenv("IVRKIT_PUBLIC_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("IVRKIT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    contacts_file = tmp_path / "contacts.csv"
    contacts_file.write_text("number,appointment\n+14155550100,Monday\n12345,Tuesday\n")
    status = main(
        ["campaign", "flows/appointment_reminder.py", str(contacts_file), "--from", "+14155550100"]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "fix these lines" in err
    assert f"{contacts_file}:3: number" in err
    assert "Traceback" not in err
    assert not (tmp_path / "calls.db").exists()  # nothing opened, nobody called
