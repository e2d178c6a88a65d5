"""Replay's archive reader: a partition streams through in byte-bounded chunks of parsed envelopes."""

from __future__ import annotations

import time

import boto3

from blocks.config import Config
from tasks import archive, replay
from tasks import envelope as env


def test_a_partition_is_read_in_chunks_of_about_chunk_bytes(fresh_config: Config) -> None:
    s3 = boto3.client("s3")
    account = fresh_config.roster.accounts[0].account_id
    start = int(time.time()) - 3600
    written = {}
    for i in range(7):
        trace_id = f"1-{start:08x}-{i:024x}"
        document = (
            f'{{"id":"{i:016x}","name":"svc","trace_id":"{trace_id}","start_time":{start},"end_time":{start + 1}}}'
        )
        trace = {"Id": trace_id, "Duration": 1.0, "Segments": [{"Id": f"{i:016x}", "Document": document}]}
        envelope = env.build_envelope(source="sweep", account_id=account, region="us-east-1", traces=[trace])
        raw = envelope.to_json()
        archive.put_raw(s3, fresh_config.archive, envelope, raw)
        written[envelope.envelope_id] = len(raw)
    keys = sorted(o["Key"] for o in archive.list_keys(s3, fresh_config.archive.bucket, "raw/"))
    assert len(keys) == 7

    size = max(written.values())
    chunks = list(replay.iter_chunks(s3, fresh_config.archive, keys, chunk_bytes=2 * size))

    assert [len(c) for c in chunks] == [2, 2, 2, 1]  # a chunk closes once it reaches chunk_bytes
    seen = [envelope.envelope_id for chunk in chunks for envelope, _ in chunk]
    assert sorted(seen) == sorted(written)
    assert all(len(raw) == written[envelope.envelope_id] for chunk in chunks for envelope, raw in chunk)
    assert list(replay.iter_chunks(s3, fresh_config.archive, [])) == []
