"""Shared fixtures: one real sandbox stack per test session (moto server over HTTP + in-memory
OpenSearch), and per-test isolation on top of it (fresh member accounts, queue, bucket, index clone).
"""

from __future__ import annotations

import inspect
import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from blocks import MemberAccount, OpenSearchTarget, Roster
from blocks.config import Config
from sandbox import seed
from sandbox.stack import SandboxStack
from tasks.aws import shared_session

# Modules that take longest, longest first (seconds in a clean-clone `make test`, 2026-12-02 13:12).
# `--dist loadfile` hands whole modules to the workers in collection order, so starting these first
# lets the four workers finish together instead of one running a long module at the end.
LONGEST_MODULES = (
    "tests/deployments/test_deployments.py",  # 506: a served Prefect server, runs, the UI
    "tests/flows/test_sweep_shards.py",  # 292: two process workers
    "tests/deployments/test_definitions.py",  # 276: prefect deploy, forms refused by the server
    "tests/flows/test_collect_paths.py",  # 258
    "tests/test_cli.py",  # 257
    "tests/flows/test_backfill_fan_out.py",  # 246: two process workers
    "tests/fault/test_sinks.py",  # 234
    "tests/fault/test_delivery.py",  # 227
    "tests/tasks/test_report.py",  # 223
    "tests/sandbox/test_demo.py",  # 216: make demo in a subprocess
    "tests/fault/test_collect.py",  # 169
    "tests/sandbox/test_stack.py",  # 144
    "tests/flows/test_replay.py",  # 123
    "tests/tasks/test_lake.py",  # 103
    "tests/flows/test_sweep.py",  # 99
    "tests/fault/test_security.py",  # 98
    "tests/tasks/test_committer.py",  # 96
    "tests/flows/test_consume.py",  # 95
)


def pytest_configure(config: pytest.Config) -> None:
    from tests import cpu_accounting

    cpu_accounting.register(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {module: position for position, module in enumerate(LONGEST_MODULES)}
    root = config.rootpath

    def module_rank(item: pytest.Item) -> int:
        return rank.get(item.path.relative_to(root).as_posix(), len(rank))

    items.sort(key=module_rank)  # stable: the order within a module and among the rest is kept


_account_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def stack() -> Iterator[SandboxStack]:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with SandboxStack.start(strict_xray=True) as running:
        yield running


def new_account_id() -> str:
    """A 12-digit id no other test uses (moto assumes roles into any account id); leading zero kept."""
    return f"0{os.getpid() % 100000:05d}{next(_account_numbers):06d}"


@pytest.fixture
def fresh_roster(stack: SandboxStack) -> Roster:
    """Three member accounts of their own, so X-Ray data of other tests never shows up."""
    accounts = [
        MemberAccount(account_id=new_account_id(), name=name, environment=name, regions=["us-east-1"])
        for name in ("dev", "qa", "prod")
    ]
    return Roster(accounts=accounts, role_name=seed.READER_ROLE, external_id=seed.EXTERNAL_ID)  # type: ignore[arg-type]


@pytest.fixture
def fresh_config(stack: SandboxStack, fresh_roster: Roster) -> Iterator[Config]:
    """The sandbox config with this test's own accounts, queue + DLQ, bucket and OpenSearch clone."""
    suffix = uuid.uuid4().hex[:10]
    # on the process-wide botocore loader: a new plain session parses endpoints and models again
    session = shared_session(region_name=stack.config.region)
    queue = seed.seed_queue(session, "o-sandbox", name=f"xraylake-{suffix}")
    archive = seed.seed_bucket(session, bucket=f"xraylake-{suffix}")
    clone = stack.opensearch.clone()
    config = stack.config.model_copy(
        update={
            "roster": fresh_roster,
            "queue": queue,
            "archive": archive,
            "opensearch": OpenSearchTarget(hosts=[clone.url], verify_certs=False),
        }
    )
    yield config
    clone.close()


@pytest.fixture(scope="session")
def prefect_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Prefect database migrated once per test session (by the first xdist worker that asks); every
    Prefect server the tests start gets a copy instead of migrating an empty file (tests/prefect_db.py)."""
    from tests import prefect_db

    return prefect_db.migrated_template(prefect_db.shared_directory(tmp_path_factory))


@pytest.fixture(scope="session")
def prefect_harness(prefect_db_template: Path) -> Iterator[None]:
    """A real temporary Prefect server for the session (flows, tasks, artifacts, events)."""
    from prefect.server.api.server import SubprocessASGIServer

    from tests import prefect_db

    # generous: on a loaded 2-core machine the server alone can take minutes to start
    timeout = int(os.environ.get("XRAYLAKE_PREFECT_STARTUP_SECONDS", "300"))
    for attempt in range(1, 4):
        harness = prefect_db.prefect_harness(prefect_db_template, server_startup_timeout=timeout)
        try:
            harness.__enter__()
            break
        except httpx.ReadTimeout:
            # The harness's start probe waits out a refused connection but not a /health that takes
            # over 5 s to answer (on a machine under load 12): start another.
            failed = SubprocessASGIServer._instances.pop(None, None)
            if failed is not None:
                failed.stop()
            if attempt == 3:
                raise
    server = SubprocessASGIServer._instances.get(None)
    yield
    # The harness drains the log and event workers without a time limit before stopping its server;
    # on a loaded machine that can wait for good. Drain them here with a bound first, so the
    # harness's own drain finds nothing left, and stop the server even if its exit fails.
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        drained = worker.drain_all(timeout=60)
        assert not inspect.isawaitable(drained)  # sync context: drain_all waits itself
    try:
        harness.__exit__(None, None, None)
    finally:
        if server is not None:
            server.stop()


@pytest.fixture
def config_file(fresh_config: Config, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """`fresh_config` written where flows' `config_path` parameter can read it."""
    path = tmp_path / "xraylake-config.json"
    path.write_bytes(fresh_config.to_json())
    return str(path)
