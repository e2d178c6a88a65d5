"""B7 import: MB/s and peak RSS of reading a large export, against plain orjson on the same documents.

A ~200 MB file (`--quick`: ~20 MB) of pretty-printed, concatenated segment documents (`jq .`
output: the layout with the most lines per document) is generated from the real-shaped fixtures
(the 25 KB DynamoDB segment with its subsegments, and the small AWS-docs segments), each copy with
its own trace and segment ids, a few segments per trace. Each job runs in a child process of its
own, so each peak RSS (VmHWM) belongs to that job alone:

- `orjson_whole`: the baseline — the file read into memory at once and `orjson.loads` of every
  document, sliced at offsets known from generation (no boundary finding at all);
- `stream_parse`: `tasks.jsonstream.documents` over the file in chunks + `orjson.loads` of each;
- `import`: `tasks.importer.Importer.read` (+ checks, grouping into traces, spilling past its
  budget) and every trace handed out, as `xraylake import` does before it sends;
- `import_gzip`: the same on the file gzipped (level 1).

`orjson_whole` and `stream_parse` run alternately, three rounds each, and the best round of each
is compared (`mb_per_s_rounds` lists them all): on a shared machine the load drifts within a run.

Targets: `stream_parse` ≥ 0.5 × orjson_whole's MB/s (boundaries found in C, not per byte in
Python); `import` peak RSS ≤ interpreter + 150 MB on the 200 MB file, and below orjson_whole's.

`--megabytes 1024` runs the same jobs on a 1 GB file (the issue's "a 1 GB file in bounded memory")
and writes `bench/results/bench_import_1024mb.json`, beside the 200 MB result.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import orjson

TARGET_MB = 200
QUICK_MB = 20
ROUNDS = 3


def generate(path: Path, megabytes: int) -> list[tuple[int, int]]:
    """Pretty-printed segment documents up to `megabytes`; returns each document's byte range."""
    big = orjson.loads((common.FIXTURES / "otel_ddb_sample.json").read_bytes())
    small = [
        orjson.loads((common.FIXTURES / f"{name}.json").read_bytes())
        for name in ("awsdocs_minimal_segment", "awsdocs_annotations_segment", "awsdocs_sql_subsegment")
    ]
    templates = []
    for document in [big, *small]:
        document = dict(document, trace_id="1-TTTTTTTT-TTTTTTTTTTTTTTTTTTTTTTTT", id="SSSSSSSSSSSSSSSS")
        document.pop("parent_id", None)
        document.pop("type", None)
        document.setdefault("end_time", document.get("start_time", 0) + 1)
        document["start_time"], document["end_time"] = common.NOW, common.NOW + 0.25
        document.pop("in_progress", None)
        templates.append(json.dumps(document, indent=2).encode() + b"\n")
    limit = megabytes * 1024 * 1024
    ranges = []
    offset = number = 0
    with path.open("wb") as out:
        while offset < limit:
            trace = f"1-{int(common.NOW):08x}-{number // 4:024x}".encode()
            text = templates[number % len(templates)].replace(b"1-TTTTTTTT-TTTTTTTTTTTTTTTTTTTTTTTT", trace)
            text = text.replace(b"SSSSSSSSSSSSSSSS", f"{number:016x}".encode())
            out.write(text)
            ranges.append((offset, offset + len(text)))
            offset += len(text)
            number += 1
    return ranges


def child(mode: str, path: Path, ranges_path: Path) -> dict[str, Any]:
    start_rss = common.peak_rss_mb()
    sys.path.insert(0, str(common.ROOT))
    from tasks.importer import Importer, file_chunks
    from tasks.jsonstream import documents

    after_imports = common.peak_rss_mb()
    tick = time.perf_counter()
    count = 0
    if mode == "orjson_whole":
        data = path.read_bytes()
        for begin, end in orjson.loads(ranges_path.read_bytes()):
            orjson.loads(data[begin:end])
            count += 1
    elif mode == "stream_parse":
        for found in documents(file_chunks(path)):
            assert found.data is not None, found.problem
            if found.value is None:  # parsed by the reader already on its fast path
                orjson.loads(found.data)
            count += 1
    else:
        importer = Importer()
        report = importer.read(path)
        assert report.rejected == 0, report.rejections[:3]
        count = sum(len(trace["Segments"]) for trace, _ in importer.traces())
        assert count == report.segments_read
    seconds = time.perf_counter() - tick
    size = (path.stat().st_size if mode != "import_gzip" else path.with_suffix("").stat().st_size) / 1e6
    return {
        "documents": count,
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / seconds, 1),
        "peak_rss_mb": round(common.peak_rss_mb(), 1),
        "rss_after_imports_mb": round(after_imports, 1),
        "rss_start_mb": round(start_rss, 1),
    }


def run_child(mode: str, path: Path, ranges_path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path), str(ranges_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    common.log(f"{mode}: {result}")
    return result


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
        return
    args = common.parse_args(
        __doc__ or "",
        lambda parser: parser.add_argument("--megabytes", type=int, default=TARGET_MB, help="file size"),
    )
    started = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    megabytes = QUICK_MB if args.quick else args.megabytes
    with tempfile.TemporaryDirectory(prefix="bench-import-") as folder:
        path = Path(folder) / "segments.json"
        ranges = generate(path, megabytes)
        ranges_path = Path(folder) / "ranges.json"
        ranges_path.write_bytes(orjson.dumps(ranges))
        with path.open("rb") as source, gzip.open(Path(folder) / "segments.json.gz", "wb", compresslevel=1) as out:
            while block := source.read(1 << 20):
                out.write(block)
        common.log(f"generated {path.stat().st_size / 1e6:.1f} MB, {len(ranges)} documents")
        # the two fast jobs alternate ROUNDS times (the load of a shared machine drifts): best of each
        rounds: dict[str, list[dict[str, Any]]] = {"orjson_whole": [], "stream_parse": []}
        for _ in range(ROUNDS):
            for mode, runs in rounds.items():
                runs.append(run_child(mode, path, ranges_path))
        results = {}
        for mode, runs in rounds.items():
            best = max(runs, key=lambda run: run["mb_per_s"])
            results[mode] = best | {"mb_per_s_rounds": [run["mb_per_s"] for run in runs]}
        results["import"] = run_child("import", path, ranges_path)
        results["import_gzip"] = run_child("import_gzip", Path(folder) / "segments.json.gz", ranges_path)
        file_mb = path.stat().st_size / 1e6
    base = results["orjson_whole"]
    interpreter = results["import"]["rss_after_imports_mb"]
    metrics = {
        "load_average_at_start": load_at_start,
        "file_mb": round(file_mb, 1),
        "documents": len(ranges),
        "jobs": results,
        "ratios": {
            "stream_parse_vs_orjson_mb_per_s": round(results["stream_parse"]["mb_per_s"] / base["mb_per_s"], 3),
            "import_vs_orjson_mb_per_s": round(results["import"]["mb_per_s"] / base["mb_per_s"], 3),
            "import_gzip_vs_orjson_mb_per_s": round(results["import_gzip"]["mb_per_s"] / base["mb_per_s"], 3),
            "import_peak_rss_vs_orjson_whole": round(results["import"]["peak_rss_mb"] / base["peak_rss_mb"], 3),
        },
        "targets": {
            "stream_parse_vs_orjson_mb_per_s": common.target(
                results["stream_parse"]["mb_per_s"] / base["mb_per_s"], 0.5
            ),
            "import_peak_rss_above_interpreter_mb": common.target(
                results["import"]["peak_rss_mb"] - interpreter, 150.0, higher_is_better=False
            ),
        },
    }
    name = "bench_import" if megabytes in (TARGET_MB, QUICK_MB) else f"bench_import_{megabytes}mb"
    common.finish(name, args, metrics, started)


if __name__ == "__main__":
    main()
