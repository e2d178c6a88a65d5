"""The report against the real pipeline on sandbox data, plus a real headless Chromium.

Numbers: synthetic traffic (sandbox.traffic, real Step Functions executions in moto) → sweep flow →
consumer (which asks DescribeExecution for Step Functions traces) → OpenSearch; the report's
totals must equal what the generator wrote.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
from opensearchpy import OpenSearch
from rich.console import Console

from blocks.config import Config
from flows.consume import run_consumer
from flows.sweep import sweep
from sandbox.traffic import WriteReport, generate_traffic, write_traffic
from tasks.index import client_for, ensure_health_template
from tasks.mappings import HEALTH_INDEX
from tasks.report import (
    ReportData,
    build_report,
    parse_since,
    render_html,
    report_tables,
    run_report,
)
from tasks.report.model import AccountStats, ExecutionRow, Headline, ServiceStats, TimeRange
from tests.tasks.conftest import PREFIXED_AT

SINCE = timedelta(hours=3)


# ----------------------------------------------------------------------------------- helpers


def run_pipeline(
    config: Config, config_file: str, seed: int = 7, traces_per_account: int = 15, align: bool = True
) -> WriteReport:
    """Traffic into the member accounts → sweep → consume.

    `align`: Step Functions traces at the executions' real (wall-clock) times, as moto ran them;
    False keeps them at their planned times, spread over the last two hours (nicer charts).
    """
    traffic = generate_traffic(seed, config.roster.accounts, traces_per_account=traces_per_account, hours_back=2.0)
    written = write_traffic(traffic, config.roster, align_execution_times=align)
    assert not written.execution_mismatches, written.execution_mismatches
    # lag 0: the Step Functions traces were just written at wall-clock time (aligned with moto).
    state = sweep(config_path=config_file, lag_seconds=0, first_lookback_minutes=150, return_state=True)
    assert state.is_completed(), state.message
    stats = run_consumer(config, wait_seconds=1, use_tasks=False)
    assert sum(stats.dead_lettered.values()) == 0, stats.as_dict()
    return written


def refreshed_client(config: Config) -> OpenSearch:
    client = client_for(config.opensearch)
    client.indices.refresh(index="xray-*")
    return client


def machine_of(arn: str) -> str:
    return arn.split(":stateMachine:", 1)[1]


# -------------------------------------------------------------------------------- parse_since


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("24h", 86400),
        ("90m", 5400),
        ("7d", 604800),
        ("30s", 30),
        ("2w", 1209600),
        (" 1.5h ", 5400),
        ("15M", 900),
    ],
)
def test_parse_since_accepts_units(text: str, seconds: int) -> None:
    assert parse_since(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "24", "h", "24x", "-1h", "0h", "1h30m", "abc", "500d"])
def test_parse_since_rejects_bad_input_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration") as info:
        parse_since(text)
    assert repr(text) in str(info.value)


# --------------------------------------------------------------------------------- empty cluster


def test_report_on_an_empty_cluster_is_empty_not_an_error(fresh_config: Config, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    data = run_report(fresh_config, "2h", out)
    assert data.headline.traces == 0
    assert data.executions_by_status == {}
    assert data.health is None
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert "no data" in out.read_text()


def test_report_of_a_trace_analytics_target_says_where_its_data_is(fresh_config: Config) -> None:
    """Reads what exists: a target with only spans (index profile `trace-analytics`) gives an empty
    report with a note naming why, not an error."""
    from tasks.index import ensure_templates
    from tasks.mappings import index_templates

    client = client_for(fresh_config.opensearch)
    ensure_templates(client, index_templates(profile="trace-analytics"))
    client.index(index="otel-v1-apm-span-2024.09.22", body={"traceId": "a" * 32, "spanId": "b" * 16}, refresh=True)
    data = build_report(client, SINCE)
    assert data.headline.traces == 0
    assert any("index profile is 'trace-analytics'" in note for note in data.notes), data.notes


# --------------------------------------------------------------------------------- the page


def test_page_comes_from_the_packaged_template_and_escapes_every_value() -> None:
    """The template and its CSS are package files (they ship in the wheel); autoescaping covers
    every value the data brings, while the charts (escaped by the chart kit) stay markup."""
    files = resources.files("tasks.report").joinpath("templates")
    css = files.joinpath("report.css").read_text(encoding="utf-8")
    assert files.joinpath("report.html.j2").is_file()
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    hostile = "<script>alert(1)</script>"
    data = ReportData(
        title=f"ops & {hostile}",
        generated_at=now,
        range=TimeRange(start=now - SINCE, end=now, since_seconds=SINCE.total_seconds(), interval_seconds=300),
        headline=Headline(traces=3, accounts=1),
        accounts=[AccountStats(account_id="011111111111", account_name=hostile, traces=3)],
        services=[ServiceStats(service=hostile, segments=3, errors=1, error_rate=1 / 3, latency_p50=0.2)],
        failed_executions=[ExecutionRow(execution_name="run-1", status="FAILED", cause=f"bad {hostile}")],
        failed_executions_total=1,
        notes=[f"note {hostile}"],
    )
    page = render_html(data)
    assert_self_contained(page)
    assert f"<style>\n{css}</style>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "ops &amp; &lt;script&gt;" in page
    assert page.count('<svg class="chart"') >= 7
    assert 'data-chart="service-status"' in page
    assert '<span class="pill" style="background:#d9483b">FAILED</span>' in page


# ------------------------------------------------------------------------------ index prefix


def test_report_reads_the_indices_of_the_target_index_prefix(prefixed_config: Config, tmp_path: Path) -> None:
    client = client_for(prefixed_config.opensearch)
    data = build_report(client, SINCE, PREFIXED_AT, index_prefix=prefixed_config.opensearch.index_prefix)
    assert (data.traces_alias, data.segments_alias) == ("acme-traces", "acme-segments")
    assert [a.account_name for a in data.accounts] == ["acme"]
    assert (data.headline.traces, data.headline.executions, data.headline.failed_executions) == (1, 1, 1)
    assert data.headline.service_segments == 4  # the acme trace's, not the decoy's too
    assert {e.exception_type: e.occurrences for e in data.top_exceptions} == {"States.TaskFailed": 2}
    page = render_html(data)
    assert "<code>acme-traces</code>" in page
    assert "<code>acme-segments</code>" in page
    assert "decoy" not in page
    assert "xray-traces" not in page
    # The default prefix reads the decoy: the two sets of indices really differ.
    assert [a.account_name for a in build_report(client, SINCE, PREFIXED_AT).accounts] == ["decoy"]
    # run_report takes the prefix from the target (the last hour has no data: the note names the alias).
    recent = run_report(prefixed_config, "1h", tmp_path / "recent.html")
    assert recent.traces_alias == "acme-traces"
    assert "acme-traces alias" in recent.notes[-1]


# ---------------------------------------------------------------------------------- numbers


@pytest.mark.usefixtures("prefect_harness")
def test_report_totals_equal_what_the_generator_wrote(fresh_config: Config, config_file: str, tmp_path: Path) -> None:
    written = run_pipeline(fresh_config, config_file)
    executions = written.executions
    assert {e.status for e in executions} >= {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}

    data = build_report(refreshed_client(fresh_config), SINCE)

    # ---- executions by status (overall and per state machine), as Step Functions ran them
    assert data.headline.executions == len(executions)
    assert data.executions_by_status == dict(Counter(e.status for e in executions))
    per_machine: dict[str, Counter[str]] = defaultdict(Counter)
    for e in executions:
        per_machine[machine_of(e.state_machine_arn)][e.status] += 1
    assert {m.state_machine: m.by_status for m in data.state_machines} == {k: dict(v) for k, v in per_machine.items()}
    assert data.execution_status_sources == {"describe_execution": len(executions)}
    assert data.headline.failed_executions == sum(1 for e in executions if e.status != "SUCCEEDED")

    # ---- summed / max / percentile durations per state machine
    reported = {r.execution_arn: r.duration_seconds for r in data.failed_executions}
    durations: dict[str, list[float]] = defaultdict(list)
    for e in executions:
        assert e.stop is not None
        expected = (e.stop - e.start).total_seconds()
        # moto's DescribeExecution has no stopDate for TIMED_OUT; the generator ends the state
        # machine segment at start + TimeoutSeconds, and the transform falls back to that end.
        if e.execution_arn in reported:
            assert reported[e.execution_arn] == pytest.approx(expected, abs=2e-3)
        durations[machine_of(e.state_machine_arn)].append(expected)
    machines = {m.state_machine: m for m in data.state_machines}
    assert set(machines) == set(durations)
    for name, values in durations.items():
        m = machines[name]
        assert m.duration_sum == pytest.approx(sum(values), abs=2e-3 * len(values))
        assert m.duration_max == pytest.approx(max(values), abs=2e-3)
        assert m.duration_p50 is not None
        assert m.duration_p95 is not None
        assert min(values) - 2e-3 <= m.duration_p50 <= m.duration_p95 <= max(values) + 2e-3
    assert data.headline.execution_seconds == pytest.approx(sum(map(sum, durations.values())), abs=0.05)
    # The over-time sums add up to the per-machine sums.
    for name, series in data.execution_duration_sum.series.items():
        assert sum(v or 0 for v in series) == pytest.approx(machines[name].duration_sum, abs=1e-6)

    # ---- traces per account, and over time
    accounts = {a.account_id: a for a in data.accounts}
    for account in fresh_config.roster.accounts:
        expected = written.trace_ids(account.account_id)
        assert accounts[account.account_id].traces == len(expected), account.name
        assert accounts[account.account_id].account_name == account.name
        assert accounts[account.account_id].environment == account.environment
        assert sum(v or 0 for v in data.traces_over_time.series[account.account_id]) == len(expected)
    assert data.headline.traces == sum(len(written.trace_ids(a.account_id)) for a in fresh_config.roster.accounts)
    assert data.traces_by_environment == {
        a.environment: len(written.trace_ids(a.account_id)) for a in fresh_config.roster.accounts
    }

    # ---- services, exceptions, slowest/failed executions are filled from the same data
    assert data.services
    assert any(s.fault_rate > 0 for s in data.services)
    assert any(s.throttle_rate > 0 for s in data.services)
    for s in data.services:
        assert 0 <= s.throttle_rate <= s.error_rate <= 1  # X-Ray sets error together with throttle
        if s.latency_p50 is not None and s.latency_p99 is not None:
            assert s.latency_p50 <= s.latency_p99
    assert data.top_exceptions
    assert all(e.occurrences >= e.traces >= 1 for e in data.top_exceptions)
    slowest = [r.duration_seconds for r in data.slowest_executions]
    assert slowest == sorted(slowest, reverse=True)  # type: ignore[type-var]
    assert slowest[0] == pytest.approx(max(max(v) for v in durations.values()), abs=2e-3)
    failed_arns = {e.execution_arn for e in executions if e.status != "SUCCEEDED"}
    assert {r.execution_arn for r in data.failed_executions} == failed_arns
    assert data.failed_executions_total == len(failed_arns)
    by_arn = {e.execution_arn: e for e in executions}
    for row in data.failed_executions:
        source = by_arn[row.execution_arn or ""]
        assert row.status == source.status
        assert row.account_id == source.account_id
        assert row.state_machine == machine_of(source.state_machine_arn)
        assert row.trace_id == source.trace_id
        if source.status in {"FAILED", "TIMED_OUT"}:  # the Fail state's error / States.Timeout
            assert row.error, row
            assert row.cause, row

    # ---- pipeline health documents (the index template is ours; documents as a run writes them)
    client = client_for(fresh_config.opensearch)
    # the sweep and consume runs above wrote their own health documents: start from known ones
    client.indices.delete(index=HEALTH_INDEX, ignore_unavailable=True)
    ensure_health_template(client)
    now = datetime.now(UTC)
    for i, account in enumerate(fresh_config.roster.accounts):
        for minutes, lag in ((50, 300.0 + i), (10, 125.0 + i)):
            client.index(
                index=HEALTH_INDEX,
                body={
                    "kind": "sweep",
                    "flow_run_id": f"run-{minutes}",
                    "timestamp": (now - timedelta(minutes=minutes)).isoformat(),
                    "account_id": account.account_id,
                    "account_name": account.name,
                    "watermark_lag_seconds": lag,
                    "dead_lettered": 0,
                    "traces": 5,
                },
            )
    client.index(
        index=HEALTH_INDEX,
        body={
            "kind": "consume",
            "flow_run_id": "run-c",
            "timestamp": now.isoformat(),
            "dead_lettered": 2,
            "traces": 40,
        },
    )
    client.indices.refresh(index=HEALTH_INDEX)
    data = build_report(client, SINCE)
    assert data.health is not None
    lags = {a.account_id: a.watermark_lag_seconds for a in data.health.accounts}
    assert lags == {a.account_id: 125.0 + i for i, a in enumerate(fresh_config.roster.accounts)}
    kinds = {k.kind: k for k in data.health.kinds}
    assert kinds["sweep"].runs == 2
    assert kinds["consume"].dead_lettered == 2

    # ---- renderers
    page = render_html(data)
    assert_self_contained(page)
    for chart in (
        "execution-status",
        "execution-duration-sum",
        "execution-duration-percentiles",
        "traces-per-account",
        "service-status",
        "service-latency",
        "watermark-lag",
    ):
        assert f'data-chart="{chart}"' in page, chart
    for e in executions:
        if e.status != "SUCCEEDED":
            assert e.name in page
    console = Console(record=True, width=160)
    for table in report_tables(data):
        console.print(table)
    text = console.export_text()
    assert "executions TIMED_OUT" in text
    assert str(data.headline.traces) in text
    dumped = data.model_dump(mode="json")
    assert ReportData.model_validate(dumped) == data
    if os.environ.get("XRAYLAKE_REPORT_KEEP"):
        Path(os.environ["XRAYLAKE_REPORT_KEEP"]).write_text(page)


def assert_self_contained(page: str) -> None:
    """No script and nothing fetched: no external URL in src/href/url(), no @import, no <script>."""
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert "@import" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", page), "external reference"
    assert not re.search(r"url\(\s*['\"]?(?!data:|#)", page), "external url()"
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page


# ------------------------------------------------------------------------------ real browser

CHROMIUM = "/usr/bin/chromium"


def ensure_chromium() -> str:
    if not Path(CHROMIUM).exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
    assert Path(CHROMIUM).exists()
    return CHROMIUM


# Headless Chromium without the parts that reach out or flake on a loaded 2-core machine.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            *HEADLESS_FLAGS,
            "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing can be fetched from anywhere
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_messages(stderr: str) -> list[str]:
    """Console output and uncaught exceptions, as Chromium logs them with --enable-logging=stderr."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """A tiny PNG decoder (8-bit RGB/RGBA, non-interlaced, what Chromium writes): width, height, rows."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(blob):
        length, kind = struct.unpack(">I4s", blob[pos : pos + 8])
        chunk = blob[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8, header
    assert color in (2, 6), header
    assert interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
        prev = line
    return width, height, rows


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_report_opens_in_headless_chromium(fresh_config: Config, config_file: str, tmp_path: Path) -> None:
    binary = ensure_chromium()
    written = run_pipeline(fresh_config, config_file, seed=21, traces_per_account=30, align=False)
    refreshed_client(fresh_config)
    out = tmp_path / "report.html"
    data = run_report(fresh_config, "3h", out)
    assert data.headline.executions == len(written.executions)
    assert_self_contained(out.read_text())

    dom = chromium(binary, tmp_path / "profile-dom", "--dump-dom", out.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for chart in (
        "execution-status",
        "execution-duration-sum",
        "execution-duration-percentiles",
        "traces-per-account",
        "service-status",
        "service-latency",
    ):
        assert f'data-chart="{chart}"' in dom.stdout, chart
    assert dom.stdout.count("<svg") >= 7
    assert dom.stdout.count('class="bar"') > 20
    assert "<polyline" in dom.stdout
    assert not console_messages(dom.stderr), console_messages(dom.stderr)
    # The check itself works: a page with a console error and an exception is caught.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><script>console.error("boom"); undefinedFn();</script>')
    caught = console_messages(chromium(binary, tmp_path / "profile-bad", "--dump-dom", bad.as_uri()).stderr)
    assert any("boom" in line for line in caught), caught
    assert any("Uncaught ReferenceError" in line for line in caught), caught

    png = tmp_path / "report.png"
    shot = chromium(binary, tmp_path / "profile-shot", f"--screenshot={png}", "--window-size=1400,2000", out.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert png.exists(), shot.stderr[-2000:]
    width, height, rows = png_pixels(png)
    assert (width, height) == (1400, 2000)
    colours = {row[x : x + 3] for row in rows[::4] for x in range(0, len(row), 12)}
    assert len(colours) > 200, len(colours)  # a blank or error page has a handful
    keep = os.environ.get("XRAYLAKE_REPORT_KEEP_DIR")
    if keep:
        shutil.copy(out, Path(keep) / "report.html")
        shutil.copy(png, Path(keep) / "report.png")
        (Path(keep) / "report.json").write_text(data.model_dump_json(indent=1))


# ------------------------------------------------------------------------------ migration view


def test_migration_view_shows_store_and_instrumentation_per_account_and_service(fresh_config: Config) -> None:
    """Spans read from aws/spans (OpenTelemetry and a converted X-Ray SDK segment) in one account and
    a classic X-Ray SDK trace in another: the report lists each (account, service) with its store
    and instrumentation, X-Ray SDK services first, and notes the end of support."""
    import orjson

    from tasks.index import ensure_templates
    from tasks.mappings import index_templates
    from tasks.spans import SpanTrace, parse_span_records, transform_span_trace
    from tasks.trace_model import TraceContext
    from tasks.transform import transform_trace
    from tests.fixtures import fixture_path

    at = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    client = client_for(fresh_config.opensearch)
    ensure_templates(client, index_templates())
    shop = TraceContext("111111111111", "shop", "prod", "eu-west-1", at, "e1", "sweep")
    legacy = TraceContext("222222222222", "legacy", "prod", "eu-west-1", at, "e2", "sweep")
    documents = []
    for name in ("adot_checkout_trace", "xray_sdk_converted_trace"):
        records = fixture_path(f"aws_spans/{name}.jsonl").read_text().splitlines()
        parsed = parse_span_records({"Id": orjson.loads(records[0])["traceId"], "Spans": records})
        assert isinstance(parsed, SpanTrace)
        documents.append(transform_span_trace(parsed, shop))
    segment = {
        "id": "1234567890abcdef",
        "name": "legacy-api",
        "trace_id": "1-6b0e9e30-0123456789abcdef01234567",
        "start_time": 1796120112.0,
        "end_time": 1796120112.5,
        "aws": {"xray": {"sdk": "X-Ray for Python", "sdk_version": "2.14.0"}},
    }
    trace = {"Id": segment["trace_id"], "Segments": [{"Id": segment["id"], "Document": orjson.dumps(segment).decode()}]}
    documents.append(transform_trace(trace, legacy))
    body: list[dict[str, object]] = []
    for docs in documents:
        for request in docs.index_requests():
            if request.kind in ("traces", "segments"):
                body += [{"index": {"_index": request.index, "_id": request.doc_id}}, request.source]
    assert not client.bulk(body=body, refresh=True)["errors"]

    data = build_report(client, timedelta(hours=2), at)

    rows = [(r.account_name, r.service, r.store, r.instrumentation, r.sdks) for r in data.migration]
    assert rows == [
        ("legacy", "legacy-api", "xray", "xray-sdk", ["X-Ray for Python 2.14.0"]),
        ("shop", "Scorekeep", "spans", "xray-sdk", ["X-Ray for Java 2.18.1"]),
        ("shop", "checkout", "spans", "opentelemetry", ["opentelemetry for python 1.27.0"]),
        ("shop", "payments", "spans", "opentelemetry", ["opentelemetry for nodejs 1.26.0"]),
    ]
    assert any("2 service(s) in 2 account(s)" in note and "2027-02-25" in note for note in data.notes)
    page = render_html(data)
    assert '<section id="migration">' in page and "X-Ray for Java 2.18.1" in page
    console = Console(record=True, width=200)
    for table in report_tables(data):
        console.print(table)
    assert "Migration (X-Ray SDK end of support 2027-02-25)" in console.export_text()
