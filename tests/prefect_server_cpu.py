"""CPU of one Prefect test-server start (start, /health answers, stop), by the database it starts on:
`python -m tests.prefect_server_cpu [--repeat N]`.

- empty: Prefect's own `prefect_test_harness` (an empty SQLite file the server migrates);
- template: `tests.prefect_db.prefect_harness` (a copy of the template a server set up: migrations
  and block types already there; the server's `alembic upgrade head` and registration find them);
- template-blocks: the same with the server's block-type registration off;
- template-migrate: the same with migrate-on-start off (PREFECT_SERVER_DATABASE_MIGRATE_ON_START).

CPU is this process's plus the reaped server's (resource.getrusage), so the harness's polling counts.
The template's build (one server start and stop on an empty file) is reported once.
"""

from __future__ import annotations

import argparse
import atexit
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime


def measure(harness: Callable[[], AbstractContextManager[object]]) -> tuple[float, float]:
    """(CPU s, wall s) of entering and leaving `harness()`."""
    before, start = cpu(), time.monotonic()
    with harness():
        pass
    return cpu() - before, time.monotonic() - start


@contextmanager
def without_migrations(harness: AbstractContextManager[object]) -> Iterator[object]:
    from prefect.settings import PREFECT_SERVER_DATABASE_MIGRATE_ON_START, temporary_settings

    with temporary_settings(updates={PREFECT_SERVER_DATABASE_MIGRATE_ON_START: False}), harness as server:
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import prefect
    from prefect.testing.utilities import prefect_test_harness

    from tests import prefect_db

    workdir = Path(tempfile.mkdtemp(prefix="prefect-server-cpu-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    before, start = cpu(), time.monotonic()
    template = prefect_db.migrated_template(workdir)
    print(
        f"Prefect {prefect.__version__}: template build (a server start on an empty file): "
        f"{cpu() - before:.1f} s CPU, {time.monotonic() - start:.1f} s wall, {template.stat().st_size} bytes"
    )
    modes: dict[str, Callable[[], AbstractContextManager[object]]] = {
        "empty": lambda: prefect_test_harness(server_startup_timeout=300),
        "template": lambda: prefect_db.prefect_harness(template, 300),
        "template-blocks": lambda: prefect_db.prefect_harness(template, 300, register_blocks=False),
        "template-migrate": lambda: without_migrations(prefect_db.prefect_harness(template, 300)),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
    for round_ in range(args.repeat):
        for name, harness in modes.items():  # interleaved: load changes hit every mode alike
            used, wall = measure(harness)
            results[name].append((used, wall))
            print(f"  round {round_ + 1} {name:17} {used:5.1f} s CPU {wall:5.1f} s wall")
    print(f"{'mode':17} {'CPU median':>10} {'min':>6} {'max':>6} {'wall median':>11}")
    for name, samples in results.items():
        cpus = [c for c, _ in samples]
        print(
            f"{name:17} {statistics.median(cpus):10.1f} {min(cpus):6.1f} {max(cpus):6.1f} "
            f"{statistics.median(w for _, w in samples):11.1f}"
        )


if __name__ == "__main__":
    main()
