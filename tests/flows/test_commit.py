"""The commit flow under Prefect: pending consumer files into the Iceberg tables; a catalog that
cannot be reached fails the committer run and never the consumer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import boto3
import pytest

from blocks.config import Config, LakeCatalog
from flows.commit import commit
from tasks import committer, lake
from tests.tasks.test_lake import HOUR_START, envelope, ingest_batches, make_trace

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.mark.slow  # ~50 s on a loaded 2-core machine: two flow runs, a consume, a query
def test_unreachable_catalog_fails_the_commit_run_not_the_consumer_and_the_next_run_commits(
    fresh_config: Config, tmp_path: Any
) -> None:
    account = fresh_config.roster.accounts[0].account_id
    broken = fresh_config.model_copy(update={"lake": LakeCatalog(sql_uri="sqlite:////nonexistent/lake.db")})
    broken_path = tmp_path / "broken.json"
    broken_path.write_bytes(broken.to_json())
    traces = [make_trace(account, f"k{i}", HOUR_START + timedelta(minutes=i), segments=2) for i in range(3)]
    stats = ingest_batches(broken, [[envelope(broken, traces)]], commit=False)  # the consumer never opens the catalog
    assert (stats.errors, stats.segments) == ([], 6)
    s3 = boto3.client("s3")
    pending = committer.list_pending(s3, fresh_config.archive, "segments")
    assert len(pending) == 1

    state = commit(config_path=str(broken_path), return_state=True)
    assert state.is_failed()
    assert "cannot open the sql lake catalog" in (state.message or "") or "lake catalog (sql)" in (state.message or "")
    assert len(committer.list_pending(s3, fresh_config.archive, "segments")) == 1  # still pending, not lost

    good_path = tmp_path / "good.json"
    good_path.write_bytes(fresh_config.to_json())
    state = commit(config_path=str(good_path), return_state=True)
    assert state.is_completed(), state.message
    data = cast(dict[str, Any], state.result())
    assert data["totals"]["committed_files"] == 2  # traces + segments
    assert committer.list_pending(s3, fresh_config.archive, "segments") == []
    frame = lake.query(fresh_config, "SELECT count(*) AS n FROM segments")
    assert frame["n"].tolist() == [6]
