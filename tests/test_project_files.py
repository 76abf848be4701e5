"""The Makefile and the build metadata do what the README says."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["PORT=9000"], {}, "--insecure-dev --port 9000"),
        ([], {"IVRKIT_PORT": "9001"}, "--insecure-dev"),  # left to ivrkit serve to read
    ],
)
def test_make_run_passes_the_port(args, env, expected, monkeypatch):
    for name in ("PORT", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"):  # also when make test runs us
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/bin/ivrkit", "run", *args],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    (command,) = [line for line in done.stdout.splitlines() if " serve " in line]
    assert command.startswith(".venv/bin/ivrkit serve flows/support_line.py")
    assert command.rstrip().endswith(expected)


def test_serve_reads_ivrkit_port(monkeypatch):
    from ivrkit.config import Settings

    monkeypatch.setenv("IVRKIT_PORT", "9001")
    assert Settings.from_env().port == 9001


def test_build_metadata_uses_the_current_license_form():
    """A license table made setuptools print ~100 lines of deprecation on every install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert project["build-system"]["requires"] == ["setuptools>=77"]
