"""OpenSearch: client from the target block, idempotent templates, versioned bulk writes.

Writes use `version_type=external_gte` with version = collected_at in ms: a newer collection
replaces an in-progress document, an older replay never overwrites newer data, and the 409 a stale
document gets counts as success. Every item's result is checked (silent partial bulk loads are
how peers lost data).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opensearchpy import OpenSearch, Urllib3HttpConnection
from opensearchpy import exceptions as os_exc
from opensearchpy.helpers import streaming_bulk

from blocks import OpenSearchTarget
from tasks.errors import TerminalError, TransientError
from tasks.mappings import HEALTH_INDEX, health_index_template

BULK_CHUNK_DOCS = 1000
BULK_CHUNK_BYTES = 8 * 1024 * 1024
RETRYABLE_ITEM_STATUS = frozenset({429, 500, 502, 503, 504})


def client_for(target: OpenSearchTarget) -> OpenSearch:
    """An OpenSearch client for the block: no auth (sandbox), basic auth over TLS, or SigV4."""
    kwargs: dict[str, Any] = {
        "hosts": target.hosts,
        "verify_certs": target.verify_certs,
        "timeout": target.timeout_seconds,
        "max_retries": 3,
        "retry_on_timeout": True,
        "retry_on_status": (502, 503, 504),
        "http_compress": True,
        "pool_maxsize": 16,  # one client is shared by threads (consumer heartbeat, reconcile)
        "connection_class": Urllib3HttpConnection,
    }
    if target.auth == "basic":
        password = target.password.get_secret_value() if target.password else ""
        kwargs["http_auth"] = (target.username or "", password)
    elif target.auth == "sigv4":
        import boto3
        from opensearchpy import Urllib3AWSV4SignerAuth

        credentials = boto3.Session().get_credentials()
        region = target.sigv4_region or boto3.Session().region_name or "us-east-1"
        # urllib3 like the other modes: requests lets $REQUESTS_CA_BUNDLE override verify_certs=False
        kwargs["http_auth"] = Urllib3AWSV4SignerAuth(credentials, region, target.sigv4_service)
    return OpenSearch(**kwargs)


@dataclass(frozen=True)
class IndexAction:
    index: str
    doc_id: str
    version: int
    source: dict[str, Any]
    kind: str  # traces | segments | spans | service-map (for counting)
    versioned: bool = True
    # "create" writes only documents that do not exist (repair); a 409 then means "already there"
    op_type: str = "index"


@dataclass
class BulkReport:
    indexed: int = 0
    stale: int = 0  # 409: a newer version (index) or the document itself (create) is already there
    failed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    failed_ids: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def record(self, ok: bool, item: dict[str, Any], kinds: dict[tuple[str, str], str] | None = None) -> None:
        """Count one item of a bulk response (`streaming_bulk`/`parallel_bulk` yield `(ok, item)`)."""
        result = next(iter(item.values()))
        if ok:
            self.indexed += 1
            if kinds is not None:
                kind = kinds.get((result.get("_index", ""), result.get("_id", "")), "unknown")
                self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        elif result.get("status") == 409:
            self.stale += 1
        else:
            self.failed += 1
            self.failed_ids.add(str(result.get("_id")))
            if len(self.errors) < 20:
                self.errors.append(
                    {
                        "id": result.get("_id"),
                        "index": result.get("_index"),
                        "status": result.get("status"),
                        "error": result.get("error"),
                    }
                )


def _bulk_actions(actions: Iterable[IndexAction]) -> Iterator[dict[str, Any]]:
    for action in actions:
        item: dict[str, Any] = {
            "_op_type": action.op_type,
            "_index": action.index,
            "_id": action.doc_id,
            "_source": action.source,
        }
        if action.versioned and action.op_type == "index":
            item["version"] = action.version
            item["version_type"] = "external_gte"
        yield item


def bulk_index(client: OpenSearch, actions: list[IndexAction], max_retries: int = 5) -> BulkReport:
    """Index everything; transport failures raise TransientError, per-item failures are reported."""
    report = BulkReport()
    kinds = {(a.index, a.doc_id): a.kind for a in actions}
    try:
        for ok, item in streaming_bulk(
            client,
            _bulk_actions(actions),
            chunk_size=BULK_CHUNK_DOCS,
            max_chunk_bytes=BULK_CHUNK_BYTES,
            raise_on_error=False,
            raise_on_exception=True,
            max_retries=max_retries,
            initial_backoff=1,
            max_backoff=30,
        ):
            report.record(ok, item, kinds)
    except (os_exc.ConnectionError, os_exc.ConnectionTimeout, os_exc.TransportError) as error:
        status = getattr(error, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and status != 429:
            raise TerminalError(f"OpenSearch bulk rejected: {status} {error}") from error
        raise TransientError(f"OpenSearch bulk failed: {error}") from error
    return report


def item_failures_transient(report: BulkReport) -> bool:
    """True when every failed item failed for a reason a retry can fix (429/5xx)."""
    return all(e.get("status") in RETRYABLE_ITEM_STATUS for e in report.errors)


def ensure_templates(client: OpenSearch, templates: dict[str, dict[str, Any]]) -> list[str]:
    """Create or update index templates (idempotent)."""
    names: list[str] = []
    for name, body in templates.items():
        try:
            client.indices.put_index_template(name=name, body=body)
        except os_exc.TransportError as error:
            raise TransientError(f"put index template {name}: {error}") from error
        names.append(name)
    return names


def ensure_health_template(client: Any) -> None:
    """Create or update the pipeline-health template (`xraylake-health`, see `tasks.mappings`)."""
    client.indices.put_index_template(name=HEALTH_INDEX, body=health_index_template())


def capabilities(client: OpenSearch) -> dict[str, bool]:
    """Which optional cluster features exist (the in-memory sandbox server lacks ISM and rollover)."""
    found = {"ism": False}
    try:
        client.transport.perform_request("GET", "/_plugins/_ism/policies")
        found["ism"] = True
    except os_exc.TransportError:
        found["ism"] = False
    return found
