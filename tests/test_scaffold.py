"""`ivrkit new`: the generated flow passes `ivrkit check` and its generated test passes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ivrkit.checker import collect_findings
from ivrkit.cli import main
from ivrkit.scaffold import create


def test_generated_flow_passes_check_and_its_test_passes(tmp_path):
    flow_file, test_file = create("billing_line", root=tmp_path)
    assert flow_file == tmp_path / "flows" / "billing_line.py"
    assert test_file == tmp_path / "tests" / "test_billing_line.py"
    assert "class BillingLine(Flow):" in flow_file.read_text()
    findings, failures = collect_findings([str(flow_file)])
    assert (findings, failures) == ([], [])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ivr-coverage",
         "-o", "asyncio_default_fixture_loop_scope=function", str(test_file)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    assert "billing_line     6/6        10/10   100%" in done.stdout


def test_refuses_to_overwrite(tmp_path, capsys):
    assert main(["new", "billing_line", "--root", str(tmp_path)]) == 0
    assert "created" in capsys.readouterr().out
    before = (tmp_path / "flows" / "billing_line.py").read_text()
    (tmp_path / "flows" / "billing_line.py").write_text(before + "# edited\n")
    assert main(["new", "billing_line", "--root", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "flows" / "billing_line.py").read_text().endswith("# edited\n")


@pytest.mark.parametrize("name", ["BillingLine", "2lines", "class", "billing-line"])
def test_rejects_names_that_are_not_modules(tmp_path, name):
    with pytest.raises(ValueError, match="lower_snake_case"):
        create(name, root=tmp_path)
    assert not (tmp_path / "flows").exists()


def test_generated_files_use_only_the_public_api(tmp_path):
    import ast

    import ivrkit

    for path in create("billing_line", root=tmp_path):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ivrkit"):
                assert node.module == "ivrkit", f"{path.name} imports {node.module}"
                assert {alias.name for alias in node.names} <= set(ivrkit.__all__), path.name
