"""Create or update the alert automations of `deployments/automations.yaml` through the Prefect API.

Each entry is a Prefect automation (name, description, tags, trigger) plus `notify` {subject,
body}: with a notification block (`--notify <block-type-slug>/<block-name>`, e.g.
`slack-webhook/xraylake-alerts`) it becomes a `send-notification` action on that block; without
one, a `do-nothing` action (the firing still shows as a `prefect.automation.triggered` event).
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
from prefect.events.actions import DoNothing, SendNotification
from prefect.events.schemas.automations import AutomationCore

AUTOMATIONS_YAML = Path(__file__).with_name("automations.yaml")


def load_definitions(path: Path = AUTOMATIONS_YAML) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    definitions = data.get("automations", []) if isinstance(data, dict) else data
    if not isinstance(definitions, list) or not all(isinstance(d, dict) for d in definitions):
        raise ValueError(f"{path}: expected `automations:` with a list of mappings")
    return definitions


def build_automations(definitions: list[dict[str, Any]], notify_block_id: UUID | None) -> list[AutomationCore]:
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
    """Create or update every automation of `path` by name; returns name → id."""
    block_id = resolve_block(notify) if notify else None
    automations = build_automations(load_definitions(path), block_id)
    ids: dict[str, UUID] = {}
    with get_client(sync_client=True) as client:
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
