"""Index actions of an envelope: profiles and generations, one write per service-map document."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from tasks.documents import EnvelopeDocuments
from tasks.trace_model import TraceContext
from tasks.transform import transform_trace
from tests.fixtures import load_fixture

CTX = TraceContext("012345678901", "acme", "prod", "eu-west-1", datetime(2024, 9, 22, 11, tzinfo=UTC), "e", "test")


@pytest.mark.parametrize("generation", ["legacy", "standard"])
def test_the_same_service_map_document_from_two_traces_is_written_once(generation: str) -> None:
    docs = transform_trace(load_fixture("xray/synthesized_stepfunctions_trace"), CTX)
    one = Counter(a.kind for a in EnvelopeDocuments("e", [docs]).index_actions(1, generation=generation))
    two = Counter(a.kind for a in EnvelopeDocuments("e", [docs, docs]).index_actions(1, generation=generation))
    assert one["service-map"] >= 3
    assert two["service-map"] == one["service-map"]
    assert two["spans"] == 2 * one["spans"] and two["segments"] == 2 * one["segments"]


def test_profiles_choose_the_kinds_of_actions() -> None:
    docs = EnvelopeDocuments("e", [transform_trace(load_fixture("xray/synthesized_stepfunctions_trace"), CTX)])
    assert {a.kind for a in docs.index_actions(1, profile="xray")} == {"traces", "segments"}
    assert {a.kind for a in docs.index_actions(1, profile="trace-analytics")} == {"spans", "service-map"}
    assert {a.kind for a in docs.index_actions(1)} == {"traces", "segments", "spans", "service-map"}
    v2 = [a for a in docs.index_actions(1, generation="standard") if a.kind == "service-map"]
    assert {a.index for a in v2} == {"otel-v2-apm-service-map-2024.09.22"} and not any(a.versioned for a in v2)


def test_a_coarser_service_map_bucket_stamps_fewer_v2_documents_on_the_bucket() -> None:
    docs = EnvelopeDocuments("e", [transform_trace(load_fixture("xray/synthesized_stepfunctions_trace"), CTX)])

    def v2(bucket: int) -> list[dict[str, object]]:
        actions = docs.index_actions(1, generation="standard", service_map_bucket_seconds=bucket)
        return [a.source for a in actions if a.kind == "service-map"]

    minute, hour = v2(60), v2(3600)
    assert minute == v2(60) and 0 < len(hour) <= len(minute)
    assert {str(d["timestamp"])[14:] for d in hour} == {"00:00Z"}
    assert len({str(d["timestamp"]) for d in minute}) >= len({str(d["timestamp"]) for d in hour})
    # the legacy map has no time: the bucket does not change it
    legacy = [a.doc_id for a in docs.index_actions(1, service_map_bucket_seconds=3600) if a.kind == "service-map"]
    assert legacy == [a.doc_id for a in docs.index_actions(1) if a.kind == "service-map"]
