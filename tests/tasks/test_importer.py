"""Importing exported files (pure parsing): per-item rejections with where and why."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tasks.importer import parse_files

NOW = time.time() - 600
TRACE_ID = f"1-{int(NOW):08x}-{'ab' * 12}"


def segment(**changes: Any) -> dict[str, Any]:
    document = {"id": "70de5b6f19ff9a0a", "trace_id": TRACE_ID, "name": "svc", "start_time": NOW, "end_time": NOW + 1}
    return document | changes


def batch_file(path: Path, traces: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"Traces": traces, "UnprocessedTraceIds": []}))
    return path


def test_a_document_that_is_not_json_is_refused_alone(tmp_path: Path) -> None:
    good = {"Id": "70de5b6f19ff9a0b", "Document": json.dumps(segment(id="70de5b6f19ff9a0b"))}
    broken = {"Id": "70de5b6f19ff9a0a", "Document": "{not json"}
    path = batch_file(tmp_path / "batch.json", [{"Id": TRACE_ID, "Duration": 1.0, "Segments": [broken, good]}])
    result = parse_files([path])  # raised JSONDecodeError before
    assert [r["where"] for r in result.rejected] == [f"{path}:Traces[0].Segments[0]"]
    assert "not JSON" in result.rejected[0]["reason"]
    (trace,) = result.traces
    assert trace["Segments"] == [good]
    assert result.segments_read == 1


def test_malformed_trace_ids_and_field_types_are_refused_with_their_reason(tmp_path: Path) -> None:
    bad_ids: list[Any] = ["", "garbage", "1-zzzzzzzz-0000", "../../../etc", 7, ["x"], None]
    traces = [{"Id": bad, "Segments": [{"Id": "a", "Document": json.dumps(segment())}]} for bad in bad_ids]
    path = batch_file(tmp_path / "ids.json", traces)
    result = parse_files([path])
    assert result.traces == []
    assert len(result.rejected) == len(bad_ids)
    assert all("trace id" in r["reason"] for r in result.rejected)

    lines = [
        segment(trace_id="garbage"),
        segment(id="../etc"),
        segment(start_time="yesterday"),
        segment(end_time=None),
        segment(end_time="later"),
        segment(name=["x"]),
        segment(),  # the one good segment
    ]
    ndjson = tmp_path / "segments.jsonl"
    ndjson.write_text("\n".join(json.dumps(line) for line in lines))
    result = parse_files([ndjson])
    reasons = [r["reason"] for r in result.rejected]
    assert len(reasons) == 6, reasons
    assert "trace id 'garbage'" in reasons[0]
    assert "segment id '../etc' is not 16 hex digits" in reasons[1]
    assert "start_time 'yesterday' is not epoch seconds" in reasons[2]
    assert "neither end_time nor in_progress" in reasons[3]
    assert "end_time 'later'" in reasons[4]
    assert "name ['x']" in reasons[5]
    assert [t["Id"] for t in result.traces] == [TRACE_ID]
