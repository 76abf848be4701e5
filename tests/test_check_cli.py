"""`ivrkit check` on files and folders: text, JSON and GitHub annotations; exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ivrkit.cli import main

BROKEN = """
from ivrkit import Dial, Flow, Hangup, Menu, Retries, Say


class Broken(Flow):
    main_menu = Menu("Press 1.", choices={"1": "sales"}, retries=Retries(give_up="voicemal"))
    sales = Dial("+15550100", on={"failed": "voicemail"})
    voicemail = Hangup()
"""

WARNED = """
from ivrkit import Flow, Hangup, Say


class Warned(Flow):
    welcome = Say("Hi.", then=Hangup())
    orphan = Say("Never heard.", then=Hangup())
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "warned.py").write_text(WARNED)
    return tmp_path


def test_example_flows_are_clean(capsys):
    assert main(["check", "flows/"]) == 0
    assert capsys.readouterr().out == "0 error(s), 0 warning(s)\n"


def test_folder_text_output_and_exit_1(folder, capsys):
    assert main(["check", str(folder)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "2 error(s), 1 warning(s)"
    assert any(
        'IVR001 error: Broken.main_menu: give-up goes to unknown state "voicemal" '
        '(did you mean "voicemail"?)' in line
        for line in lines
    )
    assert any(
        "IVR005 error: Broken.sales: no outcome for busy, no-answer" in line for line in lines
    )
    assert any(line.endswith("warned.py:7: IVR006 warning: Warned.orphan: no path from the initial "
                             "state reaches it (route a choice or outcome to it, or delete it)")
               for line in lines)  # fmt: skip


def test_warnings_alone_exit_0(folder, capsys):
    assert main(["check", str(folder / "warned.py")]) == 0
    assert capsys.readouterr().out.endswith("0 error(s), 1 warning(s)\n")


def test_json_output(folder, capsys):
    assert main(["check", str(folder), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failures"] == []
    assert sorted((f["code"], f["severity"], f["flow"], f["state"]) for f in data["findings"]) == [
        ("IVR001", "error", "Broken", "main_menu"),
        ("IVR005", "error", "Broken", "sales"),
        ("IVR006", "warning", "Warned", "orphan"),
    ]
    assert all(f["line"] > 0 and f["fix"] for f in data["findings"])


def test_github_annotations(folder, capsys):
    assert main(["check", str(folder), "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("::error file=")
    assert ",line=6,title=IVR001::Broken.main_menu: give-up goes to unknown state" in lines[0]
    assert any(line.startswith("::warning file=") and "title=IVR006" in line for line in lines)


def test_installed_command_in_a_subprocess(folder):
    ivrkit = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ivrkit"
    if not ivrkit.exists():
        pytest.skip(f"{ivrkit} is not installed (make install)")
    done = subprocess.run(
        [str(ivrkit), "check", str(folder / "broken.py"), "--format", "github"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.count("::error ") == 2
    graph = subprocess.run(
        [str(ivrkit), "graph", "flows/support_line.py", "--format", "mermaid"],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert graph.returncode == 0
    assert graph.stdout.startswith("flowchart TD\n")
