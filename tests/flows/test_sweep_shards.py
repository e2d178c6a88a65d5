"""A sharded sweep: the roster split by a stable hash of the account id, each shard swept by its
own run (child runs of the sweep-shard deployment on any worker), every account by exactly one."""

from __future__ import annotations

import os
import re
from pathlib import Path

import boto3
import pytest
from pydantic import ValidationError

from blocks.config import Config
from blocks.roster import shard_of
from flows.parameters import SweepParameters
from flows.sweep import sweep
from tasks import watermark
from tests.flows.test_sweep import drain, put_simple_traces
from tests.flows.workers import pool_with_deployment, start_worker, stop_workers

pytestmark = pytest.mark.usefixtures("prefect_harness")


def shard_count(config: Config) -> int:
    """The fewest shards (≥ 2) that put the test's accounts in more than one shard."""
    ids = [a.account_id for a in config.roster.accounts]
    return next(k for k in range(2, 64) if len({shard_of(i, k) for i in ids}) > 1)


def test_shards_partition_the_roster_and_a_shard_outside_them_is_refused(fresh_config: Config) -> None:
    shards = shard_count(fresh_config)
    owned = [
        {a.account_id for a, _ in SweepParameters(shards=shards, shard=n).targets(fresh_config)} for n in range(shards)
    ]
    assert sum(len(ids) for ids in owned) == len(fresh_config.roster.accounts)  # disjoint
    assert set().union(*owned) == {a.account_id for a in fresh_config.roster.accounts}
    assert sum(1 for ids in owned if ids) > 1
    assert SweepParameters(shards=shards).fans_out and not SweepParameters(shards=shards, shard=0).fans_out
    with pytest.raises(ValidationError, match=f"shard {shards} is not below shards {shards}"):
        SweepParameters(shards=shards, shard=shards)


def test_each_shard_sweeps_and_advances_only_its_own_accounts(fresh_config: Config, config_file: str) -> None:
    shards = shard_count(fresh_config)
    expected = {
        a.account_id: set(put_simple_traces(fresh_config, a.account_id, 3, age_seconds=400))
        for a in fresh_config.roster.accounts
    }
    swept: list[str] = []
    for n in range(shards):
        state = sweep(config_path=config_file, shards=shards, shard=n, return_state=True)
        assert state.is_completed(), state.message
        mine = [r["account_id"] for r in state.result()["accounts"]]
        assert {shard_of(i, shards) for i in mine} <= {n}
        swept += mine
    assert sorted(swept) == sorted(expected)  # every account once
    s3 = boto3.client("s3")
    for account_id in expected:
        assert watermark.read(s3, fresh_config.archive, account_id, "us-east-1").high_water is not None
    sent = [t["Id"] for e in drain(fresh_config) for t in e.traces]
    assert len(sent) == len(set(sent)) and set(sent) == set().union(*expected.values())


def test_a_sharded_sweep_without_its_shard_deployment_fails_at_once_naming_it(config_file: str) -> None:
    state = sweep(config_path=config_file, shards=2, shard_deployment="sweep/nowhere", return_state=True)
    assert state.is_failed()
    assert "LookupError: deployment sweep/nowhere does not exist" in (state.message or ""), state.message


@pytest.mark.slow
@pytest.mark.timeout(900)  # child flow-run processes on a 2-core machine
def test_a_sharded_sweep_runs_its_shards_as_child_runs_on_the_workers(
    fresh_config: Config, config_file: str, tmp_path: Path
) -> None:
    shards = shard_count(fresh_config)
    expected = set()
    for account in fresh_config.roster.accounts:
        expected |= set(put_simple_traces(fresh_config, account.account_id, 2, age_seconds=400))
    pool = pool_with_deployment(sweep.name, "sweep-shard", "flows/sweep.py:sweep", "collect")
    logs = [Path(os.environ.get("XRAYLAKE_WORKER_LOGS", tmp_path)) / f"shard-worker-{n}.log" for n in "ab"]
    workers = [start_worker(pool, log.stem, log, queue="collect") for log in logs]
    try:
        state = sweep(config_path=config_file, shards=shards, return_state=True)
    finally:
        stop_workers(workers)

    assert state.is_completed(), state.message
    rows = state.result()["shards"]
    assert [r["shard"] for r in rows] == list(range(shards))
    assert all(r["state"] == "Completed" for r in rows), rows
    assert sum(r["account/regions"] for r in rows) == len(fresh_config.roster.accounts)
    sent = [t["Id"] for e in drain(fresh_config) for t in e.traces]
    assert len(sent) == len(set(sent)) and set(sent) == expected  # each trace by exactly one shard
    ran = set().union(*(set(re.findall(r"flow run '([0-9a-f-]{36})'", log.read_text())) for log in logs))
    assert ran == {r["flow_run_id"] for r in rows}  # every shard ran on a worker
