"""Shared by the deployment test modules: the expected deployments and the EventBridge webhook transform."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2
from prefect.events import Event

PROJECT = Path(__file__).resolve().parents[2]
WEBHOOK = json.loads((PROJECT / "deployments" / "webhook.json").read_text())
EXPECTED = {
    "sweep",
    "sweep-shard",
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
FLOW_OF = {"consume-stream": "consume", "sweep-shard": "sweep"}


def flow_name(deployment: str) -> str:
    return FLOW_OF.get(deployment, deployment)


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
