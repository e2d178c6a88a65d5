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
from tasks.mappings import (
    HEALTH_INDEX,
    SPAN_INDEX_PREFIX,
    health_index_template,
    index_templates,
    ism_policies,
    mapping_generation,
)

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
    """Create or update index templates (idempotent). A span template is refused where span
    indices of the other generation exist behind its alias (`check_span_generation`)."""
    span = templates.get(SPAN_INDEX_PREFIX)
    if span is not None:
        check_span_generation(client, span.get("_meta", {}).get("generation", "legacy"))
    names: list[str] = []
    for name, body in templates.items():
        try:
            client.indices.put_index_template(name=name, body=body)
        except os_exc.TransportError as error:
            raise TransientError(f"put index template {name}: {error}") from error
        names.append(name)
    return names


def target_templates(target: OpenSearchTarget, prefix: str | None = None) -> dict[str, dict[str, Any]]:
    """The index templates of what the target receives: its profile's families in its span generation."""
    return index_templates(prefix or target.index_prefix, target.span_generation, target.index_profile)


def target_ism_policies(target: OpenSearchTarget, prefix: str | None = None) -> dict[str, dict[str, Any]]:
    """One ISM policy per index family the target receives (empty without `retention_days`)."""
    if target.retention_days is None:
        return {}
    return ism_policies(
        target.retention_days, prefix or target.index_prefix, target.span_generation, target.index_profile
    )


def ensure_health_template(client: Any) -> None:
    """Create or update the pipeline-health template (`xraylake-health`, see `tasks.mappings`)."""
    client.indices.put_index_template(name=HEALTH_INDEX, body=health_index_template())


ISM_PLUGINS = frozenset({"opensearch-index-management", "opendistro_index_management", "opendistro-index-management"})


def capabilities(client: OpenSearch) -> dict[str, Any]:
    """Which optional cluster features exist, and why not where they do not: `ism` (Index State
    Management: `_cat/plugins` lists `opensearch-index-management`, or its API answers). The
    in-memory sandbox server has neither; Amazon OpenSearch Serverless has no ISM either."""
    found: dict[str, Any] = {"ism": False, "ism_reason": ""}
    try:
        plugins = client.transport.perform_request("GET", "/_cat/plugins", params={"format": "json"})
        components = {str(row.get("component")) for row in plugins or [] if isinstance(row, dict)}
        if components & ISM_PLUGINS:
            found["ism"] = True
            return found
        listed = ", ".join(sorted(components)) or "none"
        found["ism_reason"] = f"_cat/plugins lists no index-management plugin (plugins: {listed})"
    except os_exc.TransportError as error:
        found["ism_reason"] = f"_cat/plugins failed: {error.status_code}"
    try:  # a cluster that hides _cat/plugins may still have the API
        client.transport.perform_request("GET", "/_plugins/_ism/policies")
        found["ism"], found["ism_reason"] = True, ""
    except os_exc.TransportError as error:
        found["ism_reason"] += f"; GET /_plugins/_ism/policies answered {error.status_code}"
    return found


def ensure_ism_policies(
    client: OpenSearch, policies: dict[str, dict[str, Any]], caps: dict[str, Any], retention_days: int | None
) -> dict[str, Any]:
    """Install (or update) the ISM policies when the cluster has ISM and a retention is configured;
    otherwise say why nothing was installed. `{"installed": [ids], "skipped": reason | None}`."""
    if not caps.get("ism"):
        return {"installed": [], "skipped": f"the cluster has no ISM: {caps.get('ism_reason') or 'not found'}"}
    if retention_days is None:
        return {"installed": [], "skipped": "no retention configured (opensearch.retention_days)"}
    installed = []
    for policy_id, body in policies.items():
        path = f"/_plugins/_ism/policies/{policy_id}"
        params: dict[str, Any] = {}
        try:
            current = client.transport.perform_request("GET", path)
            params = {"if_seq_no": current["_seq_no"], "if_primary_term": current["_primary_term"]}
        except os_exc.NotFoundError:
            pass
        try:
            client.transport.perform_request("PUT", path, params=params, body=body)
        except os_exc.TransportError as error:
            raise TransientError(f"put ISM policy {policy_id}: {error}") from error
        installed.append(policy_id)
    return {"installed": installed, "skipped": None}


class GenerationConflict(TerminalError):
    """Span indices of the other schema generation exist behind the alias a template would cover."""


def existing_span_generations(client: OpenSearch, alias: str = SPAN_INDEX_PREFIX) -> dict[str, str]:
    """Index → span schema generation (`mappings.mapping_generation`) of every `<alias>-*` index."""
    try:
        found = client.indices.get_mapping(index=f"{alias}-*", allow_no_indices=True)
    except os_exc.NotFoundError:
        return {}
    except os_exc.TransportError as error:
        raise TransientError(f"read the mappings of {alias}-*: {error}") from error
    return {index: mapping_generation(body.get("mappings") or {}) for index, body in sorted(found.items())}


def check_span_generation(client: OpenSearch, generation: str, alias: str = SPAN_INDEX_PREFIX) -> None:
    """Refuse to install the `generation` span template where indices of the other one exist
    behind the same alias: two span mappings behind one alias make queries over it fail."""
    other = {index: found for index, found in existing_span_generations(client, alias).items() if found != generation}
    if not other:
        return
    names = sorted(other)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    theirs = next(iter(other.values()))
    raise GenerationConflict(
        f"refusing to install the {generation!r} span template: {len(names)} index(es) behind the alias "
        f"{alias!r} hold the {theirs!r} span schema ({shown}). Either keep the target's "
        f"span_generation at {theirs!r}, or move those indices out of the way first (reindex them into "
        f"another cluster or name, or delete them: DELETE {alias}-*) and rerun `xraylake setup`; "
        "replay or import from the S3 archive then rebuilds them in the new schema."
    )
