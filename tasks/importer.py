"""Import traces a user exported: `aws xray batch-get-traces` output (`{"Traces": [...]}`) and raw
segment documents (one JSON document per file or per line, with or without the X-Ray daemon's
`{"format": "json", "version": 1}` header line). Pure parsing; the CLI sends the result through
the queue or straight into the sinks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tasks.ids import segment_id_problem, trace_id_problem
from tasks.tracetime import MAX_EPOCH, MIN_EPOCH

DAEMON_HEADER = {"format": "json", "version": 1}


@dataclass
class ImportResult:
    traces: list[dict[str, Any]] = field(default_factory=list)
    segments_read: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)

    def reject(self, where: str, reason: str) -> None:
        self.rejected.append({"where": where, "reason": reason})


def _split_daemon_line(line: str) -> str:
    """`{"format":"json","version":1}\\n{...}` or `{"format":...}{...}` on one line → the document."""
    stripped = line.strip()
    if stripped.startswith('{"format"'):
        try:
            header, end = orjson.loads(stripped[: stripped.index("}") + 1]), stripped.index("}") + 1
        except (orjson.JSONDecodeError, ValueError):
            return stripped
        if header == DAEMON_HEADER:
            return stripped[end:].strip()
    return stripped


def _documents(text: str, name: str, result: ImportResult) -> Iterable[tuple[str, dict[str, Any]]]:
    """Segment documents of a file: a whole-file JSON document, or one per line."""
    whole = text.strip()
    try:
        data = orjson.loads(whole)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and data != DAEMON_HEADER:
        yield whole, data
        return
    for number, line in enumerate(text.splitlines(), 1):
        candidate = _split_daemon_line(line)
        if not candidate:
            continue
        try:
            document = orjson.loads(candidate)
        except orjson.JSONDecodeError as error:
            result.reject(f"{name}:{number}", f"not JSON: {error}")
            continue
        if document == DAEMON_HEADER:
            continue
        if not isinstance(document, dict):
            result.reject(f"{name}:{number}", "not a JSON object")
            continue
        yield candidate, document


def _segment_problem(document: dict[str, Any]) -> str | None:
    """Why a segment document cannot be imported (X-Ray's own required fields and id formats)."""
    for key in ("trace_id", "id", "name", "start_time"):
        if key not in document:
            return f"segment document lacks {key!r}"
    reason = trace_id_problem(document["trace_id"]) or segment_id_problem(document["id"])
    if reason:
        return reason
    if not isinstance(document["name"], str) or not document["name"]:
        return f"name {document['name']!r} is not a non-empty string"
    if not _is_time(document["start_time"]):
        return f"start_time {document['start_time']!r} is not epoch seconds"
    end = document.get("end_time")
    if end is None and document.get("in_progress") is not True:
        return "segment document has neither end_time nor in_progress"
    if end is not None and not _is_time(end):
        return f"end_time {end!r} is not epoch seconds"
    return None


def _is_time(value: Any) -> bool:
    return type(value) in (int, float) and MIN_EPOCH <= value < MAX_EPOCH


def _trace_segments(trace: dict[str, Any], where: str, result: ImportResult) -> list[dict[str, Any]] | None:
    """The usable segments of a batch-get-traces `Trace` (each refused one named), or None when the
    trace itself is unusable."""
    reason = trace_id_problem(trace.get("Id"))
    if reason:
        result.reject(where, reason)
        return None
    segments = trace.get("Segments")
    if not isinstance(segments, list):
        result.reject(where, f"Segments is {type(segments).__name__}, not a list")
        return None
    kept = []
    for number, segment in enumerate(segments):
        spot = f"{where}.Segments[{number}]"
        document = segment.get("Document") if isinstance(segment, dict) else None
        if not isinstance(document, str):
            result.reject(spot, f"Document is {type(document).__name__}, not a JSON string")
            continue
        try:
            parsed = orjson.loads(document)
        except orjson.JSONDecodeError as error:
            result.reject(spot, f"Document is not JSON: {error}")
            continue
        problem = _segment_problem(parsed) if isinstance(parsed, dict) else "Document is not a JSON object"
        if problem:
            result.reject(spot, problem)
            continue
        kept.append(segment)
    return kept


def parse_files(paths: Iterable[Path]) -> ImportResult:
    """Traces from exported files; what cannot be used is rejected with its file, line and reason."""
    result = ImportResult()
    by_trace: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            result.reject(str(path), f"unreadable: {error}")
            continue
        for raw, document in _documents(text, str(path), result):
            if isinstance(document.get("Traces"), list):  # batch-get-traces output
                for index, trace in enumerate(document["Traces"]):
                    where = f"{path}:Traces[{index}]"
                    if not isinstance(trace, dict):
                        result.reject(where, f"trace is {type(trace).__name__}, not an object")
                        continue
                    segments = _trace_segments(trace, where, result)
                    if not segments:
                        continue
                    result.segments_read += len(segments)
                    kept = {k: v for k, v in trace.items() if k != "ResponseMetadata"}
                    by_trace[trace["Id"]] = kept | {"Segments": segments}
                continue
            problem = _segment_problem(document)
            if problem:
                result.reject(f"{path}:{document.get('id', '?')}", problem)
                continue
            result.segments_read += 1
            trace = by_trace.setdefault(
                str(document["trace_id"]), {"Id": str(document["trace_id"]), "LimitExceeded": False, "Segments": []}
            )
            trace["Segments"].append({"Id": str(document["id"]), "Document": raw})
    for trace in by_trace.values():
        if "Duration" not in trace:
            trace["Duration"] = _duration(trace["Segments"])
    result.traces = list(by_trace.values())
    return result


def _duration(segments: list[dict[str, Any]]) -> float:
    starts, ends = [], []
    for segment in segments:
        document = orjson.loads(segment["Document"])  # every Document here was parsed once already
        if isinstance(document.get("start_time"), (int, float)):
            starts.append(float(document["start_time"]))
        if isinstance(document.get("end_time"), (int, float)):
            ends.append(float(document["end_time"]))
    return round(max(ends) - min(starts), 6) if starts and ends else 0.0
