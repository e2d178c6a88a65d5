"""Deployments: prefect.yaml through Prefect's own loaders, typed parameter forms, and — on a real
Prefect server on loopback serving every deployment — a replay run from its deployment, the
event-triggered collect, alert automations, two competing consumer processes and the UI's run form
in headless Chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
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
import jinja2
import pytest
from prefect.events import Event
from prefect.events.schemas.events import ResourceSpecification

from blocks.config import Config
from deployments import automations as auto
from deployments import serve
from deployments.serve import LocalServer
from tasks import envelope as env
from tasks import health, limits, queue
from tasks.index import client_for
from tasks.mappings import HEALTH_INDEX

PROJECT = Path(__file__).resolve().parents[2]
WEBHOOK = json.loads((PROJECT / "deployments" / "webhook.json").read_text())
EXPECTED = {
    "sweep",
    "consume",
    "consume-stream",
    "commit",
    "compact",
    "reconcile",
    "replay",
    "backfill",
    "backfill-chunk",
    "collect",
    "alert",
}
FLOW_OF = {"consume-stream": "consume"}


def flow_name(deployment: str) -> str:
    return FLOW_OF.get(deployment, deployment)


# ============================================================================ no server needed


def prefect_yaml_deployments() -> list[dict[str, Any]]:
    import yaml

    document = yaml.safe_load((PROJECT / "prefect.yaml").read_text())  # anchors resolved
    assert "pull" not in document  # prefect deploy records the project directory
    return list(document["deployments"])


def test_prefect_yaml_deployments_are_valid_for_their_flows() -> None:
    """What `prefect deploy` checks before it registers anything, through Prefect's public models
    (the real `prefect deploy --all` runs in test_prefect_deploy_registers_every_deployment)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
    from prefect.events import DeploymentEventTrigger
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    configs = prefect_yaml_deployments()
    assert {c["name"] for c in configs} == EXPECTED
    for config in configs:
        assert config["work_pool"]["name"] == "xraylake", config["name"]
        assert "xraylake" in config["tags"]
        flow: Any = load_flow_from_entrypoint(str(PROJECT / config["entrypoint"]))
        assert flow.name == flow_name(config["name"])
        schema = parameter_schema(flow.fn).model_dump_for_openapi()
        # the parameters in prefect.yaml are valid for the flow (what enforce_parameter_schema checks)
        errors = validate(config["parameters"], schema, ignore_required=True)
        assert not errors, (config["name"], errors)
        for schedule in config["schedules"]:
            fields = {k: v for k, v in schedule.items() if k not in ("slug", "active")}
            (IntervalSchedule if "interval" in fields else CronSchedule).model_validate(fields)
        assert ConcurrencyLimitConfig.model_validate(config["concurrency_limit"]).limit >= 1
        triggers = [DeploymentEventTrigger.model_validate(t) for t in config.get("triggers") or []]
        if config["name"] == "collect":
            (trigger,) = triggers
            assert trigger.parameters == {"execution_arn": "{{ event.resource.id }}"}
    by_name = {c["name"]: c for c in configs}
    assert by_name["sweep"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert by_name["consume"]["parameters"]["until_empty"] is True
    assert by_name["consume-stream"]["parameters"]["until_empty"] is False
    assert by_name["consume-stream"]["schedules"][0]["active"] is False
    for on_demand in ("replay", "backfill", "collect", "alert"):
        assert by_name[on_demand]["schedules"] == []
    for name in EXPECTED - {"alert"}:  # every pipeline run loads the saved config blocks by default
        assert by_name[name]["parameters"]["config_block"] == "xraylake", name


@pytest.mark.slow
def test_prefect_deploy_registers_every_deployment(tmp_path: Path) -> None:
    """`prefect work-pool create` + `prefect deploy --all` on a server of its own (the module's
    server serves the same deployment names), read back through the API."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = serve.start_local_server(
        free_port(),
        prefect_home=tmp_path / "prefect-home",
        extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"},
    )
    try:
        env = os.environ | {"PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(tmp_path / "client")}
        prefect = [sys.executable, "-m", "prefect"]
        for command in (["work-pool", "create", "xraylake", "--type", "process"], ["--no-prompt", "deploy", "--all"]):
            done = subprocess.run(prefect + command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"prefect {' '.join(command)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        configs = {c["name"]: c for c in prefect_yaml_deployments()}
        with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
            deployments = {name: client.read_deployment_by_name(f"{flow_name(name)}/{name}") for name in configs}
            for name, config in configs.items():
                deployment = deployments[name]
                assert deployment.work_pool_name == "xraylake"
                assert deployment.work_queue_name == config["work_pool"]["work_queue_name"]
                assert set(deployment.tags) == set(config["tags"])
                assert deployment.parameters == config["parameters"]
                assert deployment.enforce_parameter_schema
                # no `pull` section: prefect deploy records this directory as the working directory
                directory = {"directory": str(PROJECT)}
                assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": directory}]
                assert deployment.global_concurrency_limit is not None
                assert deployment.global_concurrency_limit.limit == config["concurrency_limit"]["limit"]
                assert deployment.concurrency_options is not None
                strategy = deployment.concurrency_options.collision_strategy.value
                assert strategy == config["concurrency_limit"]["collision_strategy"]
                assert len(deployment.schedules) == len(config["schedules"])
            schedules = {name: [(s.schedule, s.active) for s in d.schedules] for name, d in deployments.items()}
            automations = [a for a in client.read_automations() if "collect" in a.name]
        sweep_schedule, sweep_active = schedules["sweep"][0]
        assert getattr(sweep_schedule, "interval", None) == timedelta(minutes=5) and sweep_active
        assert getattr(schedules["consume"][0][0], "interval", None) == timedelta(minutes=1)
        assert [(getattr(s, "cron", None), a) for s, a in schedules["consume-stream"]] == [("0 * * * *", False)]
        assert getattr(schedules["compact"][0][0], "cron", None) == "15 * * * *"
        assert getattr(schedules["reconcile"][0][0], "cron", None) == "30 3 * * *"
        (automation,) = automations  # the collect deployment's trigger
        assert automation.trigger.model_dump()["expect"] == {"xraylake.stepfunctions.execution.status-change"}
    finally:
        server.stop()


def test_serve_builds_the_same_deployments_as_prefect_yaml() -> None:
    deployments: dict[str, Any] = {d.name: d for d in serve.build_deployments(config_path="/etc/xraylake.json")}
    assert set(deployments) == EXPECTED
    sweep = deployments["sweep"]
    assert sweep.entrypoint == "flows.sweep.sweep"
    assert sweep.concurrency_limit == 1
    assert sweep.concurrency_options is not None
    assert sweep.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert [s.schedule.interval for s in sweep.schedules] == [timedelta(minutes=5)]
    assert sweep.parameters["config_path"] == "/etc/xraylake.json"
    assert sweep.enforce_parameter_schema
    assert [s.active for s in deployments["consume-stream"].schedules] == [False]
    assert deployments["compact"].schedules[0].schedule.cron == "15 * * * *"
    assert not deployments["replay"].schedules
    (trigger,) = deployments["collect"].triggers
    assert trigger.expect == {"xraylake.stepfunctions.execution.status-change"}
    assert trigger.schedule_after == timedelta(seconds=60)  # X-Ray indexing delay
    fast: Any
    (fast,) = serve.build_deployments(only=["collect"], trigger_delay=0)[0].triggers
    assert fast.schedule_after == timedelta(0)
    paused = serve.build_deployments(schedules_active=False, only=["sweep"])
    assert [s.active for d in paused for s in d.schedules or []] == [False]
    with pytest.raises(ValueError, match="unknown deployment"):
        serve.build_deployments(only=["nope"])
    # parameters the flow's model refuses fail before anything is registered
    typo = serve.DeploymentSpec(name="typo", entrypoint="flows/sweep.py:sweep", parameters={"lag": 5, "concurrency": 0})
    with pytest.raises(ValueError, match=r"deployment typo parameters: unknown parameter\(s\) lag; 0 is less than"):
        serve.build_deployments([typo])


def test_parameter_schemas_render_typed_forms() -> None:
    """Each flow's Prefect schema (the UI form, what enforce_parameter_schema checks) is its
    parameter model's: one flat field each, with the model's types, limits and descriptions."""
    from prefect.utilities.schema_tools import validate

    from flows import parameters as fp
    from flows.backfill import backfill, backfill_chunk
    from flows.collect import collect
    from flows.commit import commit
    from flows.compact import compact
    from flows.consume import consume
    from flows.reconcile import reconcile
    from flows.replay import replay
    from flows.sweep import sweep

    schemas = {}
    for flow, model in [
        (sweep, fp.SweepParameters),
        (collect, fp.CollectParameters),
        (backfill, fp.BackfillParameters),
        (backfill_chunk, fp.BackfillChunkParameters),
        (consume, fp.ConsumeParameters),
        (replay, fp.ReplayParameters),
        (reconcile, fp.ReconcileParameters),
        (compact, fp.CompactParameters),
        (commit, fp.CommitParameters),
    ]:
        schema = serve.strict_schema(flow).model_dump_for_openapi()
        expected = fp.form_properties(model)
        assert set(schema["properties"]) == set(expected) | {"config_path", "config_block"}, flow.name
        assert schema["additionalProperties"] is False  # unknown keys refused
        for name, field in expected.items():
            shown = schema["properties"][name]
            assert shown == {k: v for k, v in field.items() if v is not None or k != "default"} | {
                "position": shown["position"]
            }
            assert field.get("description"), (flow.name, name)
            # plain text (the UI renders markdown and drops <…>); optional values as their plain type
            assert not set("<>`") & set(field["description"]), (flow.name, name)
            assert "anyOf" not in shown and "null" not in str(shown.get("type")), (flow.name, name)
        assert set(schema.get("required", [])) == set(model.model_json_schema().get("required", [])), flow.name
        schemas[flow.name] = schema

    replay_props = schemas["replay"]["properties"]
    assert replay_props["start"] == replay_props["start"] | {"type": "string", "format": "date-time"}
    assert replay_props["target"]["enum"] == ["queue", "direct"]
    assert replay_props["sinks"]["items"]["enum"] == ["index", "parquet", "raw"]
    assert replay_props["force"] == replay_props["force"] | {"type": "boolean", "default": False}
    assert set(schemas["replay"]["required"]) == {"start", "end"}
    backfill_props = schemas["backfill"]["properties"]
    assert backfill_props["chunk_minutes"] | {"minimum": 1, "maximum": 60} == backfill_props["chunk_minutes"]
    assert schemas["collect"]["required"] == ["execution_arn"]
    arn = schemas["collect"]["properties"]["execution_arn"]
    assert re.match(arn["pattern"], arn["examples"][0])
    assert not re.match(arn["pattern"], "arn:aws:states:us-east-1:12345:execution:orders:run-42")

    # what the server refuses before a run exists (enforce_parameter_schema)
    def refused(flow: str, parameters: dict[str, Any]) -> list[str]:
        return [e.message for e in validate(parameters, schemas[flow], ignore_required=True)]

    assert refused("collect", {"execution_arn": "arn:aws:states:us-east-1:123456789012:stateMachine:sm"})
    assert len(refused("sweep", {"accounts": ["12345"], "regions": ["mars-1"], "concurrency": 0})) == 3
    assert refused("sweep", {"time_range_type": "Later"})
    assert refused("backfill", {"start": "yesterday"})
    assert refused("backfill", {"start": "2026-11-20T00:00:00"})  # no time zone
    assert not refused("backfill", {"start": "2026-11-20T00:00:00.000Z", "end": "2026-11-20T01:00:00+01:00"})
    assert refused("backfill", {"chunk_minutes": 500})
    assert refused("replay", {"start_time": "2026-11-20T00:00:00Z"})  # an unknown key
    assert not refused("replay", {"accounts": None, "regions": ["eu-west-1"]})  # an emptied optional list
    assert refused("consume", {"wait_seconds": 21})
    assert refused("compact", {"tables": ["spans"]})
    assert not refused("sweep", {"accounts": ["012345678901"], "regions": ["us-gov-west-1"], "concurrency": 64})

    # rules across fields are the models' validators
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    params = fp.BackfillParameters(start=start, end=start + timedelta(hours=2), accounts=["012345678901"])
    assert params.flow_kwargs()["accounts"] == ["012345678901"]
    with pytest.raises(ValueError, match="after start"):
        fp.BackfillParameters(start=start, end=start)
    with pytest.raises(ValueError, match="time zone"):
        fp.BackfillParameters(start=start.replace(tzinfo=None), end=start.replace(tzinfo=None) + timedelta(hours=1))
    with pytest.raises(ValueError, match="10 years"):
        fp.BackfillParameters(start=start - timedelta(days=3700), end=start)
    assert fp.BackfillParameters(start=start - timedelta(days=40), end=start).start == start - timedelta(days=40)
    with pytest.raises(ValueError, match="in the future"):
        fp.ReconcileParameters(end=datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(ValueError, match="before start_date"):
        fp.CompactParameters(start_date="2026-11-02", end_date="2026-11-01")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extra"):
        fp.SweepParameters(lag=5)  # type: ignore[call-arg]
    collect_arn = schemas["collect"]["properties"]["execution_arn"]["description"]
    assert collect_arn == "The execution's ARN: arn:aws:states:REGION:ACCOUNT:execution:STATE_MACHINE:NAME"


@pytest.mark.usefixtures("prefect_harness")
def test_the_server_refuses_each_bad_form_value_before_a_run_exists() -> None:
    """The run form's values as the UI submits them, through the real server
    (enforce_parameter_schema with the schema serve registers): each bad value is HTTP 409."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    ids = {d.name: d.apply() for d in serve.build_deployments(only=["replay", "backfill", "collect", "sweep"])}
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = (now - timedelta(days=1)).isoformat(), (now - timedelta(hours=20)).isoformat()
    bad = [
        ("backfill", {"start": start, "end": end, "chunk_minutes": 500}, "500 is greater than the maximum of 60"),
        ("replay", {"start": "yesterday", "end": end}, "'yesterday' does not match"),
        ("backfill", {"start": "2026-11-20T00:00:00", "end": end}, "does not match"),  # no time zone
        ("sweep", {"accounts": ["12345"]}, "'12345' does not match"),
        ("replay", {"start": start, "end": end, "start_time": start}, "'start_time' was unexpected"),
        ("replay", {"start": start, "end": end, "target": "kafka"}, "'kafka' is not one of"),
        ("collect", {"execution_arn": "arn:aws:states:::execution::"}, "does not match"),
    ]
    with get_client(sync_client=True) as client:
        for name, parameters, reason in bad:
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(ids[name], parameters=parameters)
            assert refused.value.response.status_code == 409, (name, parameters)
            assert reason in refused.value.response.text, (name, refused.value.response.text)
        good = client.create_flow_run_from_deployment(
            ids["replay"], parameters={"start": start, "end": end, "accounts": None}
        )
        assert good.parameters["config_block"] == "xraylake"  # the deployment's default
        client.delete_flow_run(good.id)


def test_automation_definitions_are_valid_prefect_automations() -> None:
    definitions = auto.load_definitions()
    built = auto.build_automations(definitions, uuid.uuid4())
    names = {a.name for a in built}
    assert {"xraylake-dead-lettered", "xraylake-reconcile-mismatch", "xraylake-account-failed"} <= names
    expected = {e for a in built for e in a.trigger.expect}  # type: ignore[union-attr]
    for event in ("xraylake.message.dead-lettered", "xraylake.reconcile.mismatch", "xraylake.account.failed"):
        assert event in expected
    assert all(a.actions[0].type == "send-notification" for a in built)
    assert all(a.actions[0].type == "do-nothing" for a in auto.build_automations(definitions, None))
    # every subject/body is a template Prefect's sandboxed Jinja environment can parse
    from prefect.server.utilities.user_templates import validate_user_template

    for automation in built:
        validate_user_template(automation.actions[0].subject)  # type: ignore[union-attr]
        validate_user_template(automation.actions[0].body)  # type: ignore[union-attr]


def test_planned_limits_cover_every_account_and_region(fresh_config: Config) -> None:
    specs = limits.planned_limits(fresh_config.roster, collectors=2, calls_per_second=5)
    pairs = [(a.account_id, r) for a in fresh_config.roster.accounts for r in a.regions]
    assert {s.name for s in specs} == {limits.concurrency_name(*p) for p in pairs} | {
        limits.rate_name(*p) for p in pairs
    }
    rate = next(s for s in specs if s.name.startswith("xray-rate-"))
    assert (rate.limit, rate.slot_decay_per_second) == (5, 5.0)


def _transform(template: str, paths: dict[str, str], event: dict[str, Any]) -> str:
    """EventBridge's input transformer: `<name>` → the JSON value at its path."""

    def lookup(path: str) -> Any:
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            value = value[part]
        return value

    return re.sub(r"<(\w+)>", lambda m: json.dumps(lookup(paths[m.group(1)])), template)


def webhook_events(event: dict[str, Any]) -> tuple[Event, list[Event]]:
    """The sample EventBridge event through the Cloud webhook template and the /api/events transformer."""
    rendered = jinja2.Environment().from_string(json.dumps(WEBHOOK["prefect_cloud_webhook"]["template"]))
    cloud = Event.model_validate(json.loads(rendered.render(body=event)) | {"occurred": event["time"]})
    transformer = WEBHOOK["prefect_server_api_destination"]["InputTransformer"]
    body = _transform(transformer["InputTemplate"], transformer["InputPathsMap"], event)
    return cloud, [Event.model_validate(e) for e in json.loads(body)]


def test_eventbridge_templates_produce_the_event_the_collect_trigger_matches() -> None:
    sample = WEBHOOK["sample_eventbridge_event"]
    cloud, server_events = webhook_events(sample)
    (trigger,) = serve.build_deployments(only=["collect"])[0].triggers
    match = ResourceSpecification.model_validate(trigger.match)  # type: ignore[union-attr]
    arn = sample["detail"]["executionArn"]
    for event in [cloud, *server_events]:
        assert event.event in trigger.expect  # type: ignore[union-attr]
        assert event.resource.id == arn
        assert match.matches(event.resource)
    assert str(server_events[0].id) == sample["id"]  # EventBridge redelivery = same Prefect event
    running = sample | {"detail": sample["detail"] | {"status": "RUNNING"}}
    assert not match.matches(webhook_events(running)[0].resource)  # only executions that ended


def test_health_documents_and_write(fresh_config: Config) -> None:
    from tasks.collector import AccountResult

    results = [
        AccountResult("011111111111", "dev", "us-east-1", traces=4, envelopes=1, watermark_lag_seconds=125.5),
        AccountResult("022222222222", "qa", "us-east-1", status="failed", error="AccessDenied"),
    ]
    docs = health.health_documents("sweep", health.account_rows(results), flow_run_id="run-1")
    assert [d[0] for d in docs] == ["run-1:011111111111:us-east-1", "run-1:022222222222:us-east-1"]
    assert docs[0][1]["watermark_lag_seconds"] == 125.5
    assert docs[1][1]["errors"] == 1
    row = health.run_row(traces=7, dead_lettered={"bad_signature": 2, "corrupt": 1}, errors=["x"])
    assert (row["dead_lettered"], row["errors"]) == (3, 1)
    with pytest.raises(ValueError, match="unknown health kind"):
        health.health_documents("nope", [])

    written = health.write_health(fresh_config, "consume", [row], refresh=True)
    assert written == 1
    client = client_for(fresh_config.opensearch)
    hits = client.search(index=HEALTH_INDEX, body={"query": {"term": {"kind": "consume"}}})["hits"]["hits"]
    assert hits[0]["_source"]["dead_lettered"] == 3
    mapping = client.indices.get_mapping(index=HEALTH_INDEX)[HEALTH_INDEX]["mappings"]["properties"]
    assert mapping["dead_lettered"]["type"] == "long"
    broken = fresh_config.model_copy(
        update={"opensearch": fresh_config.opensearch.model_copy(update={"hosts": ["http://127.0.0.1:9"]})}
    )
    assert health.write_health(broken, "consume", [row]) == 0  # never raises


# ============================================================================ real Prefect server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """`prefect server start` on a free loopback port (UI included), its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    server = serve.start_local_server(
        free_port(),
        prefect_home=home,
        extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"},
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
