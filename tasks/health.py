"""Pipeline-health documents: one per run (and per account/region for collecting runs).

`write_health(config, kind, rows)` writes them to the `xraylake-health` index (template in
`tasks/mappings.py`; the report reads them for its "Pipeline health" section). Every
document carries kind, flow_run_id, flow_run_name and timestamp (from the running flow, else
generated); the rows add account_id, account_name, region, status, watermark_lag_seconds,
dead_lettered, traces, envelopes, errors, seconds (or anything else: unknown fields map as
keywords/numbers dynamically).

Ids are deterministic (`<flow_run_id>:<row key>`), so a retried write replaces its documents.
Observability only: `write_health` never raises; it returns how many documents were written
(0 after logging a warning when OpenSearch could not take them).

Row builders for the flows' results: `account_rows(results)` (sweep, backfill, collect: one row
per account/region) and `run_row(**metrics)` (consume, replay, compact, reconcile: one row).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from blocks.config import Config
from tasks.mappings import HEALTH_FIELDS, HEALTH_INDEX

log = logging.getLogger("xraylake.health")

KINDS = frozenset({"sweep", "consume", "backfill", "replay", "collect", "reconcile", "commit", "compact"})


def _flow_run() -> tuple[str | None, str | None]:
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.get_id()
        return (str(run_id) if run_id else None), (flow_run.get_name() if run_id else None)
    except Exception:
        return None, None


def account_rows(results: Iterable[Any]) -> list[dict[str, Any]]:
    """Rows from `tasks.collector.AccountResult`s (or their `summary()` dicts)."""
    rows = []
    for result in results:
        data = result if isinstance(result, Mapping) else result.summary()
        rows.append(
            {
                "account_id": data.get("account_id"),
                "account_name": data.get("account_name"),
                "region": data.get("region"),
                "status": data.get("status"),
                "watermark_lag_seconds": data.get("watermark_lag_seconds"),
                "traces": data.get("traces", 0),
                "envelopes": data.get("envelopes", 0),
                "errors": 1 if data.get("status") == "failed" else 0,
                "error": data.get("error"),
                "throttles": data.get("throttles", 0),
                "seconds": data.get("seconds"),
                "reader": data.get("reader"),  # xray | spans | both (tasks.span_records.choose_reader)
                "reader_reason": data.get("reader_reason"),
                "indexed_percentage": data.get("indexed_percentage"),
                "spans": data.get("spans"),
                "spans_rejected": data.get("spans_rejected"),
            }
        )
    return rows


def run_row(**metrics: Any) -> dict[str, Any]:
    """One row for a whole run; `dead_lettered` may be a {reason: count} mapping (summed, kept per reason)."""
    row = dict(metrics)
    dead = row.get("dead_lettered")
    if isinstance(dead, Mapping):
        row["dead_lettered"] = int(sum(dead.values()))
        row["dead_lettered_reasons"] = {str(k): int(v) for k, v in dead.items()}
    errors = row.get("errors")
    if isinstance(errors, Sequence) and not isinstance(errors, str):
        row["errors"] = len(errors)
    return row


def health_documents(
    kind: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    flow_run_id: str | None = None,
    flow_run_name: str | None = None,
    timestamp: datetime | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(id, document) pairs (pure): common fields + each row, None values dropped."""
    if kind not in KINDS:
        raise ValueError(f"unknown health kind {kind!r}; expected one of {', '.join(sorted(KINDS))}")
    run_id = flow_run_id or f"local-{uuid.uuid4().hex}"
    when = (timestamp or datetime.now(UTC)).astimezone(UTC)
    common = {
        "kind": kind,
        "flow_run_id": run_id,
        "flow_run_name": flow_run_name,
        "timestamp": when.isoformat(),
    }
    out = []
    for i, row in enumerate(rows or [{}]):
        doc = {k: v for k, v in (common | dict(row)).items() if v is not None}
        for name, kind_of in HEALTH_FIELDS.items():  # numbers as numbers, whatever the row held
            if name in doc and kind_of in ("long", "double"):
                doc[name] = int(doc[name]) if kind_of == "long" else float(doc[name])
        key = ":".join(str(row[k]) for k in ("account_id", "region") if row.get(k)) or str(i)
        out.append((f"{run_id}:{key}", doc))
    return out


def write_health(
    config: Config,
    kind: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    client: Any = None,
    refresh: bool = False,
) -> int:
    """Index the run's health documents into `xraylake-health`; never raises (returns 0 on failure)."""
    try:
        run_id, run_name = _flow_run()
        documents = health_documents(kind, rows, flow_run_id=run_id, flow_run_name=run_name)
        from tasks.index import client_for, ensure_health_template

        if client is None:
            client = client_for(config.opensearch)
        ensure_health_template(client)
        body: list[dict[str, Any]] = []
        for doc_id, doc in documents:
            body.append({"index": {"_index": HEALTH_INDEX, "_id": doc_id}})
            body.append(doc)
        response = client.bulk(body=body, refresh="wait_for" if refresh else "false")
        failed = [item for item in response.get("items", []) if item.get("index", {}).get("error")]
        if failed:
            log.warning("health: %d of %d documents rejected: %s", len(failed), len(documents), failed[0])
        return len(documents) - len(failed)
    except Exception as error:  # observability must not fail the run
        log.warning("health: could not write %s documents: %s: %s", kind, type(error).__name__, error)
        return 0
