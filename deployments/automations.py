"""Create or update the alert automations of `deployments/automations.yaml` through the Prefect API.

Each entry is a Prefect automation (name, description, tags, trigger) plus `notify` {subject,
body}: with a notification block (`--notify <block-type-slug>/<block-name>`, e.g.
`slack-webhook/xraylake-alerts`) it becomes a `send-notification` action on that block; without
one, a `run-deployment` action of the `alert` deployment (flows/alert.py: the alert in that
run's logs and artifact and in `$XRAYLAKE_HOME/alerts.log`), or, when that deployment is not
registered either, a `do-nothing` action (the firing still shows as a
`prefect.automation.triggered` event).
Automations are matched by name, so running this again updates them instead of adding copies.

    python -m deployments.automations [--notify custom-webhook/xraylake-alerts] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.events.actions import DoNothing, RunDeployment, SendNotification
from prefect.events.schemas.automations import AutomationCore
from prefect.exceptions import ObjectNotFound

AUTOMATIONS_YAML = Path(__file__).with_name("automations.yaml")


def load_definitions(path: Path = AUTOMATIONS_YAML) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    definitions = data.get("automations", []) if isinstance(data, dict) else data
    if not isinstance(definitions, list) or not all(isinstance(d, dict) for d in definitions):
        raise ValueError(f"{path}: expected `automations:` with a list of mappings")
    return definitions


ALERT_DEPLOYMENT = "alert/alert"


def alert_action(deployment_id: UUID, subject: str, body: str) -> RunDeployment:
    """Run the `alert` deployment with the rendered subject and body (Jinja over the event)."""
    return RunDeployment(
        source="selected",
        deployment_id=deployment_id,
        parameters={
            "subject": subject,
            "body": body,
            "event": "{{ event.event }}",
            "resource": "{{ event.resource.id }}",
        },
    )


def alert_log_path(home: Path | None = None) -> Path:
    """Where the `alert` deployment served by `xraylake serve` appends its JSON lines."""
    from blocks.config import xraylake_home

    return (home or xraylake_home()) / "alerts.log"


def build_automations(
    definitions: list[dict[str, Any]], notify_block_id: UUID | None, alert_deployment_id: UUID | None = None
) -> list[AutomationCore]:
    """Prefect automation models (validated here, before anything reaches the API)."""
    out: list[AutomationCore] = []
    for definition in definitions:
        spec = dict(definition)
        notify = spec.pop("notify", None)
        actions: list[Any] = list(spec.pop("actions", []))
        if notify is not None:
            if notify_block_id is not None:
                actions.append(
                    SendNotification(block_document_id=notify_block_id, subject=notify["subject"], body=notify["body"])
                )
            elif alert_deployment_id is not None:
                actions.append(alert_action(alert_deployment_id, notify["subject"], notify["body"]))
            else:
                actions.append(DoNothing())
        out.append(AutomationCore.model_validate(spec | {"actions": actions}))
    return out


def resolve_block(reference: str) -> UUID:
    """`<block-type-slug>/<block-name>` → the block document id (the block must exist)."""
    from prefect.blocks.core import Block

    if "/" not in reference:
        raise ValueError(f"notification block {reference!r}: expected <block-type-slug>/<block-name>")
    block = Block.load(reference)
    block_id = getattr(block, "_block_document_id", None)
    if block_id is None:
        raise ValueError(f"block {reference!r} has no document id")
    if not hasattr(block, "notify"):
        raise ValueError(f"block {reference!r} ({type(block).__name__}) cannot send notifications")
    return UUID(str(block_id))


def ensure_automations(notify: str | None = None, path: Path = AUTOMATIONS_YAML) -> dict[str, UUID]:
    """Create or update every automation of `path` by name; returns name → id. Without
    `notify` they run the `alert` deployment when it is registered."""
    block_id = resolve_block(notify) if notify else None
    with get_client(sync_client=True) as client:
        alert_id = None
        if block_id is None:
            try:
                alert_id = client.read_deployment_by_name(ALERT_DEPLOYMENT).id
            except ObjectNotFound:  # not registered: do-nothing actions
                alert_id = None
        automations = build_automations(load_definitions(path), block_id, alert_id)
        ids: dict[str, UUID] = {}
        for automation in automations:
            existing = client.read_automations_by_name(automation.name)
            if existing:
                keep, *extra = existing
                client.update_automation(keep.id, automation)
                for duplicate in extra:
                    client.delete_automation(duplicate.id)
                ids[automation.name] = keep.id
            else:
                ids[automation.name] = client.create_automation(automation)
    return ids


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.automations", description=__doc__.splitlines()[0])
    parser.add_argument("--notify", help="notification block, <block-type-slug>/<block-name>")
    parser.add_argument("--file", type=Path, default=AUTOMATIONS_YAML)
    parser.add_argument("--dry-run", action="store_true", help="validate and print, create nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        automations = build_automations(load_definitions(args.file), None)
        print(json.dumps([a.model_dump(mode="json") for a in automations], indent=2))
        return 0
    for name, automation_id in ensure_automations(args.notify, args.file).items():
        print(f"{name}: {automation_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
