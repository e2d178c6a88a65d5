"""The xraylake report: OpenSearch aggregations → `ReportData` → one self-contained HTML file.

`build_report(client, since, now, index_prefix=…)` asks the read aliases (`<prefix>-traces`,
`<prefix>-segments`: `xray-…` by default, the target's `index_prefix` from `run_report`, and the
pipeline-health index when it exists) for:

- Step Functions executions by status per state machine, summed / average / p50 / p95 / max
  execution duration per state machine, and sum / p50 / p95 over time per state machine
- traces per account (and environment) over time, per-account status counts
- error / fault / throttle rates and latency percentiles per service (service segments only:
  `is_subsegment: false`)
- top exceptions (segments carrying an exception, and the traces they touch)
- the slowest executions and the failed ones (FAILED, TIMED_OUT, ABORTED)
- pipeline health (latest watermark lag per account, dead-lettered messages per run kind)

The time range applies to the trace start (`start`; `timestamp` for health documents).
`render_html(data)` fills a Jinja2 template with the page's CSS inlined and every chart drawn as
inline SVG (no script, no external font, style or image: the file opens offline and can be
mailed), `report_tables(data)` gives Rich tables for the terminal, `data.model_dump(mode="json")`
is the `--json` output. `run_report(config, since, out_path)` is what `xraylake report` calls.

Execution statuses come from DescribeExecution when the trace was collected by the `collect`
flow, otherwise from the trace itself (`execution_status_source: trace`), where Step Functions
only tells success (SUCCEEDED) from failure (FAILED — TIMED_OUT and ABORTED included); the report
says how many statuses were inferred that way.

Modules: `model` (pydantic models, `--since`), `queries` (OpenSearch), `charts` (SVG),
`tables` (Rich), `page` (HTML from `templates/report.html.j2` and `templates/report.css`),
`format` (numbers and durations as people read them).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from tasks.report.model import ReportData, parse_since
from tasks.report.page import render_html
from tasks.report.queries import build_report
from tasks.report.tables import report_tables

__all__ = [
    "ReportData",
    "build_report",
    "parse_since",
    "render_html",
    "report_tables",
    "run_report",
]


def run_report(config: Any, since: timedelta | str, out_path: str | Path | None = "report.html") -> ReportData:
    """Build the report against the configured OpenSearch and write the HTML file (if `out_path`)."""
    from tasks.index import client_for

    window = parse_since(since) if isinstance(since, str) else since
    client = client_for(config.opensearch)
    data = build_report(client, window, index_prefix=config.opensearch.index_prefix)
    if out_path is not None:
        path = Path(out_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_html(data), encoding="utf-8")
    return data
