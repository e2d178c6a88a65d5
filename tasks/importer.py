"""Import traces a user exported, from any file layout, in bounded memory (no AWS, no Prefect).

Layouts (`tasks.jsonstream` finds the documents; gzip of any of them is recognised by its magic
bytes, not its name):

* segment documents: one per file, one per line (NDJSON), pretty-printed and concatenated
  (`jq .` output), or in a JSON array;
* X-Ray daemon packets: the header `{"format": "json", "version": 1}` and a segment document on
  one or many lines, any number of packets per file;
* `aws xray batch-get-traces` output `{"Traces": [{Id, Duration, LimitExceeded, Segments:
  [{Id, Document}]}], "UnprocessedTraceIds": [...]}`, one page or several concatenated, and
  `Trace` objects alone (`jq '.Traces[]'`).

Every rejected document is reported once, with its file, its first line and why (`FileReport`),
and the rest of the file is still read. A segment document is refused when it is not JSON, is
over the per-document limit (`jsonstream.MAX_DOCUMENT_BYTES`, the consumer's own 4 MiB default;
`max_document_bytes` lifts it, as the consumer's does, for a document that must travel whole), nests deeper
than `jsonstream.MAX_DEPTH`, or lacks what X-Ray itself requires (ids in `tasks.ids`' formats,
name, start_time, end_time or in_progress).

Memory: documents are read one at a time; segments are grouped into traces (an envelope carries
whole traces) in memory up to `group_budget_bytes`; past that, every segment goes to one of
`SPILL_PARTITIONS` temporary files chosen by its trace id, and traces are assembled one partition
at a time, so a file of any size needs about budget + size / partitions.
"""

from __future__ import annotations

import itertools
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from tasks.ids import segment_id_problem, trace_id_problem
from tasks.jsonstream import GZIP_MAGIC, MAX_DOCUMENT_BYTES, Found, StreamError, documents, inflate
from tasks.tracetime import MAX_EPOCH, MIN_EPOCH

DAEMON_HEADER = {"format": "json", "version": 1}
READ_CHUNK_BYTES = 256 * 1024  # read from disk (compressed bytes, for gzip files)
GROUP_BUDGET_BYTES = 64 * 1024 * 1024  # segment documents held in memory before spilling to disk
SPILL_PARTITIONS = 64
MAX_LISTED_REJECTIONS = 1000  # per file; the counts stay exact


@dataclass
class FileReport:
    """What one file gave: documents read (every segment document found, a batch-get-traces
    Segment included, and every refused piece of text), segments accepted, rejections."""

    file: str
    documents_read: int = 0
    segments_read: int = 0
    rejected: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, line: int, reason: str, where: str = "") -> None:
        self.documents_read += 1
        self.rejected += 1
        if len(self.rejections) < MAX_LISTED_REJECTIONS:
            location = f"{self.file}:{line}" + (f" {where}" if where else "")
            self.rejections.append({"file": self.file, "line": line, "where": location, "reason": reason})


@dataclass(slots=True)
class _Segment:
    document: str
    start: float | None
    end: float | None
    file: int


@dataclass
class _Trace:
    fields: dict[str, Any] = field(default_factory=dict)  # from a batch-get-traces Trace
    segments: dict[str, _Segment] = field(default_factory=dict)  # by segment id; the last one wins


def file_chunks(path: Path, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
    """A file's bytes in chunks, gunzipped (capped) when it starts with the gzip magic bytes."""
    with path.open("rb") as handle:
        first = handle.read(chunk_bytes)
        raw = itertools.chain([first], iter(lambda: handle.read(chunk_bytes), b""))
        if first[:2] == GZIP_MAGIC:
            yield from inflate(raw)
        else:
            yield from raw


def _segment_problem(document: Any) -> str | None:
    """Why a segment document cannot be imported (X-Ray's own required fields and id formats)."""
    if not isinstance(document, dict):
        return f"a JSON {type(document).__name__}, not a segment document (object)"
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


class TraceGrouper:
    """Segments → whole traces, in memory up to a budget, then through hash-partitioned spill files."""

    def __init__(self, budget_bytes: int = GROUP_BUDGET_BYTES, partitions: int = SPILL_PARTITIONS) -> None:
        self.budget_bytes = budget_bytes
        self.partitions = partitions
        self.traces: dict[str, _Trace] = {}
        self.held = 0
        self.spill_dir: tempfile.TemporaryDirectory[str] | None = None
        self.spill: list[IO[bytes]] = []

    @property
    def spilled(self) -> bool:
        return self.spill_dir is not None

    def add_segment(self, trace_id: str, segment_id: str, segment: _Segment) -> None:
        """A checked segment document (`start` None for one from a batch-get-traces Trace)."""
        if self.spill:
            self._write_segment(trace_id, segment_id, segment)
            return
        self.traces.setdefault(trace_id, _Trace()).segments[segment_id] = segment
        self.held += len(segment.document)
        self._check_budget()

    def add_trace(self, trace: dict[str, Any], file: int) -> None:
        """A batch-get-traces `Trace` whose Segments were checked (`{Id, Document}` each)."""
        fields = {k: v for k, v in trace.items() if k not in ("Segments", "ResponseMetadata")}
        if self.spill:
            self._write(trace["Id"], ["f", trace["Id"], fields])
        else:
            self.traces.setdefault(trace["Id"], _Trace()).fields = fields
        for segment in trace["Segments"]:
            self.add_segment(trace["Id"], segment["Id"], _Segment(segment["Document"], None, None, file))

    def _check_budget(self) -> None:
        if self.held <= self.budget_bytes:
            return
        self.spill_dir = tempfile.TemporaryDirectory(prefix="xraylake-import-")
        folder = Path(self.spill_dir.name)
        self.spill = [(folder / f"{n:03d}").open("w+b") for n in range(self.partitions)]
        for trace_id, built in self.traces.items():
            if built.fields:
                self._write(trace_id, ["f", trace_id, built.fields])
            for segment_id, segment in built.segments.items():
                self._write_segment(trace_id, segment_id, segment)
        self.traces, self.held = {}, 0

    def _write(self, trace_id: str, record: list[Any], document: bytes = b"") -> None:
        """One spill record: a JSON header line, then (segments) the document's bytes as they are."""
        handle = self.spill[zlib.crc32(trace_id.encode()) % self.partitions]
        handle.write(orjson.dumps(record) + b"\n")
        if document:
            handle.write(document)

    def _write_segment(self, trace_id: str, segment_id: str, segment: _Segment) -> None:
        data = segment.document.encode()
        self._write(trace_id, ["s", trace_id, segment_id, segment.start, segment.end, segment.file, len(data)], data)

    def groups(self) -> Iterator[tuple[dict[str, Any], Counter[int]]]:
        """Each whole trace (a BatchGetTraces `Trace`) with how many of its segments each file gave."""
        if not self.spill:
            held, self.traces, self.held = self.traces, {}, 0
            yield from _finished(held)
            return
        try:
            for handle in self.spill:
                handle.seek(0)
                traces: dict[str, _Trace] = {}
                while line := handle.readline():
                    record = orjson.loads(line)
                    built = traces.setdefault(record[1], _Trace())
                    if record[0] == "f":
                        built.fields = record[2]
                    else:
                        _, _, segment_id, start, end, file, size = record
                        built.segments[segment_id] = _Segment(handle.read(size).decode(), start, end, file)
                handle.close()
                yield from _finished(traces)
        finally:
            self.close()

    def close(self) -> None:
        for handle in self.spill:
            handle.close()
        self.spill = []
        if self.spill_dir is not None:
            self.spill_dir.cleanup()
            self.spill_dir = None


def _finished(traces: dict[str, _Trace]) -> Iterator[tuple[dict[str, Any], Counter[int]]]:
    for trace_id, built in traces.items():
        segments = [{"Id": k, "Document": s.document} for k, s in built.segments.items()]
        files = Counter(s.file for s in built.segments.values())
        trace = {"Id": trace_id, "LimitExceeded": False} | built.fields | {"Segments": segments}
        if "Duration" not in trace:
            starts = [s.start for s in built.segments.values() if s.start is not None]
            ends = [s.end for s in built.segments.values() if s.end is not None]
            trace["Duration"] = round(max(ends) - min(starts), 6) if starts and ends else 0.0
        yield trace, files


class Importer:
    """Read files into a `TraceGrouper`, reporting per file; then `traces()` hands out whole traces."""

    def __init__(
        self,
        budget_bytes: int = GROUP_BUDGET_BYTES,
        partitions: int = SPILL_PARTITIONS,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> None:
        self.grouper = TraceGrouper(budget_bytes, partitions)
        self.max_document_bytes = max_document_bytes
        self.files: list[FileReport] = []

    def read(self, path: Path) -> FileReport:
        report = FileReport(str(path))
        number = len(self.files)
        self.files.append(report)
        try:
            for found in documents(file_chunks(path), max_bytes=self.max_document_bytes):
                self._document(found, report, number)
        except (OSError, StreamError) as error:  # unreadable file (StreamError: before any document)
            report.reject(0, f"unreadable: {error}")
        return report

    def _document(self, found: Found, report: FileReport, file: int) -> None:
        where = f"{found.context[:-2]}[{found.index}]" if found.context else ""
        if found.problem is not None or found.data is None:
            report.reject(found.line, found.problem or "refused", where)
            return
        value = found.value
        if value is None:
            try:
                value = orjson.loads(found.data)
            except orjson.JSONDecodeError as error:
                report.reject(found.line, f"not JSON: {error}", where)
                return
        if found.context == "Traces[]":
            self._trace(value, report, file, found.line, where)
        elif isinstance(value, dict) and value.keys() == DAEMON_HEADER.keys():
            if value != DAEMON_HEADER:
                report.reject(found.line, f"daemon header {value} is not {DAEMON_HEADER}")
        elif isinstance(value, dict) and isinstance(value.get("Traces"), list):  # a page read whole
            for index, trace in enumerate(value["Traces"]):
                self._trace(trace, report, file, found.line, f"Traces[{index}]")
        elif isinstance(value, dict) and "Segments" in value and "Id" in value:  # a Trace alone
            self._trace(value, report, file, found.line, where)
        else:
            self._segment(found.data, value, report, file, found.line, where)

    def _segment(self, data: bytes, value: Any, report: FileReport, file: int, line: int, where: str) -> None:
        problem = _segment_problem(value)
        if problem:
            report.reject(line, problem, where)
            return
        report.documents_read += 1
        report.segments_read += 1
        end = value.get("end_time")
        segment = _Segment(data.decode(), float(value["start_time"]), None if end is None else float(end), file)
        self.grouper.add_segment(value["trace_id"], value["id"], segment)

    def _trace(self, trace: Any, report: FileReport, file: int, line: int, where: str) -> None:
        """A batch-get-traces `Trace`: its usable segments (each refused one named)."""
        if not isinstance(trace, dict):
            report.reject(line, f"trace is a JSON {type(trace).__name__}, not an object", where)
            return
        segments = trace.get("Segments")
        reason = trace_id_problem(trace.get("Id"))
        if reason is None and not isinstance(segments, list):
            reason = f"Segments is {type(segments).__name__}, not a list"
        if reason:
            report.reject(line, reason, where)
            return
        kept = []
        for number, segment in enumerate(segments):  # type: ignore[arg-type]
            spot = f"{where}.Segments[{number}]" if where else f"Segments[{number}]"
            document = segment.get("Document") if isinstance(segment, dict) else None
            if not isinstance(document, str):
                report.reject(line, f"Document is {type(document).__name__}, not a JSON string", spot)
                continue
            try:
                parsed = orjson.loads(document)
            except orjson.JSONDecodeError as error:
                report.reject(line, f"Document is not JSON: {error}", spot)
                continue
            problem = _segment_problem(parsed)
            if problem is None and parsed["trace_id"] != trace["Id"]:
                problem = f"trace_id {parsed['trace_id']!r} is not the trace's Id {trace['Id']!r}"
            if problem:
                report.reject(line, problem, spot)
                continue
            kept.append({"Id": parsed["id"], "Document": document})
        report.documents_read += len(kept)
        report.segments_read += len(kept)
        if kept:
            self.grouper.add_trace(trace | {"Segments": kept}, file)

    def traces(self) -> Iterator[tuple[dict[str, Any], Counter[int]]]:
        return self.grouper.groups()

    def batches(
        self, max_traces: int = 500, max_bytes: int = 8 * 1024 * 1024
    ) -> Iterator[list[tuple[dict[str, Any], Counter[int]]]]:
        """Whole traces in groups bounded by count and document bytes (one send/ingest each)."""
        batch: list[tuple[dict[str, Any], Counter[int]]] = []
        size = 0
        for trace, files in self.traces():
            batch.append((trace, files))
            size += sum(len(s["Document"]) for s in trace["Segments"])
            if len(batch) >= max_traces or size >= max_bytes:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch


@dataclass
class ImportResult:
    traces: list[dict[str, Any]] = field(default_factory=list)
    files: list[FileReport] = field(default_factory=list)

    @property
    def segments_read(self) -> int:
        return sum(f.segments_read for f in self.files)

    @property
    def rejected(self) -> list[dict[str, Any]]:
        return [r for f in self.files for r in f.rejections]


def parse_files(
    paths: Iterable[Path], budget_bytes: int = GROUP_BUDGET_BYTES, max_document_bytes: int = MAX_DOCUMENT_BYTES
) -> ImportResult:
    """All traces of the files at once (tests, small imports); the CLI streams `Importer.batches`."""
    importer = Importer(budget_bytes, max_document_bytes=max_document_bytes)
    for path in paths:
        importer.read(path)
    return ImportResult([trace for trace, _ in importer.traces()], importer.files)
