"""Deployments on a real Prefect server on loopback serving every deployment: a replay run from its
deployment, the event-triggered collect, alert automations, two competing consumer processes and
the UI's run form in headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from blocks.config import Config
from deployments import automations as auto
from deployments import serve
from deployments.serve import LocalServer
from tasks import envelope as env
from tasks import limits, queue
from tasks.index import client_for
from tests import prefect_db
from tests.deployments.helpers import EXPECTED, PROJECT, WEBHOOK, flow_name, webhook_events

# ============================================================================ real Prefect server


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory, prefect_db_template: Path) -> Iterator[LocalServer]:
    """`prefect server start` on a free loopback port (UI included), its own PREFECT_HOME (its
    database a copy of the session's migrated one)."""
    home = tmp_path_factory.mktemp("prefect-home")
    server = serve.start_local_server(
        prefect_db.free_port(),
        prefect_home=home,
        extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
        | prefect_db.local_server_env(prefect_db_template, home),
    )
    try:
        with serve.api_url(server.api_url):
            yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(prefect_server: LocalServer, tmp_path_factory: pytest.TempPathFactory, stack: Any) -> Iterator[Path]:
    """`python -m deployments.serve` in a subprocess; yields the config path every deployment uses
    (tests write their config there)."""
    work = tmp_path_factory.mktemp("served")
    config_path = work / "config.json"
    log_path = work / "serve.log"
    env = os.environ | {
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_HOME": str(work / "prefect-client"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "XRAYLAKE_HOME": str(work / "xraylake-home"),
    }
    env.pop("XRAYLAKE_CONFIG", None)
    command = [
        sys.executable,
        "-m",
        "deployments.serve",
        "--config",
        str(config_path),
        "--schedules-off",
        "--no-limits",
        "--trigger-delay",
        "0",
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while True:
                assert process.poll() is None, log_path.read_text()[-3000:]
                try:
                    for name in EXPECTED:
                        client.read_deployment_by_name(f"{flow_name(name)}/{name}")
                    if client.read_automations_by_name("collect-on-execution-status-change"):
                        break
                except Exception:
                    pass
                assert time.monotonic() < deadline, (
                    "deployments not served within 120 s:\n" + log_path.read_text()[-3000:]
                )
                time.sleep(0.5)
        yield config_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def use_config(served: Path, config: Config) -> str:
    served.write_bytes(config.to_json())
    return str(served)


def wait_for_runs(deployment: str, count: int, timeout: float = 120.0, **parameters: Any) -> list[Any]:
    """Flow runs of a deployment whose parameters include `parameters`, once all are final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(f"{flow_name(deployment)}/{deployment}").id
        while True:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            mine = [r for r in runs if all(r.parameters.get(k) == v for k, v in parameters.items())]
            if len(mine) >= count and all(r.state is not None and r.state.is_final() for r in mine):
                return mine
            assert time.monotonic() < deadline, f"{deployment} runs {parameters}: {[(r.name, r.state) for r in mine]}"
            time.sleep(1)


def traffic_for(config: Config, seed: int, per_account: int = 4):  # type: ignore[no-untyped-def]
    from sandbox.traffic import generate_traffic, write_traffic

    planned = generate_traffic(seed, config.roster.accounts, traces_per_account=per_account, hours_back=1.0)
    return write_traffic(planned, config.roster)


def indexed_ids(config: Config, alias: str) -> list[str]:
    client = client_for(config.opensearch)
    client.indices.refresh(index=f"{alias}*")
    hits = client.search(index=alias, body={"size": 1000, "query": {"match_all": {}}, "_source": ["trace_id"]})
    return [h["_id"] for h in hits["hits"]["hits"]]


@pytest.mark.slow
def test_served_deployments_carry_schedules_limits_tags_and_the_trigger(served: Path) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        sweep = client.read_deployment_by_name("sweep/sweep")
        assert sweep.global_concurrency_limit is not None
        assert sweep.global_concurrency_limit.limit == 1
        assert sweep.concurrency_options is not None
        assert sweep.concurrency_options.collision_strategy.value == "CANCEL_NEW"
        assert [(s.schedule.interval, s.active) for s in sweep.schedules] == [(timedelta(minutes=5), False)]  # type: ignore[union-attr]
        assert set(sweep.tags) == {"xraylake", "collect", "scheduled"}
        assert sweep.parameters["config_path"] == str(served)
        assert sweep.enforce_parameter_schema
        replay = client.read_deployment_by_name("replay/replay")
        assert replay.parameter_openapi_schema is not None
        assert "force" in replay.parameter_openapi_schema["properties"]  # the flat form of ReplayParameters
        (automation,) = client.read_automations_by_name("collect-on-execution-status-change")
        collect = client.read_deployment_by_name("collect/collect")
        (action,) = automation.actions
        assert action.model_dump()["deployment_id"] == collect.id
        assert automation.trigger.model_dump()["expect"] == {"xraylake.stepfunctions.execution.status-change"}


@pytest.mark.slow
def test_replay_run_from_its_deployment_reindexes_the_archive(served: Path, fresh_config: Config) -> None:
    from prefect.deployments import run_deployment

    from flows.consume import consume
    from flows.sweep import sweep

    config_path = use_config(served, fresh_config)
    report = traffic_for(fresh_config, seed=41)
    assert sweep(config_path=config_path, first_lookback_minutes=90, lag_seconds=0, return_state=True).is_completed()
    assert consume(config_path=config_path, wait_seconds=1, return_state=True).is_completed()
    live = indexed_ids(fresh_config, "xray-traces")
    assert {i.split(":", 1)[1] for i in live} == {t for r in report.regions for t in r.trace_ids}

    prefix = f"rp{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    run: Any = run_deployment(
        "replay/replay",
        parameters={
            "start": (now - timedelta(hours=2)).isoformat(),
            "end": (now + timedelta(minutes=1)).isoformat(),
            "target": "direct",
            "sinks": ["index"],
            "index_prefix": prefix,
        },
        timeout=180,
        poll_interval=1,
    )
    assert run.state is not None
    assert run.state.is_completed(), run.state.message
    assert run.parameters["config_path"] == config_path  # the serve process's default
    assert sorted(indexed_ids(fresh_config, f"{prefix}-traces")) == sorted(live)


@pytest.mark.slow
def test_collect_event_and_eventbridge_post_run_collect(served: Path, fresh_config: Config) -> None:
    from prefect.events import emit_event

    from tests.flows.test_sweep import drain

    use_config(served, fresh_config)
    report = traffic_for(fresh_config, seed=43, per_account=6)
    ended = [e for e in report.executions if e.status in ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")]
    assert len(ended) >= 2, report.executions
    first, second = ended[0], ended[1]

    # 1. a Prefect event, as any producer would emit it
    emit_event(
        event="xraylake.stepfunctions.execution.status-change",
        resource={"prefect.resource.id": first.execution_arn, "aws.states.status": first.status},
        payload={"execution_arn": first.execution_arn, "status": first.status},
    )
    # 2. the self-hosted AWS path: an EventBridge event through the API destination's transformer
    sample = WEBHOOK["sample_eventbridge_event"]
    bridge = sample | {
        "id": str(uuid.uuid4()),
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "account": second.account_id,
        "detail": sample["detail"] | {"executionArn": second.execution_arn, "status": second.status},
    }
    _, events = webhook_events(bridge)
    response = httpx.post(
        f"{os.environ['PREFECT_API_URL']}/events", json=[e.model_dump(mode="json") for e in events], timeout=10
    )
    assert response.status_code == 204, response.text
    # 3. a RUNNING status change is not collected
    emit_event(
        event="xraylake.stepfunctions.execution.status-change",
        resource={"prefect.resource.id": first.execution_arn + "-x", "aws.states.status": "RUNNING"},
    )

    for execution in (first, second):
        (run,) = wait_for_runs("collect", 1, execution_arn=execution.execution_arn)
        assert run.state.is_completed(), run.state.message
    envelopes = drain(fresh_config)
    collected = {e.execution["executionArn"]: {t["Id"] for t in e.traces} for e in envelopes if e.execution}
    assert collected == {first.execution_arn: {first.trace_id}, second.execution_arn: {second.trace_id}}
    assert not wait_for_runs("collect", 0, execution_arn=first.execution_arn + "-x", timeout=5)


@pytest.mark.slow
def test_served_run_logs_at_info_and_a_failing_collect_fires_its_alert(served: Path, fresh_config: Config) -> None:
    """The serve process runs with PREFECT_LOGGING_LEVEL=WARNING (as the CLI once forced): its
    flow runs still log at INFO. A collect of an account outside the roster ends Failed with a
    one-line message, and its automation (no --notify) runs the alert deployment, which writes
    the alert to the alert log under XRAYLAKE_HOME."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.deployments import run_deployment
    from prefect.logging.handlers import APILogWorker

    use_config(served, fresh_config)
    auto.ensure_automations(None)  # another test may have pointed them at a webhook block
    run: Any = run_deployment("consume/consume", parameters={"wait_seconds": 1}, timeout=180, poll_interval=1)
    assert run.state.is_completed(), run.state.message
    APILogWorker.drain_all(timeout=30)
    deadline = time.monotonic() + 60  # the flow-run process sends its last lines after its final state
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        info = [log.message for log in logs if log.level == 20]
        if any(m.startswith("consume finished") for m in info) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert any(m.startswith("consume starting with") for m in info), [log.message for log in logs]
    assert any(m.startswith("consume finished: 0 messages consumed") for m in info), info

    marker = uuid.uuid4().hex[:8]
    arn = f"arn:aws:states:us-east-1:999999999999:execution:orders:{marker}"
    began = time.monotonic()
    failed: Any = run_deployment("collect/collect", parameters={"execution_arn": arn}, timeout=180, poll_interval=1)
    assert failed.state.is_failed() and not failed.state.is_crashed(), failed.state
    assert "UnknownAccountError: account '999999999999' is not in the roster" in failed.state.message
    assert "\n" not in failed.state.message
    print(f"collect of an unknown account: Failed {time.monotonic() - began:.1f} s after submission")
    (alert,) = wait_for_runs("alert", 1, timeout=120, resource=f"aws.stepfunctions.execution.{arn}")
    assert alert.state.is_completed(), alert.state.message
    assert alert.parameters["subject"] == f"xraylake: xraylake.collect.failed (aws.stepfunctions.execution.{arn})"
    alerts = (served.parent / "xraylake-home" / "alerts.log").read_text().splitlines()
    (line,) = [json.loads(a) for a in alerts if marker in a]
    assert "is not in the roster" in line["body"]


class Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        Receiver.received.append(json.loads(self.rfile.read(length) or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_alert_automations_notify_and_limits_exist(served: Path, fresh_config: Config) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    http = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        CustomWebhookNotificationBlock(
            name="xraylake-test",
            url=f"http://127.0.0.1:{http.server_port}/alert",
            json_data={"subject": "{{subject}}", "body": "{{body}}"},
        ).save("xraylake-test-alerts", overwrite=True)
        ids = auto.ensure_automations("custom-webhook/xraylake-test-alerts")
        assert auto.ensure_automations("custom-webhook/xraylake-test-alerts") == ids  # updated, not duplicated
        from prefect.events import emit_event

        marker = uuid.uuid4().hex[:8]
        emit_event(
            event="xraylake.message.dead-lettered",
            resource={"prefect.resource.id": f"aws.sqs.https://sqs/dlq-{marker}"},
            payload={"reason": f"bad_signature_{marker}", "count": 3},
        )
        deadline = time.monotonic() + 60
        while not any(marker in json.dumps(m) for m in Receiver.received):
            assert time.monotonic() < deadline, Receiver.received
            time.sleep(0.5)
        alert = next(m for m in Receiver.received if marker in json.dumps(m))
        assert alert["subject"] == f"xraylake: 3 message(s) dead-lettered (bad_signature_{marker})"
        assert "xraylake dlq list" in alert["body"]
    finally:
        http.shutdown()

    names = limits.ensure_limits(fresh_config.roster, collectors=1, calls_per_second=4)
    with get_client(sync_client=True) as client:
        created = client.read_global_concurrency_limit_by_name(names[0])
        assert (created.name, created.limit) == (names[0], 1)
        rate = client.read_global_concurrency_limit_by_name(names[1])
        assert rate.slot_decay_per_second == 4.0
    with concurrency(names[0], occupy=1, strict=True):  # the call tasks would make
        pass
    with concurrency(f"xray-missing-{marker}", occupy=1, strict=False):  # absent limit: a no-op
        pass


CONSUMER = """
import json, os, sys, time
from flows.consume import consume
ready, go, config = sys.argv[1:4]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.02)
state = consume(config_path=config, batch_messages=5, wait_seconds=1, visibility_timeout=120, return_state=True)
print("RESULT " + json.dumps(state.result()))
"""


@pytest.mark.slow
def test_two_consumer_processes_share_a_backlog_without_loss_or_duplicates(
    prefect_server: LocalServer, fresh_config: Config, config_file: str, tmp_path: Path
) -> None:
    from tests.flows.test_consume import envelope_for, make_trace

    key = fresh_config.signing_keys[0].get_secret_value()
    expected: dict[Any, str] = {}  # trace id → account id
    messages = []
    for i in range(60):
        account = i % len(fresh_config.roster.accounts)
        traces = [make_trace(f"backlog-{tmp_path.name}-{i}-{j}", start=time.time() - 3600 + i) for j in range(2)]
        envelope = envelope_for(fresh_config, traces, account=account)
        expected |= {t["Id"]: envelope.account_id for t in traces}
        messages.append(env.encode(envelope, key, fresh_config.archive.bucket))
    sqs = boto3.client("sqs")
    for batch in queue.plan_batches(messages):
        assert queue.send_messages(sqs, fresh_config.queue.queue_url, batch).sent == len(batch)

    go = tmp_path / "go"
    env_vars = os.environ | {"PREFECT_API_URL": prefect_server.api_url, "PREFECT_LOGGING_LEVEL": "WARNING"}
    workers = []
    for n in range(2):
        ready = tmp_path / f"ready-{n}"
        process = subprocess.Popen(
            [sys.executable, "-c", CONSUMER, str(ready), str(go), config_file],
            cwd=PROJECT,
            env=env_vars,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        workers.append((ready, process))
    deadline = time.monotonic() + 90
    while not all(ready.exists() for ready, _ in workers):
        assert all(p.poll() is None for _, p in workers), [p.communicate() for _, p in workers]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    go.touch()
    stats = []
    for _, process in workers:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-3000:]
        stats.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))

    print("consumers deleted", [s["deleted"] for s in stats], "of", len(messages))
    assert all(s["deleted"] > 0 for s in stats), stats  # both consumers took part
    assert sum(s["deleted"] for s in stats) == len(messages)  # each message done once
    assert sum(s["traces"] for s in stats) == len(expected)
    assert all(s["dead_lettered_total"] == 0 for s in stats)
    ids = indexed_ids(fresh_config, "xray-traces")
    assert len(ids) == len(set(ids)) == len(expected)  # no duplicates, no loss
    assert set(ids) == {f"{account}:{trace}" for trace, account in expected.items()}
    depth = queue.queue_depth(sqs, fresh_config.queue.queue_url)
    assert sum(depth.values()) == 0, depth


@pytest.mark.slow
def test_ui_renders_the_replay_run_form(served: Path, prefect_server: LocalServer, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from tests.tasks.test_report import HEADLESS_FLAGS, ensure_chromium, png_pixels

    binary = ensure_chromium()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("replay/replay")
    url = f"{prefect_server.url}/deployments/deployment/{deployment.id}/run"
    flags = [
        *HEADLESS_FLAGS,
        "--window-size=1400,1600",
        "--virtual-time-budget=15000",
        # without these two, a loaded machine captures the page mid fade-in (text at ~10 % opacity)
        "--run-all-compositor-stages-before-draw",
        "--disable-threaded-animation",
    ]
    shot = Path(os.environ.get("XRAYLAKE_SCREENSHOT_DIR", tmp_path)) / "replay-run-form.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    taken = subprocess.run(
        [binary, *flags, f"--user-data-dir={tmp_path / 'profile-shot'}", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.exists(), taken.stderr[-3000:]
    width, height, rows = png_pixels(shot)
    assert (width, height) == (1400, 1600)
    colours = {row[x : x + 3] for row in rows[::8] for x in range(0, len(row), 24)}
    assert len(colours) > 20, f"blank page? {len(colours)} colours"
    # readable (not faded): the form area (right of the nav) holds near-white label text
    bright = sum(1 for row in rows[300:1400] for x in range(300 * 3, len(row), 3) if min(row[x : x + 3]) > 200)
    assert bright > 2000, f"form text missing or faded ({bright} bright pixels)"
    dom = subprocess.run(
        [binary, *flags, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    shot.with_suffix(".html").write_text(dom)
    for label in ("Start", "End", "Target", "Sinks", "Index Prefix", "Dry Run", "Rate Per Second", "Force"):
        assert label in dom, label
    assert "Trace start time, from (UTC)." in dom  # the field descriptions of ReplayParameters
    # optional lists render as list inputs, not as a type toggle, and no help text is cut short
    assert dom.count("No items in this list") == 2, "accounts and regions as empty lists"
    assert "Property is type" not in dom
    assert "the Prefect UI renders" not in dom


@pytest.mark.slow
def test_ui_renders_a_finished_run_with_its_logs_and_artifacts(
    served: Path, prefect_server: LocalServer, fresh_config: Config, tmp_path: Path
) -> None:
    """Headless Chromium on a served consume run's page: its INFO log lines, and on the
    Artifacts tab its markdown summary; and the Blocks page with the saved configuration."""
    from prefect.deployments import run_deployment

    from blocks.config import save_config_blocks
    from tests.tasks.test_report import HEADLESS_FLAGS, ensure_chromium

    binary = ensure_chromium()
    use_config(served, fresh_config)
    save_config_blocks(fresh_config, "xraylake")
    run: Any = run_deployment("consume/consume", parameters={"wait_seconds": 1}, timeout=180, poll_interval=1)
    assert run.state.is_completed(), run.state.message
    flags = [
        *HEADLESS_FLAGS,
        "--window-size=1400,1600",
        "--virtual-time-budget=15000",
        "--run-all-compositor-stages-before-draw",
        "--disable-threaded-animation",
    ]
    shots = Path(os.environ.get("XRAYLAKE_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (summary,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
                key=ArtifactFilterKey(any_=["xraylake-consume-summary"]),
            )
        )
    assert "| messages received | 0 |" in str(summary.data) and "No problems." in str(summary.data)
    pages = {
        "logs": f"{prefect_server.url}/runs/flow-run/{run.id}",
        "artifacts": f"{prefect_server.url}/artifacts/artifact/{summary.id}",
        "blocks": f"{prefect_server.url}/blocks",
    }
    doms = {}
    for name, url in pages.items():
        subprocess.run(
            [
                binary,
                *flags,
                f"--user-data-dir={tmp_path / f'profile-{name}'}",
                f"--screenshot={shots / f'run-{name}.png'}",
                url,
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        doms[name] = subprocess.run(
            [binary, *flags, f"--user-data-dir={tmp_path / f'dom-{name}'}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
        assert (shots / f"run-{name}.png").exists(), name
    (shots / "run-blocks.png").rename(shots / "blocks.png")
    assert "consume starting with" in doms["logs"]
    assert "consume finished: 0 messages consumed" in doms["logs"]
    assert "messages received" in doms["artifacts"] and "No problems." in doms["artifacts"]
    for block_type in ("xraylake Config", "xraylake Roster", "xraylake Trace Queue", "Secret"):
        assert block_type in doms["blocks"], block_type
