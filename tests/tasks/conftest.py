"""Fixtures for the readers of the indices (report, dashboards) and for the spans reader."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from blocks import OpenSearchTarget
from blocks.config import Config
from sandbox.stack import SandboxStack
from sandbox.strict_xray import StrictXRayFront
from sandbox.transaction_search import TransactionSearch
from tasks.index import client_for, ensure_templates
from tasks.mappings import index_templates
from tasks.trace_model import TraceContext
from tasks.transform import transform_trace
from tests.fixtures import load_fixture

PREFIXED_AT = datetime(2024, 9, 22, 11, tzinfo=UTC)  # an hour after the fixture trace started


@pytest.fixture
def prefixed_config(fresh_config: Config) -> Config:
    """`fresh_config` whose target has `index_prefix="acme"`. Its cluster holds one Step Functions
    trace (fixture `synthesized_stepfunctions_trace`, 2024-09-22 10:13 UTC) of account `acme` in the
    `acme-*` indices, and the same trace of account `decoy` in the default `xray-*` ones: whatever
    reads the default indices instead of the target's shows the decoy."""
    target = OpenSearchTarget(hosts=fresh_config.opensearch.hosts, verify_certs=False, index_prefix="acme")
    client = client_for(target)
    trace = load_fixture("xray/synthesized_stepfunctions_trace")
    body: list[dict[str, Any]] = []
    for prefix, account_id, name in (("acme", "012345678901", "acme"), ("xray", "099999999999", "decoy")):
        ensure_templates(client, index_templates(prefix))
        context = TraceContext(account_id, name, name, "eu-west-1", PREFIXED_AT, f"envelope-{name}", "test")
        for request in transform_trace(trace, context).index_requests(prefix):
            if request.kind in ("traces", "segments"):
                body += [{"index": {"_index": request.index, "_id": request.doc_id}}, request.source]
    assert not client.bulk(body=body, refresh=True)["errors"]
    return fresh_config.model_copy(update={"opensearch": target})


@pytest.fixture
def search(stack: SandboxStack) -> Iterator[TransactionSearch]:
    """The session front's Transaction Search emulation, its knobs put back afterwards."""
    emulation = next(c for c in stack.extra if isinstance(c, StrictXRayFront)).transaction_search
    yield emulation
    emulation.configure_filter_quota(None)
    emulation.start_query_limit_exceeded = 0
    emulation.pending_seconds = 0.0
    emulation.deny_logs.clear()
