"""pytest plugin (entry point ``ivrkit``): flow coverage with ``--ivr-coverage``.

Every flow a test loads into an app (``create_app``, ``FlowRegistry``) is measured: the
states its calls visited and the transitions (key, word, outcome, retry, give-up) they took.
Flows defined inside test modules, or in files outside the project (pytest's rootdir, e.g.
a flow a test wrote to a temporary folder), are fixtures of those tests and are left out.
"""

from __future__ import annotations

import pytest

from ivrkit import coverage

TEST_MODULES = ("test_", "conftest", "tests")
"""Module names (or prefixes of their last part) whose flows are not counted."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ivrkit", "ivrkit flow coverage")
    group.addoption(
        "--ivr-coverage",
        action="store_true",
        default=False,
        help="report which flow states and transitions the tests exercised",
    )
    group.addoption(
        "--ivr-coverage-fail-under",
        type=float,
        default=None,
        metavar="N",
        help="fail the run when flow transition coverage is below N percent",
    )


def _enabled(config: pytest.Config) -> bool:
    return bool(
        config.getoption("--ivr-coverage")
        or config.getoption("--ivr-coverage-fail-under") is not None
    )


def pytest_configure(config: pytest.Config) -> None:
    if _enabled(config):
        config.stash[_RECORDER] = coverage.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RECORDER in config.stash:
        del config.stash[_RECORDER]
        coverage.stop()


_RECORDER = pytest.StashKey[coverage.CoverageRecorder]()
_REPORT = pytest.StashKey[coverage.CoverageReport]()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    recorder = config.stash.get(_RECORDER, None)
    if recorder is None:
        return
    report = recorder.report(exclude=TEST_MODULES, root=config.rootpath)
    config.stash[_REPORT] = report
    threshold = config.getoption("--ivr-coverage-fail-under")
    if threshold is not None and report.percent < threshold and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    report = config.stash.get(_REPORT, None)
    if report is None:
        return
    write = terminalreporter.write_line
    terminalreporter.section("ivrkit flow coverage")
    if not report.flows:
        write("no flows were loaded into an app by these tests")
        return
    write(report.table())
    missed = report.missed_lines()
    if missed:
        write("")
        write("transitions no test took:")
        for line in missed:
            write(f"  {line}")
    threshold = config.getoption("--ivr-coverage-fail-under")
    if threshold is not None:
        verdict = "FAIL" if report.percent < threshold else "ok"
        write("")
        write(
            f"{verdict}: flow transition coverage {report.percent:.1f}% "
            f"(--ivr-coverage-fail-under={threshold:g})"
        )
