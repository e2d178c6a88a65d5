"""Finding JSON documents in a byte stream (pure): every layout, any chunking, one verdict per bad
document with its line, bounded memory."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tasks.jsonstream import Found, documents, inflate
from tests.fixtures import load_fixture_text

DDB = load_fixture_text("xray/otel_ddb_sample.json")  # 25 KB, pretty-printed, many nested objects
MINIMAL = load_fixture_text("xray/awsdocs_minimal_segment.json")
HEADER = '{"format": "json", "version": 1}'


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def scan(data: bytes, size: int = 1 << 20, **limits: Any) -> list[Found]:
    return list(documents(chunked(data, size), **limits))


def summary(found: list[Found]) -> list[tuple[Any, ...]]:
    """What a reader sees: line, context, index, the parsed document or the problem."""
    return [
        (f.line, f.context, f.index, orjson.loads(f.data) if f.data is not None else None, f.problem) for f in found
    ]


def layouts() -> dict[str, tuple[bytes, list[tuple[Any, ...]]]]:
    ddb, minimal = json.loads(DDB), json.loads(MINIMAL)
    compact_ddb, compact_min = json.dumps(ddb), json.dumps(minimal)
    ddb_lines, min_lines = DDB.count("\n"), MINIMAL.count("\n")
    page = {"Traces": [{"Id": "t1", "Segments": [{"Id": "s", "Document": compact_ddb}]}], "UnprocessedTraceIds": []}
    pretty_page = json.dumps(page, indent=2)
    header = json.loads(HEADER)
    return {
        "one document": (DDB.encode(), [(1, "", -1, ddb, None)]),
        "ndjson": (
            f"{compact_min}\n{compact_ddb}\n\n{compact_min}\n".encode(),
            [(1, "", -1, minimal, None), (2, "", -1, ddb, None), (4, "", -1, minimal, None)],
        ),
        "jq . output": (
            f"{DDB}\n{MINIMAL}{DDB}".encode(),
            [
                (1, "", -1, ddb, None),
                (ddb_lines + 2, "", -1, minimal, None),
                (ddb_lines + min_lines + 2, "", -1, ddb, None),
            ],
        ),
        "concatenated on one line": (
            f"{compact_min}{compact_min} {compact_ddb}".encode(),
            [(1, "", -1, minimal, None), (1, "", -1, minimal, None), (1, "", -1, ddb, None)],
        ),
        "array": (
            f"[\n{DDB},\n  {compact_min}\n]\n{compact_min}".encode(),
            [(2, "[]", 0, ddb, None), (ddb_lines + 3, "[]", 1, minimal, None), (ddb_lines + 5, "", -1, minimal, None)],
        ),
        "daemon packets": (
            f"{HEADER}\n{DDB}\n{HEADER}\n{compact_min}\n{HEADER}{compact_min}".encode(),
            [
                (1, "", -1, header, None),
                (2, "", -1, ddb, None),
                (ddb_lines + 3, "", -1, header, None),
                (ddb_lines + 4, "", -1, minimal, None),
                (ddb_lines + 5, "", -1, header, None),
                (ddb_lines + 5, "", -1, minimal, None),
            ],
        ),
        "batch-get-traces pages": (
            (pretty_page + "\n" + json.dumps(page | {"Traces": page["Traces"] * 2})).encode(),
            [(3, "Traces[]", 0, page["Traces"][0], None)]
            + [(pretty_page.count("\n") + 2, "Traces[]", n, page["Traces"][0], None) for n in (0, 1)],
        ),
    }


@pytest.mark.parametrize("layout", list(layouts()))
def test_every_layout_gives_its_documents_with_their_first_line_whatever_the_chunking(layout: str) -> None:
    data, expected = layouts()[layout]
    for size in (1 << 20, 4096, 7):
        assert summary(scan(data, size)) == expected, size


def test_a_bom_and_crlf_line_ends_are_read() -> None:
    data = b"\xef\xbb\xbf" + MINIMAL.replace("\n", "\r\n").encode() + b"\r\n" + MINIMAL.encode()
    assert [f.line for f in scan(data)] == [1, MINIMAL.count("\n") + 2]
    assert all(f.problem is None for f in scan(data))


def test_a_truncated_line_is_one_refusal_and_the_next_lines_are_read() -> None:
    good = json.dumps(json.loads(MINIMAL))
    data = f'{good}\n{{"id": "ab", "subsegments": [{{"id": 1}}\n{good}\n{{"name": "cut\n{good}\n'.encode()
    for size in (1 << 20, 5):
        assert summary(scan(data, size)) == [
            (1, "", -1, json.loads(good), None),
            (2, "", -1, None, "not closed before line 3, where a new document starts"),
            (3, "", -1, json.loads(good), None),
            (4, "", -1, None, "not JSON: byte b'\\n' inside a string at line 4"),
            (5, "", -1, json.loads(good), None),
        ]


def test_a_truncated_file_is_one_refusal_at_the_line_where_the_document_starts() -> None:
    data = (MINIMAL + DDB[: len(DDB) // 2]).encode()
    found = scan(data, 1000)
    assert [(f.line, f.problem) for f in found] == [
        (1, None),
        (MINIMAL.count("\n") + 1, "not closed at the end of the stream (truncated?)"),
    ]


def test_binary_garbage_is_one_refusal_however_many_lines_it_has() -> None:
    garbage = bytes(range(256)) * 40  # 10 KB holding 40 newlines and stray brackets
    data = MINIMAL.encode() + b"\n" + garbage + b"\n" + MINIMAL.encode()
    found = scan(data, 333)
    line = MINIMAL.count("\n") + 2
    assert [(f.line, f.problem) for f in found] == [
        (1, None),
        (line, "not JSON: starts with b'\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\\t'"),
        (line + 41, None),
    ]


def test_mismatched_brackets_and_stray_text_between_documents() -> None:
    # what follows a broken document up to the next line starting with { or [ goes with it
    data = b'{"a": [1}\n]]\n{"b": 2}\n]]\n{"c": 3}'
    assert summary(scan(data)) == [
        (1, "", -1, None, "not JSON: brackets do not match at line 1"),
        (3, "", -1, {"b": 2}, None),
        (4, "", -1, None, "not JSON: starts with b']]'"),
        (5, "", -1, {"c": 3}, None),
    ]


def test_nesting_10000_deep_is_refused_before_any_parse_in_bounded_memory() -> None:
    deep = b'{"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    unclosed = b'{"a": ' + b"[" * 10_000
    data = deep + b"\n" + MINIMAL.encode() + b"\n" + unclosed + b"\n" + MINIMAL.encode()
    for size in (1 << 20, 999):
        found = scan(data, size)
        assert [(f.line, f.problem) for f in found] == [
            (1, "nested deeper than 512 levels (the import limit)"),
            (2, None),
            (
                MINIMAL.count("\n") + 3,
                "nested deeper than 512 levels (the import limit); not closed before the next document",
            ),
            (MINIMAL.count("\n") + 4, None),
        ]
    assert scan(b"[" * 600 + b"]" * 600, max_depth=600)[0].problem is None  # the limit is the limit


def test_a_10_mb_annotation_is_refused_without_being_held() -> None:
    document = json.loads(MINIMAL)
    big = json.dumps(document | {"annotations": {"blob": "x" * 10_000_000}}).encode()
    data = MINIMAL.encode() + b"\n" + big + b"\n" + MINIMAL.encode()
    tracemalloc.start()
    try:
        found = [(f.line, f.problem) for f in documents(chunked(data, 1 << 20))]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    line = MINIMAL.count("\n") + 2
    assert found == [(1, None), (line, "larger than 4,194,304 bytes (the import limit per document)"), (line + 1, None)]
    assert peak < 7 * 1024 * 1024  # the 4 MiB limit + one chunk + a copy, not the 10 MB document


def test_gzip_members_are_inflated_in_turn_and_errors_end_the_stream_with_one_refusal() -> None:
    data = gzip.compress(DDB.encode()) + gzip.compress(MINIMAL.encode())
    assert [f.problem for f in documents(inflate(chunked(data, 100)))] == [None, None]
    truncated = [f.problem for f in documents(inflate(chunked(data[:-20], 100)))]
    assert truncated == [None, f"not closed: gzip stream truncated after {len(data) - 20:,} compressed bytes"]
    trailing = [f.problem for f in documents(inflate([gzip.compress(DDB.encode()) + b"junk"]))]
    assert trailing[0] is None
    assert trailing[1].startswith("bad gzip data within the first")


def test_a_gzip_bomb_stops_at_the_cap_as_one_refusal() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = packer.compress(b"\0" * (16 * 1024 * 1024)) + packer.flush()  # ~16 KB inflating 1000x
    data = gzip.compress(MINIMAL.encode()) + bomb
    found = list(documents(inflate(chunked(data, 16 * 1024), min_cap=1024 * 1024, max_ratio=200)))
    assert [f.line for f in found] == [1, MINIMAL.count("\n") + 1]
    assert found[0].problem is None
    assert found[1].problem is not None
    assert found[1].problem.startswith("not JSON: starts with b'\\x00")
    assert "; gzip stream inflates past" in found[1].problem
    assert found[1].problem.endswith("(the cap is 200x the compressed size, at least 1,048,576 bytes): reading stopped")


def test_array_elements_that_are_not_objects_are_refused_alone() -> None:
    data = b'[1, "a,\\"]b", {"x": 1}, null]'
    assert [(f.index, f.problem) for f in scan(data, 3)] == [
        (0, "array element is not a JSON object: b'1'"),
        (1, 'array element is not a JSON object: b\'"a,\\\\"]b"\''),
        (2, None),
        (3, "array element is not a JSON object: b'null'"),
    ]
