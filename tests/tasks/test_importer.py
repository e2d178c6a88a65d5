"""Importing exported files (no servers): every layout a user may have, gzip or not, and bad input
refused once per document with its file, first line and reason while the rest is imported."""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest

from tasks.importer import Importer, parse_files
from tests.fixtures import load_fixture_text

NOW = time.time() - 600
TRACE_ID = f"1-{int(NOW):08x}-{'ab' * 12}"
DDB_TEXT = load_fixture_text("xray/otel_ddb_sample.json")  # the issue's 25 KB pretty-printed DynamoDB segment
DDB = json.loads(DDB_TEXT)
DDB_TRACE = DDB["trace_id"]
HEADER = '{"format": "json", "version": 1}'


def segment(**changes: Any) -> dict[str, Any]:
    document = {"id": "70de5b6f19ff9a0a", "trace_id": TRACE_ID, "name": "svc", "start_time": NOW, "end_time": NOW + 1}
    return document | changes


def batch_file(path: Path, traces: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"Traces": traces, "UnprocessedTraceIds": []}))
    return path


def documents() -> list[dict[str, Any]]:
    """Two traces: three DynamoDB segments (with their many subsegments) and two small ones."""
    ddb = [DDB | {"id": f"88ad1df59cd7a7b{n}", "end_time": DDB["end_time"] + n} for n in range(3)]
    small = [segment(id=f"70de5b6f19ff9a0{n}") for n in range(2)]
    return ddb + small


def expected_traces() -> dict[str, dict[str, Any]]:
    by_trace: dict[str, dict[str, Any]] = {}
    for document in documents():
        by_trace.setdefault(document["trace_id"], {})[document["id"]] = document
    return by_trace


def as_batch_traces(docs: list[dict[str, Any]], indent: int | None = None) -> list[dict[str, Any]]:
    traces: dict[str, dict[str, Any]] = {}
    for document in docs:
        trace = traces.setdefault(document["trace_id"], {"Id": document["trace_id"], "Duration": 1.5, "Segments": []})
        trace["Segments"].append({"Id": document["id"], "Document": json.dumps(document, indent=indent)})
    return list(traces.values())


def layouts() -> dict[str, str]:
    docs = documents()
    pretty = [json.dumps(d, indent=2) for d in docs]
    compact = [json.dumps(d) for d in docs]
    traces = as_batch_traces(docs, indent=4)
    return {
        "ndjson": "\n".join(compact) + "\n",
        "jq . output": "\n".join(pretty) + "\n",
        "concatenated without separators": "".join(compact),
        "array": json.dumps(docs, indent=2),
        "daemon packets": "".join(f"{HEADER}\n{text}\n" for text in pretty),
        "daemon packets on one line each": "".join(f"{HEADER}{text}\n" for text in compact),
        "batch-get-traces, one page": json.dumps({"Traces": traces, "UnprocessedTraceIds": []}, indent=4),
        "batch-get-traces, pages concatenated": "\n".join(
            json.dumps({"Traces": [trace], "UnprocessedTraceIds": []}) for trace in traces
        ),
        "Trace objects alone (jq .Traces[])": "\n".join(json.dumps(trace, indent=2) for trace in traces),
    }


def imported(traces: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["Id"]: {s["Id"]: json.loads(s["Document"]) for s in t["Segments"]} for t in traces}


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("layout", list(layouts()))
def test_every_layout_imports_every_segment(layout: str, compressed: bool, tmp_path: Path) -> None:
    data = layouts()[layout].encode()
    path = tmp_path / "export.json"  # the name says nothing: gzip is found by its magic bytes
    path.write_bytes(gzip.compress(data) if compressed else data)
    result = parse_files([path])
    assert result.rejected == []
    assert imported(result.traces) == expected_traces()
    (report,) = result.files
    assert (report.documents_read, report.segments_read, report.rejected) == (5, 5, 0)


def test_one_document_per_file_and_the_issue_s_daemon_files(tmp_path: Path) -> None:
    """The issue: a daemon-format file with the pretty-printed DynamoDB segment gave 483 "not JSON"
    rejections and no segment; eight such files gave 1,100."""
    paths = []
    for number in range(8):
        path = tmp_path / f"ddb-{number}.json"
        document = DDB | {"id": f"88ad1df59cd7a7c{number}"}
        path.write_text(f"{HEADER}\n{json.dumps(document, indent=4)}\n")
        paths.append(path)
    single = tmp_path / "single.json"
    single.write_text(DDB_TEXT)
    result = parse_files([*paths, single])
    assert result.rejected == []
    assert result.segments_read == 9
    (trace,) = result.traces
    assert len(trace["Segments"]) == 9
    assert [s["Document"] for s in trace["Segments"] if s["Id"] == DDB["id"]] == [DDB_TEXT.rstrip()]  # verbatim
    assert trace["Duration"] == round(DDB["end_time"] - DDB["start_time"], 6)


def test_segments_spill_to_disk_past_the_budget_and_come_back_as_the_same_traces(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text(layouts()["ndjson"] + layouts()["batch-get-traces, pages concatenated"])
    in_memory = Importer()
    in_memory.read(path)
    spilling = Importer(budget_bytes=1, partitions=3)
    spilling.read(path)
    assert spilling.grouper.spilled
    folder = Path(spilling.grouper.spill_dir.name)  # type: ignore[union-attr]
    spilled = sorted(spilling.traces(), key=lambda item: item[0]["Id"])
    assert spilled == sorted(in_memory.traces(), key=lambda item: item[0]["Id"])
    assert imported([trace for trace, _ in spilled]) == expected_traces()
    assert [dict(files) for _, files in spilled] == [{0: 3}, {0: 2}]  # segments per file (deduplicated by id)
    assert not folder.exists()


def deep(levels: int) -> str:
    return json.dumps(segment(id="70de5b6f19ff9a10"))[:-1] + ', "metadata": ' + "[" * levels + "]" * levels + "}"


def test_bad_input_is_refused_once_each_with_file_line_and_reason_and_the_rest_is_imported(tmp_path: Path) -> None:
    good = [json.dumps(segment(id=f"70de5b6f19ff9a2{n}"), indent=2) for n in range(6)]
    big = json.dumps(segment(id="70de5b6f19ff9a11", annotations={"blob": "x" * 10_000_000}))
    parts = [
        good[0],
        bytes(range(256)).decode("latin-1") * 4,  # binary garbage: 4 lines of it
        good[1],
        deep(10_000),
        good[2],
        big,
        good[3],
        json.dumps(segment(id="70de5b6f19ff9a12", trace_id="1-zzzzzzzz-000000000000000000000000"), indent=2),
        good[4],
        '{"id": "70de5b6f19ff9a13", "trace_id": "' + TRACE_ID + '", "name": "cut',  # a truncated line
        good[5],
        json.dumps(segment(id="70de5b6f19ff9a14"))[:-30],  # the file ends in the middle of a document
    ]
    path = tmp_path / "bad.json"
    path.write_bytes("\n".join(parts).encode("latin-1"))
    lines, line = [], 1
    for part in parts:
        lines.append(line)
        line += part.count("\n") + 1
    result = parse_files([path])
    where = str(path)
    assert result.rejected == [
        {"file": where, "line": lines[1], "where": f"{where}:{lines[1]}", "reason": result.rejected[0]["reason"]},
        {
            "file": where,
            "line": lines[3],
            "where": f"{where}:{lines[3]}",
            "reason": "nested deeper than 512 levels (the import limit)",
        },
        {
            "file": where,
            "line": lines[5],
            "where": f"{where}:{lines[5]}",
            "reason": "larger than 4,194,304 bytes (the import limit per document)",
        },
        {
            "file": where,
            "line": lines[7],
            "where": f"{where}:{lines[7]}",
            "reason": "trace id '1-zzzzzzzz-000000000000000000000000' is neither 1-<8 hex>-<24 hex> (X-Ray) "
            "nor 32 hex digits (W3C)",
        },
        {
            "file": where,
            "line": lines[9],
            "where": f"{where}:{lines[9]}",
            "reason": f"not JSON: byte b'\\n' inside a string at line {lines[9]}",
        },
        {
            "file": where,
            "line": lines[11],
            "where": f"{where}:{lines[11]}",
            "reason": "not closed at the end of the stream (truncated?)",
        },
    ]
    assert result.rejected[0]["reason"].startswith("not JSON: starts with b'\\x00\\x01\\x02")
    (trace,) = result.traces
    assert [s["Id"] for s in trace["Segments"]] == [f"70de5b6f19ff9a2{n}" for n in range(6)]
    (report,) = result.files
    assert (report.documents_read, report.segments_read, report.rejected) == (12, 6, 6)


def test_bad_input_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """Peak Python memory while importing stays a few MiB whatever the size of the bad part: a 10 MB
    annotation, 40 MB of brackets on one line (nested 20 million deep), a gzip bomb inflating to 80 MiB."""
    annotation = tmp_path / "annotation.json"
    big = segment(id="70de5b6f19ff9a11", annotations={"blob": "x" * 10_000_000})
    annotation.write_text(json.dumps(segment()) + "\n" + json.dumps(big) + "\n")
    nested = tmp_path / "nested.json"
    levels = 20_000_000
    nested.write_bytes(b'{"a": ' + b"[" * levels + b"]" * levels + b"}\n" + json.dumps(segment()).encode())
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(json.dumps(segment()).encode() + b"\n") + gzip.compress(bytes(1 << 20), 9) * 80)
    for path, reason in (
        (annotation, "larger than 4,194,304 bytes"),
        (nested, "nested deeper than 512 levels"),
        (bomb, "not JSON: starts with b'\\x00"),
    ):
        tracemalloc.start()
        try:
            result = parse_files([path])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert [r["reason"][: len(reason)] for r in result.rejected] == [reason], path.name
        assert result.segments_read == 1, path.name
        # 4 MiB document limit + read chunks + copies of a bracket run, not the bad part's size
        assert peak < 16 * 1024 * 1024, (path.name, peak)


def test_gzip_bombs_and_broken_gzip_are_one_refusal_each_after_what_was_readable(tmp_path: Path) -> None:
    good = json.dumps(segment()) + "\n"
    bomb = tmp_path / "bomb.gz"  # 80 members of 1 MiB of zeros each: ~80 KB inflating to 80 MiB
    bomb.write_bytes(gzip.compress(good.encode()) + gzip.compress(bytes(1024 * 1024), 9) * 80)
    truncated = tmp_path / "truncated.gz"  # lines 1-2 and the start of line 3, then the stream stops
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    cut = packer.compress((good * 2 + good[:40]).encode()) + packer.flush(zlib.Z_SYNC_FLUSH)
    truncated.write_bytes(cut)
    result = parse_files([bomb, truncated])
    assert [(r["file"], r["line"]) for r in result.rejected] == [(str(bomb), 2), (str(truncated), 3)]
    assert result.rejected[0]["reason"].startswith("not JSON: starts with b'\\x00\\x00")
    assert "; gzip stream inflates past" in result.rejected[0]["reason"]
    assert result.rejected[0]["reason"].endswith("at least 67,108,864 bytes): reading stopped")
    assert result.rejected[1]["reason"] == f"not closed: gzip stream truncated after {len(cut):,} compressed bytes"
    assert [f.segments_read for f in result.files] == [1, 2]  # the same segment: one trace, one segment
    assert len(result.traces) == 1


def test_a_document_that_is_not_json_is_refused_alone(tmp_path: Path) -> None:
    good = {"Id": "70de5b6f19ff9a0b", "Document": json.dumps(segment(id="70de5b6f19ff9a0b"))}
    broken = {"Id": "70de5b6f19ff9a0a", "Document": "{not json"}
    path = batch_file(tmp_path / "batch.json", [{"Id": TRACE_ID, "Duration": 1.0, "Segments": [broken, good]}])
    result = parse_files([path])
    assert [r["where"] for r in result.rejected] == [f"{path}:1 Traces[0].Segments[0]"]
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
    assert [r["where"] for r in result.rejected] == [f"{path}:1 Traces[{n}]" for n in range(len(bad_ids))]
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
    assert [r["line"] for r in result.rejected] == [1, 2, 3, 4, 5, 6]
    reasons = [r["reason"] for r in result.rejected]
    assert "trace id 'garbage'" in reasons[0]
    assert "segment id '../etc' is not 16 hex digits" in reasons[1]
    assert "start_time 'yesterday' is not epoch seconds" in reasons[2]
    assert "neither end_time nor in_progress" in reasons[3]
    assert "end_time 'later'" in reasons[4]
    assert "name ['x']" in reasons[5]
    assert [t["Id"] for t in result.traces] == [TRACE_ID]


def test_a_segment_of_another_trace_inside_a_trace_and_a_foreign_header_are_refused(tmp_path: Path) -> None:
    other = segment(trace_id=f"1-{int(NOW):08x}-{'cd' * 12}")
    path = batch_file(
        tmp_path / "mixed.json", [{"Id": TRACE_ID, "Segments": [{"Id": other["id"], "Document": json.dumps(other)}]}]
    )
    daemon = tmp_path / "daemon.txt"
    daemon.write_text('{"format": "protobuf", "version": 2}\n' + json.dumps(segment()))
    result = parse_files([path, daemon])
    assert [r["reason"] for r in result.rejected] == [
        f"trace_id {other['trace_id']!r} is not the trace's Id {TRACE_ID!r}",
        "daemon header {'format': 'protobuf', 'version': 2} is not {'format': 'json', 'version': 1}",
    ]
    assert result.segments_read == 1


def test_the_document_limit_can_be_lifted_like_the_consumer_s(tmp_path: Path) -> None:
    big = segment(annotations={"blob": "x" * 5_000_000})
    path = tmp_path / "big.json"
    path.write_text(json.dumps(big))
    assert [r["reason"] for r in parse_files([path]).rejected] == [
        "larger than 4,194,304 bytes (the import limit per document)"
    ]
    lifted = parse_files([path], max_document_bytes=8 * 1024 * 1024)
    assert lifted.rejected == []
    assert imported(lifted.traces) == {TRACE_ID: {big["id"]: big}}


def test_a_batch_get_traces_page_larger_than_the_document_limit_is_read_trace_by_trace(tmp_path: Path) -> None:
    """`aws xray batch-get-traces` output is one JSON object: each Trace is a document of its own, so
    a page of any size imports while each document stays within the limit (here 64 KiB, the page 1.1 MB)."""
    traces = []
    for number in range(300):
        trace_id = f"1-{int(NOW):08x}-{number:024x}"
        docs = [
            segment(id=f"{number:012x}{n:04x}", trace_id=trace_id, metadata={"pad": {"x": "y" * 1500}}) for n in (1, 2)
        ]
        traces.append(
            {"Id": trace_id, "Duration": 1.0, "Segments": [{"Id": d["id"], "Document": json.dumps(d)} for d in docs]}
        )
    path = batch_file(tmp_path / "page.json", traces)
    assert path.stat().st_size > 1_000_000
    importer = Importer(budget_bytes=64 * 1024, max_document_bytes=64 * 1024)
    report = importer.read(path)
    assert (report.documents_read, report.segments_read, report.rejected) == (600, 600, 0)
    assert importer.grouper.spilled
    assert sorted(trace["Id"] for trace, _ in importer.traces()) == [t["Id"] for t in traces]
