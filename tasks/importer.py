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
    for key in ("trace_id", "id", "name", "start_time"):
        if key not in document:
            return f"segment document lacks {key!r}"
    if "end_time" not in document and not document.get("in_progress"):
        return "segment document has neither end_time nor in_progress"
    return None


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
                    if not isinstance(trace, dict) or not isinstance(trace.get("Id"), str):
                        result.reject(f"{path}:Traces[{index}]", "trace without Id")
                        continue
                    segments = [s for s in trace.get("Segments") or [] if isinstance(s, dict)]
                    result.segments_read += len(segments)
                    by_trace[trace["Id"]] = {k: v for k, v in trace.items() if k != "ResponseMetadata"}
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
        document = orjson.loads(segment["Document"])
        if isinstance(document.get("start_time"), (int, float)):
            starts.append(float(document["start_time"]))
        if isinstance(document.get("end_time"), (int, float)):
            ends.append(float(document["end_time"]))
    return round(max(ends) - min(starts), 6) if starts and ends else 0.0
