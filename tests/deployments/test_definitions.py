"""Deployments without a server: prefect.yaml through Prefect's own loaders, `prefect deploy`, typed
parameter forms, automations, limits, EventBridge templates and health documents."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.events.schemas.events import ResourceSpecification

from blocks.config import Config
from deployments import automations as auto
from deployments import serve
from tasks import health, limits
from tasks.index import client_for
from tasks.mappings import HEALTH_INDEX
from tests import prefect_db
from tests.deployments.helpers import EXPECTED, PROJECT, WEBHOOK, flow_name, webhook_events

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
def test_prefect_deploy_registers_every_deployment(tmp_path: Path, prefect_db_template: Path) -> None:
    """`prefect work-pool create` + `prefect deploy --all` on a server of its own (the module's
    server serves the same deployment names), read back through the API."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = serve.start_local_server(
        prefect_db.free_port(),
        prefect_home=tmp_path / "prefect-home",
        extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
        | prefect_db.local_server_env(prefect_db_template, tmp_path / "prefect-home"),
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
    # a run whose process died emits no event of ours: Prefect's own Crashed event of any run of a
    # deployment tagged xraylake alerts instead, and every deployment carries that tag
    (crashed,) = [a for a in built if "prefect.flow-run.Crashed" in a.trigger.expect]  # type: ignore[union-attr]
    related = crashed.trigger.match_related  # type: ignore[union-attr]
    related = related if isinstance(related, list) else [related]
    assert {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.xraylake"} in [
        r.model_dump() for r in related
    ]
    deployments = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
    assert all("xraylake" in d["tags"] for d in deployments)
    # every subject/body is a template Prefect's sandboxed Jinja environment can parse
    from prefect.server.utilities.user_templates import validate_user_template

    for automation in built:
        validate_user_template(automation.actions[0].subject)  # type: ignore[union-attr]
        validate_user_template(automation.actions[0].body)  # type: ignore[union-attr]


# events that inform (the event feed shows them) rather than report a failure
INFORMATIONAL_EVENTS = {"xraylake.account.retired", "xraylake.account.transaction-search"}


def test_every_failure_event_the_code_emits_has_an_alert() -> None:
    """Each `xraylake.*` event name in flows/ and tasks/ is expected by an automation, unless it
    is informational: a new failure event without an alert fails here."""
    names = {
        match
        for folder in ("flows", "tasks")
        for path in (PROJECT / folder).glob("*.py")
        for match in re.findall(r'"(xraylake\.[a-z-]+\.[a-z-]+)"', path.read_text())
    } - {"xraylake.account.name"}  # a resource label, not an event
    assert {"xraylake.flow.failed", "xraylake.collect.failed", "xraylake.lake.file-refused"} <= names
    alerted = {e for a in auto.load_definitions() for e in a["trigger"]["expect"]}
    assert names - INFORMATIONAL_EVENTS <= alerted, sorted(names - INFORMATIONAL_EVENTS - alerted)


def test_planned_limits_cover_every_account_and_region(fresh_config: Config) -> None:
    specs = limits.planned_limits(fresh_config.roster, collectors=2, calls_per_second=5)
    pairs = [(a.account_id, r) for a in fresh_config.roster.accounts for r in a.regions]
    assert {s.name for s in specs} == {limits.concurrency_name(*p) for p in pairs} | {
        limits.rate_name(*p) for p in pairs
    }
    rate = next(s for s in specs if s.name.startswith("xray-rate-"))
    assert (rate.limit, rate.slot_decay_per_second) == (5, 5.0)


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
