"""`ivrkit check`, `graph` and `prompts` agree: the same flows load, the same IVR010 findings
with file and line for every missing sub-flow, paths printed relative to the current folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivrkit.cli import main

PARENT = """
from ivrkit import Flow, Hangup, Say, SubFlow


class Parent(Flow):
    welcome = Say("Welcome.", then="verify")
    verify = SubFlow("account_pin", then="billing")
    billing = SubFlow("billing_line", then="bye")
    bye = Hangup()
"""

BILLING = """
from ivrkit import Flow, Hangup, Return, Say


class BillingLine(Flow):
    hello = Say("Billing.", then=Return())
"""

FAILING_IMPORT = """
import no_such_module_anywhere
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder, made the current directory: parent.py alone in flows/."""
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "parent.py").write_text(PARENT)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "billing.py").write_text(BILLING)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def ivr010(lines: list[str]) -> list[str]:
    return [line for line in lines if "IVR010" in line]


def test_check_reports_every_missing_subflow_with_file_and_line(project, capsys):
    assert main(["check", "flows"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert ivr010(lines) == [
        'flows/parent.py:7: IVR010 error: Parent.verify: sub-flow "account_pin" is not loaded '
        '(loaded: parent) (load the module that defines the flow named "account_pin" too, e.g. '
        "give the whole folder)",
        'flows/parent.py:8: IVR010 error: Parent.billing: sub-flow "billing_line" is not loaded '
        '(loaded: parent) (load the module that defines the flow named "billing_line" too, e.g. '
        "give the whole folder)",
    ]
    assert lines[-1] == "2 error(s), 0 warning(s)"


def test_check_json_and_github_carry_the_location(project, capsys):
    assert main(["check", str(project / "flows"), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failures"] == []
    assert [(f["code"], f["file"], f["line"], f["state"]) for f in data["findings"]] == [
        ("IVR010", "flows/parent.py", 7, "verify"),
        ("IVR010", "flows/parent.py", 8, "billing"),
    ]
    assert main(["check", "flows", "--format", "github"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split("::")[1] for line in out] == [
        "error file=flows/parent.py,line=7,title=IVR010",
        "error file=flows/parent.py,line=8,title=IVR010",
    ]


def test_loading_the_other_module_too_resolves_the_subflow(project, capsys):
    assert main(["check", "flows", "other/billing.py", "--format", "json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [(f["code"], f["state"]) for f in findings] == [("IVR010", "verify")]


def test_graph_refuses_a_subflow_that_is_not_loaded_as_check_does(project, capsys):
    assert main(["graph", "flows/parent.py"]) == 2
    err = capsys.readouterr().err
    assert ivr010(err.splitlines()) == [
        '  flows/parent.py:7: IVR010 error: Parent.verify: sub-flow "account_pin" is not loaded '
        '(loaded: parent) (load the module that defines the flow named "account_pin" too, e.g. '
        "give the whole folder)",
        '  flows/parent.py:8: IVR010 error: Parent.billing: sub-flow "billing_line" is not loaded '
        '(loaded: parent) (load the module that defines the flow named "billing_line" too, e.g. '
        "give the whole folder)",
    ]


def test_graph_takes_several_modules_and_folders_and_links_them(project, capsys):
    account_pin = Path(__file__).resolve().parents[1] / "flows" / "account_pin.py"
    assert main(["graph", "flows", "other", str(account_pin)]) == 0
    out = capsys.readouterr().out
    assert 'parent_verify ==>|"enter"| account_pin_' in out
    assert 'parent_billing ==>|"enter"| billing_line_hello' in out
    assert "flow:" not in out  # no box for a flow that was not loaded


def test_graph_class_selector_counts_the_other_modules_as_loaded(project, capsys):
    account_pin = Path(__file__).resolve().parents[1] / "flows" / "account_pin.py"
    assert main(["graph", "flows/parent.py:Parent", "other", str(account_pin)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart TD\n")
    assert "billing_line_hello" in out


def test_prompts_takes_folders_and_refuses_a_missing_subflow(project, capsys):
    assert main(["prompts", "flows"]) == 2
    assert len(ivr010(capsys.readouterr().err.splitlines())) == 2
    account_pin = Path(__file__).resolve().parents[1] / "flows" / "account_pin.py"
    assert main(["prompts", "flows", "other", str(account_pin), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["flow"] for row in rows} == {"parent", "billing_line", "account_pin"}


def test_paths_are_printed_relative_to_the_current_folder(project, capsys):
    (project / "flows" / "broken_import.py").write_text(FAILING_IMPORT)
    assert main(["check", str(project / "flows" / "broken_import.py")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("flows/broken_import.py: import failed: ModuleNotFoundError")
    assert str(project) not in out
    assert main(["graph", str(project / "flows" / "parent.py:Nope")]) == 2
    err = capsys.readouterr().err
    assert "ivrkit graph: flows/parent.py: no flow 'Nope' (flows there: Parent)" in err
    assert main(["prompts", str(project / "nowhere")]) == 2
    assert capsys.readouterr().err == "ivrkit prompts: nowhere: no such file or folder\n"


def test_the_app_refuses_with_the_same_findings(project):
    from ivrkit.errors import FlowRuntimeError
    from ivrkit.loader import load_flows
    from ivrkit.runtime import FlowRegistry

    with pytest.raises(FlowRuntimeError) as refused:
        FlowRegistry(load_flows(["flows"]))
    message = str(refused.value)
    assert message.startswith("flows/parent.py:7: IVR010 error: Parent.verify: ")
    assert "; flows/parent.py:8: IVR010 error: Parent.billing: " in message


def test_check_names_two_flows_sharing_a_name_without_the_runtime(project, capsys):
    copy = BILLING.replace(
        "class BillingLine(Flow):", 'class Billing2(Flow):\n    name = "billing_line"'
    )
    (project / "other" / "billing_copy.py").write_text(copy)
    assert main(["check", "other"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert (
        "other/billing_copy.py:5: Billing2 and BillingLine are both named 'billing_line'; "
        "set name = ... on one"
    ) in out
