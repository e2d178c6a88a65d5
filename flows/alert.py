"""Record an alert where a person sees it when no notification block is configured.

Without `xraylake serve --notify`, every alert automation of deployments/automations.yaml runs
the `alert` deployment with the rendered subject and body: the run logs the alert at WARNING
(the run's page and the flow-runs list show it), writes a markdown artifact and appends one
JSON line to a file (`$XRAYLAKE_HOME/alerts.log` under `xraylake serve`). Slack, Teams, e-mail
or PagerDuty: create that notification block and pass `--notify <block-type-slug>/<name>`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.states import Completed, State

from flows.observe import markdown_artifact, run_logger


@flow(name="alert")
def alert(subject: str, body: str = "", event: str = "", resource: str = "", log_file: str | None = None) -> State:
    """Record one alert: the run's log, an artifact and a line in `log_file`.

    Args:
        subject: One line saying what happened.
        body: The details (what failed, why, what to do).
        event: The Prefect event that fired the alert.
        resource: The resource the event is about (account, execution, queue, ...).
        log_file: File to append a JSON line to; empty = none.
    """
    logger = run_logger()
    logger.warning("ALERT %s | %s", subject, " ".join(body.split()))
    record = {
        "at": datetime.now(UTC).isoformat(),
        "subject": subject,
        "body": body,
        "event": event,
        "resource": resource,
    }
    if log_file:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(json.dumps(record) + "\n")
        logger.info("alert appended to %s", path)
    markdown_artifact(
        "xraylake-alert", f"## {subject}\n\n{body}\n\n- event: `{event}`\n- resource: `{resource}`", subject
    )
    return Completed(message=subject)
