"""Where traces go: the org queue, the S3 archive and the OpenSearch cluster."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class TraceQueue(Block):
    """The organization's SQS queue and its dead-letter queue (in the log account)."""

    _block_type_name = "xraylake Trace Queue"

    queue_url: str
    dlq_url: str
    region: str = "us-east-1"


class ArchiveStore(Block):
    """The S3 archive: raw envelopes, Parquet tables, claim-check payloads and run state."""

    _block_type_name = "xraylake Archive Store"

    bucket: str
    region: str = "us-east-1"
    raw_prefix: str = "raw"
    parquet_prefix: str = "parquet"
    payload_prefix: str = "payloads"
    state_prefix: str = "state"


class OpenSearchTarget(Block):
    """An OpenSearch cluster: the in-memory sandbox server, a self-managed cluster or Amazon OpenSearch."""

    _block_type_name = "xraylake OpenSearch Target"

    hosts: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:9200"])
    auth: Literal["none", "basic", "sigv4"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    sigv4_region: str | None = None
    sigv4_service: Literal["es", "aoss"] = "es"
    verify_certs: bool = True
    index_prefix: str = "xray"
    timeout_seconds: float = 30.0
    span_generation: Literal["legacy", "standard"] = Field(
        default="legacy",
        description="Trace Analytics span schema: 'legacy' (otel-v1-apm-span with keyword attributes + "
        "otel-v1-apm-service-map, OpenSearch Dashboards Trace Analytics) or 'standard' (Data Prepper's "
        "plain-raw standard span template + otel-v2-apm-service-map, the OpenSearch APM application).",
    )
    index_profile: Literal["both", "xray", "trace-analytics"] = Field(
        default="both",
        description="Index families this cluster receives: 'xray' (traces + segments), 'trace-analytics' "
        "(spans + service map) or 'both'. Parquet and the raw archive are always complete.",
    )
    service_map_bucket_seconds: Literal[60, 300, 3600] = Field(
        default=60,
        description="Time bucket of the 'standard' generation's otel-v2-apm-service-map documents, by span "
        "end time: 60 (Data Prepper's finest span-time granularity, the default), 300 or 3600 (fewer map "
        "documents, a coarser map over time). The legacy service map has no time.",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Delete indices this many days after creation (ISM policies, installed by `setup` "
        "where the cluster has ISM); None keeps them.",
    )
