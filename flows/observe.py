"""Artifacts and events: what a run shows in the Prefect UI and what automations react to."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

log = logging.getLogger("xraylake")


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, (list, dict)):
        return str(value)
    return value


def summary_artifact(key: str, title: str, rows: Sequence[Mapping[str, Any]], notes: Sequence[str] = ()) -> None:
    """A table artifact plus a markdown headline; never fails the run (observability only)."""
    try:
        create_table_artifact(key=key, table=[{k: _cell(v) for k, v in row.items()} for row in rows], description=title)
        lines = [f"## {title}", *[f"- {n}" for n in notes]]
        create_markdown_artifact(key=f"{key}-summary", markdown="\n".join(lines), description=title)
    except Exception as error:  # the data path must not depend on the artifact API
        log.warning("could not write artifact %s: %s", key, error)


def emit(event: str, resource_id: str, payload: Mapping[str, Any] | None = None, **labels: str) -> None:
    """A Prefect event (`xraylake.*`); automations in deployments/automations.yaml react to them."""
    try:
        emit_event(
            event=event,
            resource={"prefect.resource.id": resource_id, **labels},
            payload=dict(payload or {}),
        )
    except Exception as error:
        log.warning("could not emit %s for %s: %s", event, resource_id, error)
