"""`ivrkit prompts`: the catalogue of what callers hear, and the languages it lacks."""

from __future__ import annotations

import csv
import io
import json

from flows.appointment_reminder import AppointmentReminder
from flows.support_line import SupportLine
from ivrkit import Flow, Hangup, Menu, Retries, Say
from ivrkit.cli import main
from ivrkit.prompts import catalogue, flow_rows, to_csv, to_json


def test_support_line_rows_by_state_and_kind():
    rows = flow_rows(SupportLine)
    kinds = [(row.state, row.kind) for row in rows]
    assert kinds == [
        ("welcome", "prompt"),
        ("main_menu", "prompt"),
        ("main_menu", "short_prompt"),
        ("main_menu", "no_input notice"),
        ("main_menu", "no_match notice"),
        ("support_queue", "prompt"),
        ("support_queue", "hold"),
        ("support_queue", "hold"),
        ("assistant", "welcome greeting"),
        ("billing_menu", "prompt"),
        ("billing_menu", "no_input notice"),
        ("billing_menu", "no_match notice"),
        ("balance", "prompt"),
        ("closed", "prompt"),
        ("voicemail", "prompt"),
        ("thanks", "prompt"),
        ("no_message", "prompt"),
        ("goodbye", "prompt"),
        ("", "apology"),
    ]
    hold_music = rows[7]
    assert hold_music.text.endswith("BusyStrings.mp3")
    assert hold_music.language == ""
    assert rows[0].text == "Thanks for calling Acme."
    assert rows[0].language == "en-US"
    assert all(row.missing == "" for row in rows)


def test_computed_text_is_named_not_run():
    (first, *_) = flow_rows(AppointmentReminder)
    assert (first.state, first.kind, first.text) == ("reminder", "prompt", "(computed by <lambda>)")


class Bilingual(Flow):
    languages = ("en-US", "es-MX")
    voice = "Polly.Joanna"
    menu = Menu(
        [Say("Press 1 for English."), Say("Oprima 2 para español.", language="es-MX")],
        short_prompt="Press 1 or 2.",
        choices={"1": "bye", "2": "bye"},
        retries=Retries(give_up="bye"),
    )
    bye = Hangup([Say("Goodbye."), Say("Adiós.", language="es-MX", voice="Polly.Mia")])


def test_prompts_missing_a_declared_language_are_flagged():
    rows = flow_rows(Bilingual)
    flagged = {(row.state, row.kind) for row in rows if row.missing == "es-MX"}
    assert flagged == {
        ("menu", "short_prompt"),
        ("menu", "no_input notice"),
        ("menu", "no_match notice"),
        ("", "apology"),
    }
    spanish = [row for row in rows if row.language == "es-MX"]
    assert [(r.text, r.voice) for r in spanish] == [
        ("Oprima 2 para español.", "Polly.Joanna"),
        ("Adiós.", "Polly.Mia"),
    ]


def test_csv_and_json_hold_the_same_rows():
    rows = catalogue([Bilingual])
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert parsed == json.loads(to_json(rows))
    assert list(parsed[0]) == ["flow", "state", "kind", "text", "language", "voice", "missing"]


def test_cli_prompts_csv_and_json(capsys):
    assert main(["prompts", "flows/support_line.py"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "flow,state,kind,text,language,voice,missing"
    assert lines[1] == "support_line,welcome,prompt,Thanks for calling Acme.,en-US,,"
    assert main(["prompts", "flows/", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["flow"] for row in rows} == {
        "account_pin",
        "appointment_reminder",
        "pay_bill",
        "support_line",
    }


def test_cli_flags_missing_languages_and_strict_fails(tmp_path, capsys):
    module = tmp_path / "bilingual.py"
    module.write_text(
        "from ivrkit import Flow, Say, Hangup\n\n\n"
        "class Bilingual(Flow):\n"
        '    languages = ("en-US", "es-MX")\n'
        '    apology = "Sorry."\n'
        '    hello = Say("Hello.", then=Hangup())\n'
    )
    assert main(["prompts", str(module)]) == 0
    err = capsys.readouterr().err
    assert "ivrkit prompts: bilingual.hello: no prompt in es-MX" in err
    assert main(["prompts", str(module), "--strict"]) == 1
