"""Dashboards saved objects: generated file is current, every reference resolves, every field exists
in the index templates; the import request goes over real HTTP to a small local server."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from blocks.config import Config
from tasks import dashboards, mappings
from tasks.dashboards import (
    NDJSON_PATH,
    DashboardsImportError,
    import_dashboards,
    render_ndjson,
    saved_objects,
)
from tasks.index import client_for, ensure_health_template
from tasks.mappings import HEALTH_FIELDS, HEALTH_INDEX, health_index_template

REQUIRED_TITLES = {
    "Execution status of a step function",
    "Sum of step function execution duration",
    "Step function execution duration p50 / p95",
    "Traces per account and environment",
    "Error, fault and throttle rate per service",
    "Latency percentiles per service",
    "Top exceptions",
    "Pipeline health: watermark lag per account",
    "Pipeline health: dead-lettered messages per run",
}
NUMERIC_AGGS = {"sum", "avg", "max", "min", "percentiles", "median"}


def _objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in NDJSON_PATH.read_text().splitlines() if line.strip()]


def _mapping_types(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted field name → OpenSearch type, from a mapping's properties (multi-fields included)."""
    out: dict[str, str] = {}
    for name, spec in properties.items():
        full = f"{prefix}{name}"
        if spec.get("type") == "nested":  # not aggregatable without a nested agg: left out
            out[full] = "nested"
            continue
        if "properties" in spec:
            out |= _mapping_types(spec["properties"], f"{full}.")
            continue
        out[full] = spec.get("type", "object")
        for sub, sub_spec in spec.get("fields", {}).items():
            out[f"{full}.{sub}"] = sub_spec["type"]
    return out


def _template_fields() -> dict[str, dict[str, str]]:
    """Index pattern → field types, straight from the templates the pipeline installs."""
    templates = mappings.index_templates("xray")
    return {
        "xray-traces": _mapping_types(templates["xray-traces"]["template"]["mappings"]["properties"]),
        "xray-segments": _mapping_types(templates["xray-segments"]["template"]["mappings"]["properties"]),
        "otel-v1-apm-span": _mapping_types(templates[mappings.SPAN_INDEX_PREFIX]["template"]["mappings"]["properties"]),
        HEALTH_INDEX: _mapping_types(health_index_template()["template"]["mappings"]["properties"]),
    }


def test_committed_ndjson_is_what_the_module_generates() -> None:
    assert NDJSON_PATH.read_bytes() == render_ndjson(), "run `python -m tasks.dashboards` and commit the file"
    assert render_ndjson() == render_ndjson()  # deterministic (ids are uuid5, keys sorted)


def test_objects_index_patterns_and_dashboard() -> None:
    objects = _objects()
    assert len({(o["type"], o["id"]) for o in objects}) == len(objects)
    patterns = {o["id"]: o for o in objects if o["type"] == "index-pattern"}
    assert set(patterns) == {"xray-traces", "xray-segments", "otel-v1-apm-span", HEALTH_INDEX}
    assert {p["attributes"]["title"] for p in patterns.values()} == set(patterns)
    time_fields = {k: p["attributes"]["timeFieldName"] for k, p in patterns.items()}
    assert time_fields == {
        "xray-traces": "start",
        "xray-segments": "start",
        "otel-v1-apm-span": "startTime",
        HEALTH_INDEX: "timestamp",
    }
    template_fields = _template_fields()
    for pattern_id, pattern in patterns.items():
        fields = {f["name"]: f for f in json.loads(pattern["attributes"]["fields"])}
        declared = {k: v for k, v in template_fields[pattern_id].items() if v not in {"object", "nested"}}
        # The index pattern lists exactly the mapped fields (plus meta fields) with matching types.
        assert {n for n in fields if not n.startswith("_")} == set(declared), pattern_id
        for name, es_type in declared.items():
            assert fields[name]["esTypes"] == [es_type], (pattern_id, name)
            assert fields[name]["aggregatable"] == (es_type != "text"), (pattern_id, name)
        assert fields[time_fields[pattern_id]]["type"] == "date"

    titles = {o["attributes"]["title"] for o in objects if o["type"] == "visualization"}
    assert titles >= REQUIRED_TITLES

    (board,) = [o for o in objects if o["type"] == "dashboard"]
    panels = json.loads(board["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in board["references"]}
    visualizations = {o["id"] for o in objects if o["type"] == "visualization"}
    assert {refs[p["panelRefName"]]["id"] for p in panels} == visualizations
    assert all(refs[p["panelRefName"]]["type"] == "visualization" for p in panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridData"]
        assert grid["x"] >= 0, grid
        assert grid["x"] + grid["w"] <= 48, grid
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"panel {panel['panelIndex']} overlaps another"
        cells |= area


def test_every_visualization_references_an_existing_pattern_and_mapped_fields() -> None:
    objects = _objects()
    patterns = {o["id"]: o for o in objects if o["type"] == "index-pattern"}
    template_fields = _template_fields()
    for vis in (o for o in objects if o["type"] == "visualization"):
        title = vis["attributes"]["title"]
        search = json.loads(vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        refs = {r["name"]: r for r in vis["references"]}
        ref = refs[search["indexRefName"]]
        assert ref["type"] == "index-pattern"
        assert ref["id"] in patterns, title
        pattern_fields = {f["name"]: f for f in json.loads(patterns[ref["id"]]["attributes"]["fields"])}
        mapped = template_fields[ref["id"]]

        state = json.loads(vis["attributes"]["visState"])
        assert state["title"] == title
        assert state["aggs"], title
        for agg in state["aggs"]:
            field = agg["params"].get("field")
            if agg["type"] == "count":
                assert field is None
                continue
            assert field in mapped, (title, field)
            assert field in pattern_fields, (title, field)
            assert pattern_fields[field]["aggregatable"], (title, field)
            if agg["type"] == "date_histogram":
                assert mapped[field] in {"date", "date_nanos"}, (title, field)
            elif agg["type"] in NUMERIC_AGGS:
                assert mapped[field] in {"double", "long", "integer", "float"}, (title, field)
            elif agg["type"] == "terms":
                assert mapped[field] in {"keyword", "long", "integer", "boolean"}, (title, field)
        # Fields named in the KQL query exist too (`field:value` terms).
        for name in re.findall(r"([A-Za-z_][\w.]*)\s*:", search["query"]["query"]):
            assert name in mapped, (title, name)


def test_health_template_names_the_documented_fields(fresh_config: Config) -> None:
    required = {
        "kind",
        "flow_run_id",
        "timestamp",
        "account_id",
        "watermark_lag_seconds",
        "dead_lettered",
        "traces",
    }
    assert required <= set(HEALTH_FIELDS)
    from tasks.index import client_for

    client = client_for(fresh_config.opensearch)
    ensure_health_template(client)
    client.index(
        index=HEALTH_INDEX,
        body={
            "kind": "sweep",
            "flow_run_id": "r1",
            "timestamp": "2026-01-01T00:00:00Z",
            "account_id": "011111111111",
            "watermark_lag_seconds": 120.5,
            "dead_lettered": 0,
            "traces": 3,
            "extra_note": "kept",
        },
        refresh=True,
    )
    mapping = client.indices.get_mapping(index=HEALTH_INDEX)[HEALTH_INDEX]["mappings"]["properties"]
    assert mapping["account_id"]["type"] == "keyword"  # never a number: ids keep their leading zero
    assert mapping["timestamp"]["type"] == "date"
    assert mapping["watermark_lag_seconds"]["type"] == "double"


def test_dashboards_point_at_the_indices_of_the_target_index_prefix(prefixed_config: Config, recorder: Any) -> None:
    prefix = prefixed_config.opensearch.index_prefix
    objects = saved_objects(prefix)
    assert "xray-traces" not in render_ndjson(index_prefix=prefix).decode()
    assert "xray-segments" not in render_ndjson(index_prefix=prefix).decode()
    patterns = {o["id"]: o for o in objects if o["type"] == "index-pattern"}
    assert set(patterns) == {"acme-traces", "acme-segments", "otel-v1-apm-span", HEALTH_INDEX}
    # Visualizations and the dashboard get ids of their own: both prefixes can live in one Dashboards.
    default_ids = {o["id"] for o in saved_objects() if o["type"] != "index-pattern"}
    for vis in (o for o in objects if o["type"] == "visualization"):
        assert {r["id"] for r in vis["references"]} <= set(patterns), vis["attributes"]["title"]
        assert vis["id"] not in default_ids
    (board,) = [o for o in objects if o["type"] == "dashboard"]
    assert board["id"] not in default_ids
    # On the real cluster, each pattern's title finds this prefix's documents (not the decoy's).
    client = client_for(prefixed_config.opensearch)
    for pattern_id in ("acme-traces", "acme-segments"):
        attributes = patterns[pattern_id]["attributes"]
        hits = client.search(index=attributes["title"], body={"size": 50})["hits"]["hits"]
        assert {h["_source"]["account_name"] for h in hits} == {"acme"}, pattern_id
        assert all(attributes["timeFieldName"] in h["_source"] for h in hits)
    # Importing for the prefix posts these objects, not the committed default file.
    url, handler = recorder
    import_dashboards(url, index_prefix=prefix)
    (request,) = handler.requests
    assert _multipart_file(request) == ("xraylake-acme.ndjson", render_ndjson(index_prefix=prefix))


# --------------------------------------------------------------------------- import over HTTP


class _Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    answer: tuple[int, dict[str, Any]] = (200, {"success": True})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        type(self).requests.append(
            {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        )
        status, payload = type(self).answer
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"requests": [], "answer": (200, {"success": True})})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _multipart_file(request: dict[str, Any]) -> tuple[str | None, bytes]:
    raw = f"Content-Type: {request['headers']['content-type']}\r\n\r\n".encode() + request["body"]
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart()
    (part,) = list(message.iter_parts())  # type: ignore[attr-defined]
    assert part.get_param("name", header="content-disposition") == "file"
    return part.get_filename(), part.get_payload(decode=True)


def test_import_posts_the_ndjson_as_multipart_with_the_xsrf_header(recorder: tuple[str, Any]) -> None:
    url, handler = recorder
    handler.answer = (200, {"success": True, "successCount": len(saved_objects())})
    answer = import_dashboards(url, NDJSON_PATH)
    assert answer["successCount"] == len(saved_objects())
    (request,) = handler.requests
    assert request["path"] == "/_dashboards/api/saved_objects/_import?overwrite=true"
    assert request["headers"]["osd-xsrf"] == "true"
    assert request["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert "authorization" not in request["headers"]
    filename, content = _multipart_file(request)
    assert filename == "xraylake.ndjson"
    assert content == NDJSON_PATH.read_bytes()


def test_import_base_path_and_basic_auth(recorder: tuple[str, Any]) -> None:
    url, handler = recorder
    import_dashboards(f"{url}/", NDJSON_PATH, base_path="", username="admin", password="s3cret")
    import_dashboards(f"{url}/_dashboards", NDJSON_PATH)  # not doubled
    first, second = handler.requests
    assert first["path"] == "/api/saved_objects/_import?overwrite=true"
    assert first["headers"]["authorization"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert second["path"] == "/_dashboards/api/saved_objects/_import?overwrite=true"


def test_import_reports_refusals(recorder: tuple[str, Any]) -> None:
    url, handler = recorder
    handler.answer = (
        200,
        {
            "success": False,
            "errors": [{"type": "visualization", "id": "x", "error": {"type": "missing_references"}}],
        },
    )
    with pytest.raises(DashboardsImportError, match="visualization/x"):
        import_dashboards(url, NDJSON_PATH)
    handler.answer = (400, {"statusCode": 400, "error": "Bad Request", "message": "Invalid file extension"})
    with pytest.raises(DashboardsImportError, match="HTTP 400"):
        import_dashboards(url, NDJSON_PATH)
    with pytest.raises(DashboardsImportError, match="failed"):
        import_dashboards("http://127.0.0.1:9", NDJSON_PATH, timeout=5)


def test_module_regenerates_the_file(tmp_path: Any) -> None:
    path = dashboards.write_ndjson(tmp_path / "out.ndjson")
    assert path.read_bytes() == NDJSON_PATH.read_bytes()
