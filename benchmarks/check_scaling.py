"""How `ivrkit check` scales with a flow's size: load and check chains of 100 to 10,000 states.

Each generated flow is a chain of Menus (key 1 goes on, every menu gives up to the operator);
every tenth menu has no no-match notice and one state is unreachable, so the expected findings
are known: one IVR014 warning per tenth menu and one IVR006. The script fails (exit 1) when a
flow does not load or the findings differ, and prints the time of each size. Timings depend on
the machine: run it on a quiet one and compare sizes, not absolute figures; on a busy
one the CPU time (also printed) is the steadier figure.

    python benchmarks/check_scaling.py            # 100, 1,000 and 10,000 states
    python benchmarks/check_scaling.py 2000 5000  # other sizes
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ivrkit.checker import collect_findings

DEFAULT_SIZES = (100, 1_000, 10_000)


def flow_source(states: int) -> str:
    """A flow module whose class holds ``states`` states in all."""
    menus = states - 3  # plus operator, bye and the unreachable orphan
    lines = [
        "from ivrkit import Dial, Flow, Hangup, Menu, Retries, Say",
        "",
        "",
        f"class Chain{states}(Flow):",
    ]
    for index in range(menus):
        nxt = f"menu_{index + 1}" if index + 1 < menus else "bye"
        no_match = "None" if index % 10 == 0 else '"Sorry, that is not a choice."'
        lines += [
            f"    menu_{index} = Menu(",
            f'        "Menu {index}: press 1 to go on.",',
            f'        choices={{"1": "{nxt}"}},',
            "        retries=Retries(",
            '            give_up="operator",',
            '            no_input_prompt="Sorry, I did not hear anything.",',
            f"            no_match_prompt={no_match},",
            "        ),",
            "    )",
        ]
    lines += [
        '    operator = Dial("+15550199", on={"*": "bye"})',
        '    bye = Say("Goodbye.", then=Hangup())',
        '    orphan = Say("Nobody comes here.", then="bye")',
        "",
    ]
    return "\n".join(lines)


def expected(states: int) -> Counter[str]:
    menus = states - 3
    return Counter({"IVR014": len(range(0, menus, 10)), "IVR006": 1})


def measure(states: int, folder: Path) -> tuple[float, float]:
    """(wall, CPU) seconds to load and check a chain of ``states`` states."""
    path = folder / f"chain_{states}.py"
    path.write_text(flow_source(states))
    started, cpu = time.perf_counter(), time.process_time()
    findings, failures = collect_findings([str(path)])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if failures:
        raise SystemExit(f"{states} states: did not load: {failures}")
    found = Counter(f.code for f in findings)
    if found != expected(states):
        raise SystemExit(
            f"{states} states: findings {dict(found)}, expected {dict(expected(states))}"
        )
    return elapsed, cpu


def main(argv: list[str]) -> int:
    sizes = [int(arg) for arg in argv] or list(DEFAULT_SIZES)
    with tempfile.TemporaryDirectory() as folder:
        for states in sizes:
            elapsed, cpu = measure(states, Path(folder))
            per_state = elapsed / states * 1e6
            print(
                f"{states:>7,} states: load + check {elapsed:7.3f} s ({per_state:,.0f} us/state), "
                f"CPU {cpu:7.3f} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
