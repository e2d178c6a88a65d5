"""Consuming one batch of queue messages: decode → validate → transform → sinks → delete.

Sinks run in order — raw archive, Parquet, OpenSearch — and a message is deleted only when every
sink succeeded for everything it carried. A message that can never succeed goes to the DLQ at
once with its reason; a transient failure leaves it to become visible again (the queue's redrive
policy moves it to the DLQ after maxReceiveCount). One bad message never fails its batch.

Check order (`Consumer.decode`): cheap checks first, nothing fetched from S3 before the pointer
is known to be ours, and the DLQ reason is the first check that fails:

 1. `oversize`              the body is larger than an SQS message can be (1 MiB)
 2. a claim-check pointer:
    `bad-pointer`           unreadable pointer (bucket, key, sha256 of 64 hex, size ≥ 1)
    `oversize`              declared payload size above the decompressed cap
    `claim-check-location`  not the archive bucket under its payload prefix (`payloads/`)
    `signature`             no valid `pointer_signature` (a collector from before pointer
                            signatures included: such a message is never fetched)
    then one GET of at most the declared size + 1 byte:
    `claim-check-missing`   no such object (a transient S3 error leaves it for retry)
    `claim-check-mismatch`  longer than declared, or not the declared sha256
    `bad-gzip`, `decompressed-too-large`
    an inline body: `bad-base64`, `bad-gzip`, `decompressed-too-large` (gzip+base64), or
    `oversize` (plain JSON above the cap)
 3. `bad-json`              not a JSON object
 4. `signature`             the canonical envelope bytes' `signature` (every message)
 5. `unknown-schema`, `invalid-envelope`
 6. `unknown-account`       not in the roster
 7. `spoofed-sender`        account attribute or SenderId disagrees with the envelope

Memory per envelope: a segment document larger than `max_document_bytes` (default 4 MiB; X-Ray's
own limit is 64 kB), or beyond the envelope's `document_budget_bytes` (default 8 MiB of
documents), is not parsed, indexed or written to Parquet (`tasks.documents`): it is kept whole in
the raw archive (replayable with larger limits), and its trace is marked `partial` with a problem
saying so (counted in `transform_problems`). Truncation rather than streaming; the decode never
even makes a Python string of a document over the limit (`load_json(omit_strings_over=…)`),
inflates into one buffer, and, when the envelope came gzip'ed (gzip+base64 or claim-check with
`gzip_canonical`'s header), drops the inflated bytes once parsed: the raw archive stores the
wire's gzip instead of compressing again. Bench B4, one 50 MB document: 256 MB peak RSS (785 MB
before). What remains per envelope: its decoded bytes (≤ the 64 MiB cap) while parsing, and the
documents of at most `document_budget_bytes` of segment documents.

Service-map documents are written once per consumer, not once per envelope: every trace of every
envelope yields the relationships it shows, so the same few edges came back in almost every
envelope (B2's backlog: 741 legacy map documents for 90 distinct ids; 4,175 v2 documents for
3,406). `_index` sends each service-map (index, id) once per bulk, whichever envelopes carry it,
and skips those a bulk of this `Consumer` indexed successfully before (`WrittenKeys`, an LRU of
`SERVICE_MAP_MEMORY` keys); skipped ones are counted in `documents_deduplicated`. Safe because a
service-map document's id is derived from its whole content — the legacy `hashId` is Data
Prepper's hash of every field the document has (service, kind, trace group, target, destination),
the v2 id is a hash of the document (`servicemap_v2.document_id`) — and map documents are written
unversioned (the same id written again is the same document). Only items the bulk answered with
success are remembered (a failed one is sent again with the next envelope that has it, and its
envelopes stay on the queue, like any failed document's). The memory belongs to the Consumer
instance, never the module: every consume, replay or import run makes its own, so a replay into a
rebuilt index writes the map again, and flows sharing a process (`serve`) share nothing.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from blocks.config import Config
from tasks import archive, queue
from tasks.aws import MemberSessions
from tasks.documents import DOCUMENT_BUDGET_BYTES, MAX_DOCUMENT_BYTES, EnvelopeDocuments, transform_envelope
from tasks.envelope import (
    CHUNK_BYTES,
    MAX_DECOMPRESSED_BYTES,
    POINTER_SIGNATURE_ATTRIBUTE,
    SIGNATURE_ATTRIBUTE,
    Envelope,
    EnvelopeError,
    body_to_wire,
    check_pointer,
    gunzip_capped,
    is_canonical_gzip,
    load_json,
    parse_pointer,
    validate_envelope,
    verify,
    verify_pointer,
)
from tasks.errors import TransientError
from tasks.executions import ExecutionDetails
from tasks.index import BulkReport, IndexAction, bulk_index, client_for
from tasks.redact import RedactionPolicy

MAX_BODY_BYTES = 1_048_576
ALL_SINKS = frozenset({"raw", "parquet", "index"})
SERVICE_MAP_MEMORY = 100_000  # service-map (index, id) pairs a Consumer remembers as written


class WrittenKeys:
    """A bounded set of keys, least recently seen dropped first (an LRU without values)."""

    def __init__(self, capacity: int = SERVICE_MAP_MEMORY) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        try:
            self._keys.move_to_end(key)  # type: ignore[arg-type]  # seen: now the most recent
        except KeyError:
            return False
        return True

    def add(self, key: tuple[str, str]) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)


@dataclass
class Decoded:
    message: queue.ReceivedMessage
    envelope: Envelope
    raw: bytes | bytearray | archive.GzippedRaw  # what the raw archive stores: canonical bytes, or their gzip

    @property
    def size(self) -> int:
        """Length of the canonical envelope bytes."""
        return self.raw.size if isinstance(self.raw, archive.GzippedRaw) else len(self.raw)


@dataclass
class BatchStats:
    received: int = 0
    deleted: int = 0
    duplicates: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    left_for_retry: int = 0
    envelopes: int = 0
    traces: int = 0
    segments: int = 0
    spans: int = 0
    documents_indexed: int = 0
    documents_stale: int = 0
    documents_failed: int = 0
    documents_deduplicated: int = 0  # service-map documents not sent again (module docstring)
    raw_objects: int = 0
    parquet_files: int = 0
    parquet_bytes: int = 0
    transform_problems: int = 0
    traces_rejected: int = 0  # traces whose id is no trace id: in the raw archive, never indexed
    span_records_rejected: int = 0  # malformed aws/spans records (also in transform_problems)
    rejections: list[str] = field(default_factory=list)  # their reasons (the first 20)
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    errors: list[str] = field(default_factory=list)

    def merge(self, other: BatchStats) -> None:
        for name, value in vars(other).items():
            if name == "stage_seconds":
                for stage, seconds in value.items():
                    self.stage_seconds[stage] += seconds
            elif isinstance(value, Counter):
                getattr(self, name).update(value)
            elif isinstance(value, list):
                getattr(self, name).extend(value[: max(0, 20 - len(getattr(self, name)))])
            else:
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in vars(self).items():
            if name == "stage_seconds":
                out[name] = {k: round(v, 3) for k, v in value.items()}
            else:
                out[name] = dict(value) if isinstance(value, Counter) else value
        out["dead_lettered_total"] = sum(self.dead_lettered.values())
        return out


class Consumer:
    """Holds the clients; `process(messages)` handles one batch."""

    def __init__(
        self,
        config: Config,
        s3: Any,
        sqs: Any,
        redaction: RedactionPolicy | None = None,
        max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
        index_prefix: str | None = None,
        describe_executions: bool = True,
        chunk_bytes: int = CHUNK_BYTES,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
        document_budget_bytes: int = DOCUMENT_BUDGET_BYTES,
    ) -> None:
        self.config = config
        self.s3 = s3
        self.sqs = sqs
        self.opensearch = client_for(config.opensearch)
        self.redaction = redaction or RedactionPolicy()
        self.max_decompressed_bytes = max_decompressed_bytes
        self.chunk_bytes = chunk_bytes
        self.max_document_bytes = max_document_bytes
        self.document_budget_bytes = document_budget_bytes
        self.index_prefix = index_prefix or config.opensearch.index_prefix
        # which index families (and span schema) the target receives; Parquet + raw stay complete
        self.span_generation = config.opensearch.span_generation
        self.index_profile = config.opensearch.index_profile
        self.service_map_bucket_seconds = config.opensearch.service_map_bucket_seconds
        self.service_map_written = WrittenKeys()  # per instance, never module-global (module docstring)
        self.keys = [k.get_secret_value() for k in config.signing_keys]
        self.accounts = {a.account_id: a for a in config.roster.accounts}
        self.executions = (
            ExecutionDetails(MemberSessions(config.roster), self.accounts) if describe_executions else None
        )
        archive.return_arrow_memory_promptly()

    # ------------------------------------------------------------ decode + validate

    def decode(self, message: queue.ReceivedMessage) -> Decoded:
        """Raises EnvelopeError (poison, DLQ at once) or TransientError (leave for retry); the
        checks run in the order of the module docstring."""
        body = message.body
        if len(body.encode()) > MAX_BODY_BYTES:
            raise EnvelopeError("oversize", f"message body of {len(body)} bytes exceeds the SQS limit")
        compressed: bytes | None
        raw: bytes | bytearray
        pointer = parse_pointer(body)
        if pointer is not None:
            store = self.config.archive
            check_pointer(pointer, store.bucket, store.payload_prefix, self.max_decompressed_bytes)
            verify_pointer(body.encode(), message.attributes.get(POINTER_SIGNATURE_ATTRIBUTE), self.keys)
            compressed = archive.fetch_claim_check(self.s3, pointer)
            raw = gunzip_capped(compressed, self.max_decompressed_bytes)
        else:
            raw, compressed = body_to_wire(body, self.max_decompressed_bytes)
        data = load_json(raw, omit_strings_over=self.max_document_bytes)
        verify(raw, message.attributes.get(SIGNATURE_ATTRIBUTE), self.keys)
        kept: bytes | bytearray | archive.GzippedRaw = raw
        if compressed is not None and is_canonical_gzip(compressed):
            kept = archive.GzippedRaw(compressed, len(raw))
        del raw  # with the wire's gzip kept, the inflated bytes go now (one large envelope: B4)
        envelope = validate_envelope(data)
        if envelope.account_id not in self.accounts:
            raise EnvelopeError("unknown-account", f"account {envelope.account_id} is not in the roster")
        self._check_sender(message, envelope)
        return Decoded(message, envelope, kept)

    def _check_sender(self, message: queue.ReceivedMessage, envelope: Envelope) -> None:
        """The message's claimed account must match the envelope; a SenderId that is an account
        id must be the log account or the envelope's (assumed-role ids cannot be mapped)."""
        claimed = message.attributes.get("account_id")
        if claimed and claimed != envelope.account_id:
            raise EnvelopeError(
                "spoofed-sender", f"message says account {claimed}, envelope says {envelope.account_id}"
            )
        sender = message.system.get("SenderId", "")
        if sender.isdigit() and len(sender) == 12 and sender not in {self.config.log_account_id, envelope.account_id}:
            raise EnvelopeError("spoofed-sender", f"sender {sender} may not send for account {envelope.account_id}")

    # ------------------------------------------------------------ the batch

    def process(
        self,
        messages: Sequence[queue.ReceivedMessage],
        on_done: Callable[[Sequence[queue.ReceivedMessage]], None] | None = None,
    ) -> BatchStats:
        """Decode the batch message by message and ingest it in chunks that close once they hold
        `chunk_bytes` of decoded JSON, deleting each chunk's messages once every sink took them:
        memory follows the chunk, not the batch (the documents take many times their JSON; B4).
        `on_done` hears of every message this call finished with (deleted or dead-lettered)."""
        stats = BatchStats(received=len(messages))
        pending: dict[str, list[Decoded]] = {}  # envelope id → every delivered copy, awaiting ingest
        pending_bytes = 0
        ingested_ok: dict[str, bool] = {}  # envelopes of earlier chunks of this batch
        finished: list[queue.ReceivedMessage] = []

        def flush() -> None:
            nonlocal pending, pending_bytes
            if pending:
                failed = self.ingest([(copies[0].envelope, copies[0].raw) for copies in pending.values()], stats)
                ingested_ok.update((eid, eid not in failed) for eid in pending)
                self._delete(
                    [item.message for eid, copies in pending.items() if eid not in failed for item in copies],
                    stats,
                    finished,
                )
                stats.left_for_retry += sum(len(pending[eid]) for eid in failed)
            pending, pending_bytes = {}, 0
            if on_done is not None and finished:
                on_done(list(finished))
            finished.clear()

        for message in messages:
            tick = time.perf_counter()
            try:
                item = self.decode(message)
            except EnvelopeError as error:
                if self._dead_letter(message, error.reason, error.detail, stats):
                    finished.append(message)
                continue
            except TransientError as error:
                stats.left_for_retry += 1
                stats.errors.append(f"{message.message_id}: {error}")
                continue
            finally:
                stats.stage_seconds["decode"] += time.perf_counter() - tick
            eid = item.envelope.envelope_id
            if eid in pending or eid in ingested_ok:  # a duplicate delivery: ingest once, delete every copy
                stats.duplicates += 1
                if eid in pending:
                    pending[eid].append(item)
                elif ingested_ok[eid]:
                    self._delete([message], stats, finished)
                else:
                    stats.left_for_retry += 1
                continue
            pending[eid] = [item]
            pending_bytes += item.size
            if pending_bytes >= self.chunk_bytes:
                flush()
        flush()
        return stats

    def _delete(
        self, messages: list[queue.ReceivedMessage], stats: BatchStats, finished: list[queue.ReceivedMessage]
    ) -> None:
        tick = time.perf_counter()
        not_deleted = set(queue.delete(self.sqs, self.config.queue.queue_url, messages))
        stats.deleted += len(messages) - len(not_deleted)
        finished += [m for m in messages if m.message_id not in not_deleted]
        stats.stage_seconds["delete"] += time.perf_counter() - tick

    def ingest(
        self,
        items: Sequence[tuple[Envelope, bytes | bytearray | archive.GzippedRaw]],
        stats: BatchStats,
        sinks: frozenset[str] = ALL_SINKS,
    ) -> set[str]:
        """Transform decoded envelopes and write them to `sinks` (raw, parquet, index), in that
        order; returns the envelope ids that some sink did not take (not to be deleted). Each
        item's bytes are the canonical envelope JSON, or their `gzip_canonical` (`GzippedRaw`)."""
        envelopes = {envelope.envelope_id: (envelope, raw) for envelope, raw in items}
        stats.envelopes += len(envelopes)
        failed: set[str] = set()

        tick = time.perf_counter()
        results = {eid: self._transform(envelope, stats) for eid, (envelope, _) in envelopes.items()}
        stats.stage_seconds["transform"] += time.perf_counter() - tick

        if "raw" in sinks:
            tick = time.perf_counter()
            for eid, (envelope, raw) in envelopes.items():
                try:
                    archive.put_raw(self.s3, self.config.archive, envelope, raw)
                    stats.raw_objects += 1
                except Exception as error:
                    failed.add(eid)
                    stats.errors.append(f"raw archive {eid}: {error}")
            stats.stage_seconds["raw"] += time.perf_counter() - tick

        if "parquet" in sinks:
            tick = time.perf_counter()
            failed |= self._write_parquet({eid: r for eid, r in results.items() if eid not in failed}, stats)
            stats.stage_seconds["parquet"] += time.perf_counter() - tick

        if "index" in sinks:
            versions = {eid: envelope.collected_at_ms for eid, (envelope, _) in envelopes.items()}
            failed |= self._index({eid: r for eid, r in results.items() if eid not in failed}, versions, stats)
        return failed

    def _dead_letter(self, message: queue.ReceivedMessage, reason: str, detail: str, stats: BatchStats) -> bool:
        try:
            queue.dead_letter(self.sqs, self.config.queue.dlq_url, message, reason, detail)
            queue.delete(self.sqs, self.config.queue.queue_url, [message])
            stats.dead_lettered[reason] += 1
            return True
        except Exception as error:  # the redrive policy still moves it eventually
            stats.left_for_retry += 1
            stats.errors.append(f"dead-letter {message.message_id}: {error}")
            return False

    def _transform(self, envelope: Envelope, stats: BatchStats) -> EnvelopeDocuments:
        execution_for = self.executions.for_trace if self.executions else None
        result = transform_envelope(
            envelope,
            self.accounts[envelope.account_id],
            self.redaction,
            execution_for,
            max_document_bytes=self.max_document_bytes,
            document_budget_bytes=self.document_budget_bytes,
        )
        stats.traces += len(result.traces)
        stats.segments += len(result.segments)
        stats.spans += len(result.spans)
        stats.transform_problems += len(result.problems)
        stats.traces_rejected += len(result.rejected)
        stats.span_records_rejected += result.records_rejected
        stats.rejections += [f"envelope {envelope.envelope_id}: {r['reason']}" for r in result.rejected[:5]]
        return result

    def _write_parquet(self, results: dict[str, EnvelopeDocuments], stats: BatchStats) -> set[str]:
        """One file per partition and table for the batch; a failed file keeps its envelopes."""
        failed: set[str] = set()
        for table_name in ("traces", "segments"):
            tables = [t for t in (r.arrow(table_name) for r in results.values()) if t.num_rows]
            if not tables:
                continue
            combined = pa.concat_tables(tables)
            for part in archive.split_by_partition(combined):
                members = sorted(set(part.table.column("envelope_id").to_pylist()))
                key = archive.parquet_key(
                    self.config.archive,
                    table_name,
                    part.account_id,
                    part.region,
                    part.dt,
                    part.hour,
                    archive.batch_id(members),
                )
                try:
                    stats.parquet_bytes += archive.write_parquet(self.s3, key, self.config.archive.bucket, part.table)
                    stats.parquet_files += 1
                except Exception as error:
                    failed.update(members)
                    stats.errors.append(f"parquet {key}: {error}")
        return failed

    def _index(self, results: dict[str, EnvelopeDocuments], versions: dict[str, int], stats: BatchStats) -> set[str]:
        """Index `results`; returns the envelope ids with a document the cluster did not take. Times
        building the documents (standard spans, v2 map: stage `index_documents`) apart from the
        cluster's bulk (stage `index`)."""
        tick = time.perf_counter()
        actions: list[IndexAction] = []
        owners: dict[str, list[str]] = {}  # document id → the envelopes that carry it
        service_map: set[tuple[str, str]] = set()  # sent in this bulk
        for eid, result in results.items():
            version = versions[eid]
            for action in result.index_actions(
                version, self.index_prefix, self.span_generation, self.index_profile, self.service_map_bucket_seconds
            ):
                if action.kind == "service-map":
                    key = (action.index, action.doc_id)
                    if key in service_map:  # another envelope of this bulk has it: it fails with that one
                        owners[action.doc_id].append(eid)
                        stats.documents_deduplicated += 1
                        continue
                    if key in self.service_map_written:
                        stats.documents_deduplicated += 1
                        continue
                    service_map.add(key)
                actions.append(action)
                owners.setdefault(action.doc_id, []).append(eid)
        stats.stage_seconds["index_documents"] += time.perf_counter() - tick
        if not actions:
            return set()
        tick = time.perf_counter()
        try:
            report: BulkReport = bulk_index(self.opensearch, actions)
        except Exception as error:  # cluster down: nothing of this batch is deleted
            stats.errors.append(f"bulk: {error}")
            stats.documents_failed += len(actions)
            return set(results)
        finally:
            stats.stage_seconds["index"] += time.perf_counter() - tick
        stats.documents_indexed += report.indexed
        stats.documents_stale += report.stale
        stats.documents_failed += report.failed
        stats.errors += [str(e) for e in report.errors[:5]]
        if report.indexed + report.stale + report.failed == len(actions):  # every item answered
            for key in service_map:
                if key[1] not in report.failed_ids:
                    self.service_map_written.add(key)
        return {eid for doc_id in report.failed_ids for eid in owners.get(doc_id, ())}
