"""Where the suite's CPU goes, per test: `XRAYLAKE_TEST_CPU_LOG=cpu.jsonl make test`, then
`python -m tests.cpu_accounting cpu.jsonl` for the modules and tests that cost most.

Wall time says little on two shared cores (a test waits for the others); CPU says what a test costs.
Each test's line holds the CPU of its worker process (`self`), of the subprocesses that worker
reaped during the test (`reaped`: flow-run processes, `prefect deploy`, a stopped server) and the
change in CPU of its live descendants (`live`: the worker's Prefect server, the OpenSearch sandbox,
process workers), read from /proc. A descendant that exits moves its whole life's CPU from `live`
to `reaped`, so only the sum of the three is meaningful, and per module rather than per test.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LOG_VARIABLE = "XRAYLAKE_TEST_CPU_LOG"
_TICKS = os.sysconf("SC_CLK_TCK")


def _descendants_cpu(root: int) -> float:
    """Seconds of CPU (user + system) of every live process below `root`."""
    children: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:  # exited while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
        children[int(fields[1])].append((int(name), (int(fields[11]) + int(fields[12])) / _TICKS))
    total, pending = 0.0, [root]
    while pending:
        for pid, seconds in children.get(pending.pop(), []):
            total += seconds
            pending.append(pid)
    return total


def _sample() -> tuple[float, float, float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        own.ru_utime + own.ru_stime,
        reaped.ru_utime + reaped.ru_stime,
        _descendants_cpu(os.getpid()),
        time.monotonic(),
    )


class CpuAccounting:
    def __init__(self, path: Path) -> None:
        self.path = path

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        before = _sample()
        yield
        after = _sample()
        own, reaped, live, wall = (round(b - a, 2) for a, b in zip(before, after, strict=True))
        line = {"test": item.nodeid, "self": own, "reaped": reaped, "live": live, "wall": wall}
        with self.path.open("a") as log:  # one short append per test: lines of xdist workers stay whole
            log.write(json.dumps(line) + "\n")


def register(config: pytest.Config) -> None:
    """Called from conftest's pytest_configure: accounts CPU when the variable names a file."""
    path = os.environ.get(LOG_VARIABLE)
    if path:
        config.pluginmanager.register(CpuAccounting(Path(path)), "xraylake-cpu-accounting")


def summary(lines: list[dict[str, Any]], top: int = 25) -> str:
    modules: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for line in lines:
        module = modules[line["test"].split("::", 1)[0]]
        module[0] += line["self"] + line["reaped"] + line["live"]
        module[1] += line["wall"]
        module[2] += 1
    total = sum(m[0] for m in modules.values())
    rows = [f"{len(lines)} tests, {total:.0f} s of CPU ({total / 60:.1f} min)", "  cpu s  share  wall s  tests  module"]
    for name, (cpu, wall, count) in sorted(modules.items(), key=lambda kv: -kv[1][0])[:top]:
        rows.append(f"{cpu:7.1f} {cpu / total:6.1%} {wall:7.1f} {int(count):6d}  {name}")
    return "\n".join(rows)


if __name__ == "__main__":
    logged = [json.loads(text) for text in Path(sys.argv[1]).read_text().splitlines() if text.strip()]
    print(summary(logged))
