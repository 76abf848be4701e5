"""`ivrkit check`: every finding in the flows named, as text, JSON or GitHub annotations."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from ivrkit import sensitive
from ivrkit.errors import FlowDefinitionError, FlowLoadError, FlowRuntimeError
from ivrkit.flow import Flow
from ivrkit.loader import flow_files, load_module_flows
from ivrkit.secret_rules import secret_findings
from ivrkit.validation import ERROR, Finding, check_subflows, relative_path


def collect_findings(paths: list[str]) -> tuple[list[Finding], list[str]]:
    """Findings of every flow under ``paths``, and messages for modules that did not load.

    The rules that need all flows at once (IVR010, a sub-flow that is not loaded) run here
    over every flow that loaded, so each missing sub-flow is a finding with its file and line.
    """
    findings: list[Finding] = []
    failures: list[str] = []
    flows: list[type[Flow]] = []
    for path in flow_files(paths):
        try:
            loaded = load_module_flows(path)
        except FlowDefinitionError as error:
            findings += error.findings
            if not error.findings:
                failures += error.problems
            continue
        except FlowLoadError as error:
            failures.append(str(error))
            continue
        flows += loaded
        for flow in loaded:
            findings += flow.findings() + secret_findings(flow)
    findings += check_subflows(flows)
    findings.sort(key=lambda f: (f.severity != ERROR, f.file, f.line))  # errors first
    failures += _shared_names(flows)
    try:  # Flow.sensitive naming no Collect: the app refuses to start on it, so check says so
        sensitive.check_flows(flows)
    except FlowRuntimeError as error:
        failures.append(str(error))
    return findings, failures


def _shared_names(flows: list[type[Flow]]) -> list[str]:
    """Two flows with one name would share a URL and a database name: the app refuses them."""
    first: dict[str, type[Flow]] = {}
    problems: list[str] = []
    for flow in flows:
        other = first.setdefault(flow.name, flow)
        if other is not flow:
            file, line = flow.__ivrkit_source__
            problems.append(
                f"{relative_path(file)}:{line}: {flow.__name__} and {other.__name__} are both "
                f"named {flow.name!r}; set name = ... on one"
            )
    return problems


def run_check(paths: list[str], *, output: str = "text", stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout
    try:
        findings, failures = collect_findings(paths)
    except FlowLoadError as error:
        print(f"ivrkit check: {error}", file=sys.stderr)
        return 2
    if output == "json":
        json.dump(
            {"findings": [f.to_dict() for f in findings], "failures": failures}, stream, indent=2
        )
        stream.write("\n")
    elif output == "github":
        for f in findings:
            level = "error" if f.severity == ERROR else "warning"
            stream.write(
                f"::{level} file={f.file},line={f.line},title={f.code}::"
                f"{f.flow}.{f.state}: {f.message} ({f.fix})\n"
            )
        for failure in failures:
            stream.write(f"::error::{failure}\n")
    else:
        for f in findings:
            stream.write(f.format() + "\n")
        for failure in failures:
            stream.write(failure + "\n")
        errors = sum(f.severity == ERROR for f in findings) + len(failures)
        warnings = sum(f.severity != ERROR for f in findings)
        stream.write(f"{errors} error(s), {warnings} warning(s)\n")
    has_errors = failures or any(f.severity == ERROR for f in findings)
    return 1 if has_errors else 0
