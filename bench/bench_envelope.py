"""B6 envelope codec: the collector's pack → id → encode path and the consumer's decode → raw archive
path, today's code side by side with the formulas it replaced (issue 14 item 7), on one core.

Workload: generated traffic of 4 accounts (`sandbox.traffic`, 4,000 traces) packed as a sweep
packs them; the consume half takes the gzip+base64 messages among them (a claim-check payload is
the same gzip, read from S3). Measured interleaved, best of R rounds each:

- collect, before: `len(orjson.dumps(trace))` per trace for packing, `orjson.dumps(trace,
  OPT_SORT_KEYS)` per trace for the id, `orjson.dumps(model_dump(mode="json"))` for the canonical
  bytes, then signature + gzip (`encode`);
- collect, now: `collector.envelopes_for` + `envelope.encode` (one key-sorted serialisation per
  trace for packing and id, canonical bytes without the `model_dump` copy);
- consume, before: inflate the wire gzip, parse, verify, then gzip the canonical bytes again for
  the raw archive (`gzip.compress(raw, 6, mtime=0)`);
- consume, now: `Consumer.decode`'s pure part (`body_to_wire`/`gunzip_capped`, `load_json`,
  `verify`, `validate_envelope`) keeping the wire's gzip for the raw archive (`GzippedRaw`).

Every round also checks that both paths give the same envelope ids and the same canonical and
archive bytes. No servers (S3 puts are the same bytes either way). Targets: now ≥ 1.0 × before
for collect (no slower), ≥ 1.3 × before for consume of gzip'ed messages.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from typing import Any

import common
import orjson

ROUNDS = 5


def old_envelopes(traces: list[dict[str, Any]], account_id: str, collected: Any) -> list[Any]:
    """The collector's packing and ids as they were: three serialisations of every trace."""
    from tasks import envelope as env
    from tasks.tracetime import trace_partition

    by_hour: dict[Any, list[dict[str, Any]]] = {}
    for trace in traces:
        by_hour.setdefault(trace_partition(trace, collected).start, []).append(trace)
    groups: list[list[dict[str, Any]]] = []
    for hour in sorted(by_hour):
        group: list[dict[str, Any]] = []
        size = 0
        for trace in by_hour[hour]:
            trace_size = len(orjson.dumps(trace))
            if group and size + trace_size > env.PACK_TARGET_BYTES:
                groups.append(group)
                group, size = [], 0
            group.append(trace)
            size += trace_size
        if group:
            groups.append(group)
    out = []
    for group in groups:
        digest = hashlib.sha256(f"{account_id}\x00us-east-1\x00".encode())
        for trace in group:
            digest.update(orjson.dumps(trace, option=orjson.OPT_SORT_KEYS))
            digest.update(b"\x00")
        out.append(
            env.Envelope(
                envelope_id=digest.hexdigest()[:32],
                source="sweep",
                account_id=account_id,
                region="us-east-1",
                collected_at=collected,
                traces=group,
            )
        )
    return out


def old_encode(envelope: Any, key: str) -> tuple[bytes, str]:
    from tasks import envelope as env

    raw = orjson.dumps(envelope.model_dump(mode="json", by_alias=True, exclude_none=True))
    signature = env.sign(raw, key)
    compressed = gzip.compress(raw, compresslevel=6, mtime=0)
    return compressed, signature


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    from datetime import UTC, datetime

    from tasks import collector as col
    from tasks import envelope as env
    from tasks.archive import GzippedRaw

    started = time.monotonic()
    accounts = common.member_accounts(4, prefix="06")
    per_account = 100 if args.quick else 1000
    traffic = common.generated_traces(accounts, per_account, now=common.NOW, hours_back=2.0)
    collected = datetime.fromtimestamp(common.NOW, UTC)
    key = "bench-key"

    def collect_now() -> list[env.WireMessage]:
        out = []
        for account_id, traces in traffic.items():
            envelopes = col.envelopes_for(traces, source="sweep", account_id=account_id, region="us-east-1",
                                          collected_at=collected, redaction=None)  # fmt: skip
            out += [env.encode(e, key, "bucket") for e in envelopes]
        return out

    def collect_before() -> list[tuple[str, bytes, str]]:
        out = []
        for account_id, traces in traffic.items():
            for envelope in old_envelopes(traces, account_id, collected):
                compressed, signature = old_encode(envelope, key)
                out.append((envelope.envelope_id, compressed, signature))
        return out

    messages = collect_now()
    before = collect_before()
    assert [m.envelope_id for m in messages] == [b[0] for b in before], "envelope ids differ"
    assert [m.attributes["signature"] for m in messages] == [b[2] for b in before], "canonical bytes differ"
    gzip_messages = [m for m in messages if m.encoding == env.ENCODING_GZIP]

    def consume_now() -> list[bytes]:
        archived = []
        for message in gzip_messages:
            raw, compressed = env.body_to_wire(message.body)
            data = env.load_json(raw, omit_strings_over=4 * 1024 * 1024)
            env.verify(raw, message.attributes["signature"], [key])
            kept = GzippedRaw(compressed, len(raw)) if compressed and env.is_canonical_gzip(compressed) else None
            env.validate_envelope(data)
            archived.append(kept.compressed if kept else env.gzip_canonical(raw))
        return archived

    def consume_before() -> list[bytes]:
        import base64
        import zlib

        archived = []
        for message in gzip_messages:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = inflater.decompress(base64.b64decode(message.body, validate=True), env.MAX_DECOMPRESSED_BYTES + 1)
            data = orjson.loads(raw)
            env.verify(raw, message.attributes["signature"], [key])
            env.validate_envelope(data)
            archived.append(gzip.compress(raw, compresslevel=6, mtime=0))
        return archived

    assert consume_now() == consume_before(), "raw archive bytes differ"
    timings: dict[str, list[float]] = {
        name: [] for name in ("collect_now", "collect_before", "consume_now", "consume_before")
    }
    for _ in range(2 if args.quick else ROUNDS):
        for name, fn in (("collect_before", collect_before), ("collect_now", collect_now),
                         ("consume_before", consume_before), ("consume_now", consume_now)):  # fmt: skip
            tick = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - tick)
    best = {name: min(values) for name, values in timings.items()}
    traces = sum(len(t) for t in traffic.values())
    raw_mb = sum(len(env.body_to_raw(m.body)) for m in gzip_messages) / 1e6
    collect_ratio = best["collect_before"] / best["collect_now"]
    consume_ratio = best["consume_before"] / best["consume_now"]
    metrics = {
        "workload": {
            "traces": traces,
            "envelopes": len(messages),
            "gzip_envelopes": len(gzip_messages),
            "gzip_envelopes_raw_mb": round(raw_mb, 2),
        },
        "seconds_best": {k: round(v, 4) for k, v in best.items()},
        "collect_traces_per_s": {
            "now": round(traces / best["collect_now"]),
            "before": round(traces / best["collect_before"]),
        },
        "consume_mb_per_s": {
            "now": round(raw_mb / best["consume_now"], 1),
            "before": round(raw_mb / best["consume_before"], 1),
        },
        "ratios": {"collect_now_vs_before": round(collect_ratio, 3), "consume_now_vs_before": round(consume_ratio, 3)},
        "identical": {"envelope_ids": True, "canonical_bytes": True, "raw_archive_bytes": True},
        "targets": {"collect": common.target(collect_ratio, 1.0), "consume": common.target(consume_ratio, 1.3)},
    }
    common.finish("bench_envelope", args, metrics, started)


if __name__ == "__main__":
    main()
