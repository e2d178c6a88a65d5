"""OpenSearch Dashboards saved objects for xraylake, generated from the index mappings.

`saved_objects(index_prefix)` builds every object (index patterns, visualizations, one dashboard)
from the field lists and the pipeline-health template in `tasks.mappings`, so a renamed field
breaks the structural test instead of an operator's chart. The traces and segments index patterns
are the target's read aliases, `<index_prefix>-traces` and `<index_prefix>-segments`; for a prefix
other than `xray` the visualization and dashboard ids carry the prefix too, so pipelines with
different prefixes can share one Dashboards. `write_ndjson()` writes `dashboards/xraylake.ndjson`
(the default prefix, committed; regenerate with `python -m tasks.dashboards`, or
`python -m tasks.dashboards <prefix>` for `dashboards/xraylake-<prefix>.ndjson`), and
`import_dashboards(url, ndjson_path)` posts it to a running OpenSearch Dashboards
(`import_dashboards(url, index_prefix=…)` posts the objects generated for that prefix):

    POST <url>/_dashboards/api/saved_objects/_import?overwrite=true
         multipart/form-data, field `file` = the ndjson; header `osd-xsrf: true`

`url` is the domain endpoint (Amazon OpenSearch Service serves Dashboards under `/_dashboards`);
for a self-hosted Dashboards without a base path pass `base_path=""` (e.g. `http://localhost:5601`).

Saved-object shapes follow what OpenSearch Dashboards 2.x exports: visualization `visState` /
`uiStateJSON` / `kibanaSavedObjectMeta.searchSourceJSON` as JSON strings, the index pattern
referenced through `indexRefName` + `references`, dashboard panels through `panelRefName`.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from tasks import mappings

NDJSON_PATH = Path(__file__).resolve().parent.parent / "dashboards" / "xraylake.ndjson"
DASHBOARD_ID = "xraylake-overview"
OSD_VERSION = "2.11.0"
_NAMESPACE = uuid.UUID("5d6c3f1e-8a4b-4c55-9a58-6f1f0e2b7a11")

# Index pattern ids are the titles (stable, readable); traces and segments follow the index prefix.
SPANS, HEALTH = mappings.SPAN_INDEX_PREFIX, mappings.HEALTH_INDEX


def _index_pattern_sources(index_prefix: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """index pattern id → (time field, mapping)."""
    templates = mappings.index_templates(index_prefix)
    traces, segments = mappings.traces_alias(index_prefix), mappings.segments_alias(index_prefix)
    return {
        traces: ("start", templates[traces]["template"]["mappings"]),
        segments: ("start", templates[segments]["template"]["mappings"]),
        SPANS: ("startTime", templates[mappings.SPAN_INDEX_PREFIX]["template"]["mappings"]),
        HEALTH: ("timestamp", mappings.health_index_template()["template"]["mappings"]),
    }


# ------------------------------------------------------------------------------ index patterns

_OSD_TYPES = {
    "keyword": "string",
    "text": "string",
    "date": "date",
    "date_nanos": "date",
    "double": "number",
    "float": "number",
    "long": "number",
    "integer": "number",
    "short": "number",
    "boolean": "boolean",
}


def pattern_fields(mapping: dict[str, Any]) -> list[dict[str, Any]]:
    """Index-pattern field list (what Dashboards' "refresh fields" would compute) from a mapping.

    Objects are flattened to dotted names; `nested` objects and dynamic objects without declared
    properties (annotations) are left out: Dashboards cannot aggregate on them directly.
    """
    fields: list[dict[str, Any]] = [
        {"name": "_id", "type": "string", "esTypes": ["_id"], "searchable": True, "aggregatable": True},
        {"name": "_index", "type": "string", "esTypes": ["_index"], "searchable": True, "aggregatable": True},
        {"name": "_score", "type": "number", "searchable": False, "aggregatable": False},
        {
            "name": "_source",
            "type": "_source",
            "esTypes": ["_source"],
            "searchable": False,
            "aggregatable": False,
        },
    ]

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, spec in sorted(properties.items()):
            full = f"{prefix}{name}"
            es_type = spec.get("type", "object")
            if es_type == "nested":
                continue
            if "properties" in spec:
                walk(spec["properties"], f"{full}.")
                continue
            if es_type not in _OSD_TYPES:
                continue
            fields.append(
                {
                    "name": full,
                    "type": _OSD_TYPES[es_type],
                    "esTypes": [es_type],
                    "searchable": True,
                    "aggregatable": es_type != "text",
                    "readFromDocValues": es_type != "text",
                    "count": 0,
                    "scripted": False,
                }
            )
            for sub, sub_spec in sorted(spec.get("fields", {}).items()):
                sub_type = sub_spec.get("type", "keyword")
                fields.append(
                    {
                        "name": f"{full}.{sub}",
                        "type": _OSD_TYPES.get(sub_type, "string"),
                        "esTypes": [sub_type],
                        "searchable": True,
                        "aggregatable": sub_type != "text",
                        "readFromDocValues": sub_type != "text",
                        "subType": {"multi": {"parent": full}},
                        "count": 0,
                        "scripted": False,
                    }
                )

    walk(mapping.get("properties", {}), "")
    return fields


def index_pattern(pattern_id: str, time_field: str, mapping: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": pattern_id,
        "type": "index-pattern",
        "attributes": {
            "title": pattern_id,
            "timeFieldName": time_field,
            "fields": json.dumps(pattern_fields(mapping), separators=(",", ":")),
        },
        "references": [],
        "migrationVersion": {"index-pattern": "7.6.0"},
    }


# ------------------------------------------------------------------------------ visualizations


@dataclass
class Vis:
    """One agg-based visualization: the parts that differ; `saved_object()` adds the boilerplate."""

    slug: str
    title: str
    pattern: str
    vis_type: str  # histogram | line | area | table | metric | pie
    aggs: list[dict[str, Any]]
    query: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    width: int = 24
    height: int = 15
    scope: str = ""  # the index prefix when it is not the default: ids stay apart per prefix

    @property
    def id(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"{self.scope}/{self.slug}" if self.scope else self.slug))

    def saved_object(self) -> dict[str, Any]:
        vis_state = {"title": self.title, "type": self.vis_type, "params": self.params, "aggs": self.aggs}
        search_source = {
            "query": {"query": self.query, "language": "kuery"},
            "filter": [],
            "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
        }
        return {
            "id": self.id,
            "type": "visualization",
            "attributes": {
                "title": self.title,
                "description": self.description,
                "version": 1,
                "visState": json.dumps(vis_state, separators=(",", ":")),
                "uiStateJSON": "{}",
                "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search_source, separators=(",", ":"))},
            },
            "references": [
                {
                    "id": self.pattern,
                    "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                    "type": "index-pattern",
                }
            ],
            "migrationVersion": {"visualization": "7.10.0"},
        }


def _agg(agg_id: int, agg_type: str, schema: str, **params: Any) -> dict[str, Any]:
    return {"id": str(agg_id), "enabled": True, "type": agg_type, "schema": schema, "params": params}


def _count(agg_id: int = 1, label: str | None = None) -> dict[str, Any]:
    return _agg(agg_id, "count", "metric", **({"customLabel": label} if label else {}))


def _date_histogram(agg_id: int, field_name: str, schema: str = "segment") -> dict[str, Any]:
    return _agg(
        agg_id,
        "date_histogram",
        schema,
        field=field_name,
        timeRange={"from": "now-24h", "to": "now"},
        useNormalizedOpenSearchInterval=True,
        interval="auto",
        drop_partials=False,
        min_doc_count=1,
        extended_bounds={},
    )


def _terms(
    agg_id: int,
    field_name: str,
    schema: str,
    size: int = 10,
    order_by: str = "1",
    label: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "field": field_name,
        "orderBy": order_by,
        "order": "desc",
        "size": size,
        "otherBucket": False,
        "otherBucketLabel": "Other",
        "missingBucket": False,
        "missingBucketLabel": "Missing",
    }
    if label:
        params["customLabel"] = label
    return _agg(agg_id, "terms", schema, **params, **extra)


def _xy_params(chart: str, mode: str = "stacked", y_title: str = "", percentage: bool = False) -> dict[str, Any]:
    """Params of the vislib xy charts (histogram/line/area)."""
    return {
        "type": chart,
        "grid": {"categoryLines": False},
        "categoryAxes": [
            {
                "id": "CategoryAxis-1",
                "type": "category",
                "position": "bottom",
                "show": True,
                "style": {},
                "scale": {"type": "linear"},
                "labels": {"show": True, "filter": True, "truncate": 100},
                "title": {},
            }
        ],
        "valueAxes": [
            {
                "id": "ValueAxis-1",
                "name": "LeftAxis-1",
                "type": "value",
                "position": "left",
                "show": True,
                "style": {},
                "scale": {"type": "linear", "mode": "percentage" if percentage else "normal"},
                "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                "title": {"text": y_title},
            }
        ],
        "seriesParams": [
            {
                "show": True,
                "type": chart,
                "mode": mode,
                "data": {"label": y_title, "id": "1"},
                "valueAxis": "ValueAxis-1",
                "drawLinesBetweenPoints": True,
                "lineWidth": 2,
                "showCircles": True,
                "interpolate": "linear",
            }
        ],
        "addTooltip": True,
        "addLegend": True,
        "legendPosition": "right",
        "times": [],
        "addTimeMarker": False,
        "labels": {"show": False},
        "thresholdLine": {"show": False, "value": 10, "width": 1, "style": "full", "color": "#E7664C"},
    }


def _table_params(per_page: int = 10) -> dict[str, Any]:
    return {
        "perPage": per_page,
        "showPartialRows": False,
        "showMetricsAtAllLevels": False,
        "showTotal": False,
        "totalFunc": "sum",
        "percentageCol": "",
    }


def _metric_params() -> dict[str, Any]:
    return {
        "addTooltip": True,
        "addLegend": False,
        "type": "metric",
        "metric": {
            "percentageMode": False,
            "useRanges": False,
            "colorSchema": "Green to Red",
            "metricColorMode": "None",
            "colorsRange": [{"from": 0, "to": 10000}],
            "labels": {"show": True},
            "invertColors": False,
            "style": {"bgFill": "#000", "bgColor": False, "labelColor": False, "subText": "", "fontSize": 36},
        },
    }


SFN_QUERY = "step_functions:true"
SERVICE_QUERY = "is_subsegment:false"


def _scope(index_prefix: str) -> str:
    return "" if index_prefix == mappings.INDEX_PREFIX else index_prefix


def visualizations(index_prefix: str = mappings.INDEX_PREFIX) -> list[Vis]:
    traces, segments = mappings.traces_alias(index_prefix), mappings.segments_alias(index_prefix)
    return [replace(vis, scope=_scope(index_prefix)) for vis in _visualizations(traces, segments)]


def _visualizations(traces: str, segments: str) -> list[Vis]:
    return [
        Vis(
            "traces-total",
            "Traces",
            traces,
            "metric",
            [
                _count(1, "Traces"),
                _agg(2, "cardinality", "metric", field="account_id", customLabel="Accounts"),
            ],
            params=_metric_params(),
            width=12,
            height=8,
        ),
        Vis(
            "executions-total",
            "Step Functions executions",
            traces,
            "metric",
            [
                _count(1, "Executions"),
                _agg(2, "sum", "metric", field="execution_duration_seconds", customLabel="Total duration (s)"),
            ],
            query=SFN_QUERY,
            params=_metric_params(),
            width=12,
            height=8,
        ),
        Vis(
            "execution-status",
            "Execution status of a step function",
            traces,
            "histogram",
            [
                _count(1, "Executions"),
                _terms(2, "state_machine_name", "segment", size=20, label="State machine"),
                _terms(3, "execution_status", "group", size=10, label="Status"),
            ],
            query=SFN_QUERY,
            params=_xy_params("histogram", y_title="Executions"),
            description="Executions by status per state machine (trace docs with step_functions=true).",
        ),
        Vis(
            "execution-duration-sum",
            "Sum of step function execution duration",
            traces,
            "histogram",
            [
                _agg(1, "sum", "metric", field="execution_duration_seconds", customLabel="Duration (s)"),
                _date_histogram(2, "start"),
                _terms(3, "state_machine_name", "group", size=20, label="State machine"),
            ],
            query=SFN_QUERY,
            params=_xy_params("histogram", y_title="Duration (s)"),
        ),
        Vis(
            "execution-duration-percentiles",
            "Step function execution duration p50 / p95",
            traces,
            "line",
            [
                _agg(1, "percentiles", "metric", field="execution_duration_seconds", percents=[50, 95]),
                _date_histogram(2, "start"),
                _terms(3, "state_machine_name", "group", size=10, order_by="_key", label="State machine"),
            ],
            query=SFN_QUERY,
            params=_xy_params("line", mode="normal", y_title="Duration (s)"),
        ),
        Vis(
            "traces-per-account",
            "Traces per account and environment",
            traces,
            "histogram",
            [
                _count(1, "Traces"),
                _date_histogram(2, "start"),
                _terms(3, "account_name", "group", size=50, label="Account"),
                _terms(4, "environment", "split", size=10, label="Environment", row=True),
            ],
            params=_xy_params("histogram", y_title="Traces"),
            width=48,
        ),
        Vis(
            "service-status-rate",
            "Error, fault and throttle rate per service",
            segments,
            "histogram",
            [
                _count(1, "Segments"),
                _terms(2, "service_name", "segment", size=25, label="Service"),
                _terms(3, "status", "group", size=5, label="Status"),
            ],
            query=SERVICE_QUERY,
            params=_xy_params("histogram", mode="percentage", y_title="Share of segments", percentage=True),
            description="Share of ok / error (4xx) / throttle (429) / fault (5xx) service segments.",
        ),
        Vis(
            "service-latency",
            "Latency percentiles per service",
            segments,
            "table",
            [
                _agg(1, "percentiles", "metric", field="duration", percents=[50, 90, 95, 99]),
                _agg(5, "avg", "metric", field="duration", customLabel="Average (s)"),
                _count(6, "Segments"),
                _terms(2, "service_name", "bucket", size=50, order_by="6", label="Service"),
            ],
            query=SERVICE_QUERY,
            params=_table_params(15),
        ),
        Vis(
            "top-exceptions",
            "Top exceptions",
            segments,
            "table",
            [
                _count(1, "Segments"),
                _agg(4, "cardinality", "metric", field="trace_id", customLabel="Traces"),
                _terms(2, "exception_type", "bucket", size=15, label="Exception"),
                _terms(3, "service_name", "bucket", size=5, label="Service"),
            ],
            query="exception_type:*",
            params=_table_params(15),
        ),
        Vis(
            "migration",
            "Migration: trace store and instrumentation per account and service",
            segments,
            "table",
            [
                _count(1, "Segments"),
                _terms(2, "account_name", "bucket", size=50, label="Account"),
                _terms(3, "service_name", "bucket", size=50, label="Service"),
                _terms(4, "source_store", "bucket", size=2, label="Store (xray | spans)"),
                _terms(5, "instrumentation", "bucket", size=3, label="Instrumentation"),
                _terms(6, "sdk", "bucket", size=3, label="SDK"),
            ],
            query=SERVICE_QUERY,
            params=_table_params(15),
            description="Where each service's traces are read (X-Ray API = xray, CloudWatch Transaction Search "
            "aws/spans = spans) and whether its segments come from an X-Ray SDK (xray-sdk) or OpenTelemetry: "
            "X-Ray SDKs and daemon reach end of support on 2027-02-25.",
        ),
        Vis(
            "slowest-executions",
            "Slowest step function executions",
            traces,
            "table",
            [
                _agg(1, "max", "metric", field="execution_duration_seconds", customLabel="Duration (s)"),
                _terms(2, "execution_name", "bucket", size=20, label="Execution"),
                _terms(3, "state_machine_name", "bucket", size=1, label="State machine"),
                _terms(4, "execution_status", "bucket", size=1, label="Status"),
                _terms(5, "account_name", "bucket", size=1, label="Account"),
            ],
            query=SFN_QUERY,
            params=_table_params(10),
        ),
        Vis(
            "failed-executions",
            "Failed step function executions",
            traces,
            "table",
            [
                _count(1, "Executions"),
                _terms(2, "state_machine_name", "bucket", size=20, label="State machine"),
                _terms(3, "execution_status", "bucket", size=5, label="Status"),
                _terms(4, "execution_error", "bucket", size=10, label="Error"),
            ],
            query=f"{SFN_QUERY} and not execution_status:SUCCEEDED and not execution_status:RUNNING",
            params=_table_params(10),
        ),
        Vis(
            "spans-per-service",
            "Spans per service (Trace Analytics schema)",
            SPANS,
            "line",
            [
                _count(1, "Spans"),
                _date_histogram(2, "startTime"),
                _terms(3, "serviceName", "group", size=15, label="Service"),
            ],
            params=_xy_params("line", mode="normal", y_title="Spans"),
        ),
        Vis(
            "health-watermark-lag",
            "Pipeline health: watermark lag per account",
            HEALTH,
            "line",
            [
                _agg(1, "max", "metric", field="watermark_lag_seconds", customLabel="Watermark lag (s)"),
                _date_histogram(2, "timestamp"),
                _terms(3, "account_id", "group", size=50, label="Account"),
            ],
            query="kind:sweep",
            params=_xy_params("line", mode="normal", y_title="Watermark lag (s)"),
        ),
        Vis(
            "health-dead-lettered",
            "Pipeline health: dead-lettered messages per run",
            HEALTH,
            "histogram",
            [
                _agg(1, "sum", "metric", field="dead_lettered", customLabel="Dead-lettered"),
                _date_histogram(2, "timestamp"),
                _terms(3, "kind", "group", size=10, label="Run kind"),
            ],
            params=_xy_params("histogram", y_title="Dead-lettered"),
        ),
        Vis(
            "health-runs",
            "Pipeline health: runs",
            HEALTH,
            "table",
            [
                _agg(1, "sum", "metric", field="traces", customLabel="Traces"),
                _agg(3, "sum", "metric", field="dead_lettered", customLabel="Dead-lettered"),
                _agg(4, "max", "metric", field="watermark_lag_seconds", customLabel="Max lag (s)"),
                _terms(2, "flow_run_id", "bucket", size=20, order_by="_key", label="Flow run"),
                _terms(5, "kind", "bucket", size=1, label="Kind"),
            ],
            params=_table_params(10),
        ),
    ]


# ------------------------------------------------------------------------------------ dashboard


def dashboard(vis: list[Vis], index_prefix: str = mappings.INDEX_PREFIX) -> dict[str, Any]:
    """One dashboard, panels laid out in a 48-column grid, rows packed left to right."""
    scope = _scope(index_prefix)
    panels: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    x = y = row_height = 0
    for index, item in enumerate(vis):
        if x + item.width > 48:
            x, y, row_height = 0, y + row_height, 0
        panel_index = str(index + 1)
        panels.append(
            {
                "version": OSD_VERSION,
                "gridData": {"x": x, "y": y, "w": item.width, "h": item.height, "i": panel_index},
                "panelIndex": panel_index,
                "embeddableConfig": {},
                "panelRefName": f"panel_{index}",
            }
        )
        references.append({"name": f"panel_{index}", "type": "visualization", "id": item.id})
        x += item.width
        row_height = max(row_height, item.height)
    return {
        "id": f"{DASHBOARD_ID}-{scope}" if scope else DASHBOARD_ID,
        "type": "dashboard",
        "attributes": {
            "title": "xraylake: X-Ray traces and Step Functions" + (f" ({scope}-*)" if scope else ""),
            "description": "Step Functions executions, services, exceptions and pipeline health "
            "across the organization's accounts.",
            "hits": 0,
            "panelsJSON": json.dumps(panels, separators=(",", ":")),
            "optionsJSON": json.dumps({"hidePanelTitles": False, "useMargins": True}),
            "version": 1,
            "timeRestore": True,
            "timeFrom": "now-24h",
            "timeTo": "now",
            "refreshInterval": {"pause": True, "value": 0},
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}, "filter": []})
            },
        },
        "references": references,
        "migrationVersion": {"dashboard": "7.9.3"},
    }


def saved_objects(index_prefix: str = mappings.INDEX_PREFIX) -> list[dict[str, Any]]:
    """Index patterns first, then visualizations, then the dashboard (import resolves in order)."""
    vis = visualizations(index_prefix)
    patterns = [
        index_pattern(pid, time_field, mapping)
        for pid, (time_field, mapping) in _index_pattern_sources(index_prefix).items()
    ]
    return [*patterns, *(v.saved_object() for v in vis), dashboard(vis, index_prefix)]


def render_ndjson(objects: list[dict[str, Any]] | None = None, index_prefix: str = mappings.INDEX_PREFIX) -> bytes:
    """One object per line, keys sorted: regenerating yields byte-identical output."""
    objects = objects or saved_objects(index_prefix)
    return b"".join(orjson.dumps(o, option=orjson.OPT_SORT_KEYS) + b"\n" for o in objects)


def ndjson_name(index_prefix: str = mappings.INDEX_PREFIX) -> str:
    """`xraylake.ndjson` for the default prefix, `xraylake-<prefix>.ndjson` for another."""
    scope = _scope(index_prefix)
    return f"xraylake-{scope}.ndjson" if scope else "xraylake.ndjson"


def write_ndjson(path: Path = NDJSON_PATH, index_prefix: str = mappings.INDEX_PREFIX) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_ndjson(index_prefix=index_prefix))
    return path


# --------------------------------------------------------------------------------------- import


class DashboardsImportError(RuntimeError):
    """OpenSearch Dashboards refused the import (or reported per-object errors)."""


def import_url(url: str, base_path: str = "_dashboards") -> str:
    base = url.rstrip("/")
    prefix = base_path.strip("/")
    if prefix and not base.endswith(f"/{prefix}"):
        base = f"{base}/{prefix}"
    return f"{base}/api/saved_objects/_import?overwrite=true"


def import_request(
    url: str,
    ndjson: bytes,
    filename: str = "xraylake.ndjson",
    boundary: str | None = None,
    base_path: str = "_dashboards",
) -> tuple[str, dict[str, str], bytes]:
    """(request URL, headers, multipart body) for `POST …/api/saved_objects/_import?overwrite=true`."""
    boundary = boundary or f"xraylake-{uuid.uuid4().hex}"
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
            b"Content-Type: application/ndjson\r\n\r\n",
            ndjson,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    headers = {
        "osd-xsrf": "true",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(body)),
    }
    return import_url(url, base_path), headers, body


def import_dashboards(
    url: str,
    ndjson_path: str | Path = NDJSON_PATH,
    *,
    index_prefix: str | None = None,
    base_path: str = "_dashboards",
    username: str | None = None,
    password: str | None = None,
    timeout: float = 60.0,
    verify_tls: bool = True,
) -> dict[str, Any]:
    """Import the saved objects (overwriting ours); returns Dashboards' JSON answer.

    `index_prefix`: post the objects generated for that prefix (the target's `index_prefix`)
    instead of the file. Raises `DashboardsImportError` on an HTTP error or when the answer says
    `success: false`.
    """
    import ssl
    import urllib.error
    import urllib.request

    if index_prefix is None:
        path = Path(ndjson_path)
        ndjson, filename = path.read_bytes(), path.name
    else:
        ndjson, filename = render_ndjson(index_prefix=index_prefix), ndjson_name(index_prefix)
    request_url, headers, body = import_request(url, ndjson, filename=filename, base_path=base_path)
    if username is not None:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(request_url, data=body, headers=headers, method="POST")
    context = None
    if request_url.startswith("https:") and not verify_tls:
        context = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:500]
        raise DashboardsImportError(f"import to {request_url} failed: HTTP {error.code}: {detail}") from None
    except urllib.error.URLError as error:
        raise DashboardsImportError(f"import to {request_url} failed: {error.reason}") from None
    if not answer.get("success", False):
        errors = answer.get("errors") or []
        summary = "; ".join(f"{e.get('type')}/{e.get('id')}: {e.get('error')}" for e in errors[:5])
        raise DashboardsImportError(f"import to {request_url} reported errors: {summary or answer}")
    return answer


if __name__ == "__main__":  # pragma: no cover - regeneration helper
    import sys

    prefix = sys.argv[1] if len(sys.argv) > 1 else mappings.INDEX_PREFIX
    print(write_ndjson(NDJSON_PATH.with_name(ndjson_name(prefix)), prefix))
