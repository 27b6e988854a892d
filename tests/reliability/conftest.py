"""The reliability suite's figures: every scenario records runs, passes and what it measured.

`make reliability` prints them as one table and writes docs/reliability.md; in `make test` the
same scenarios run (at RELIABILITY_SCALE=1) and the table is printed at the end of the run.
"""

import os
import platform
import time

import pytest

RESULTS = []
SCALE = max(1, int(os.environ.get("RELIABILITY_SCALE", "1")))


@pytest.fixture
def scale():
    """How many times bigger than the CI run this run is (RELIABILITY_SCALE)."""
    return SCALE


@pytest.fixture
def figures(request):
    """record(scenario, runs, passed, figure): one row of the table, for this test."""

    def record(scenario, runs, passed, figure):
        RESULTS.append({"scenario": scenario, "runs": runs, "passed": passed,
                        "figure": figure, "test": request.node.nodeid})

    return record


def table():
    head = "| scenario | runs | passed | figure |\n|---|---:|---:|---|\n"
    return head + "".join(
        f"| {r['scenario']} | {r['runs']} | {r['passed']} | {r['figure']} |\n" for r in RESULTS)


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    terminalreporter.write_sep("=", "reliability figures")
    terminalreporter.write(table())
    path = os.environ.get("RELIABILITY_REPORT")
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("# Reliability figures\n\n")
            fh.write(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
                     f"{platform.platform()}, {os.cpu_count()} cores, "
                     f"RELIABILITY_SCALE={SCALE}, by `make reliability`.\n\n")
            fh.write(table())
