"""The detached sandbox: start, stop, restart, two at once, crashed state, isolation (the demo: test_demo.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import boto3
import pytest

from blocks.config import load_config, sandbox_state_path
from sandbox import seed
from sandbox.stack import _pid_alive, down, read_state, up
from tasks.aws import MemberSessions
from tasks.organizations import client_factory, resolve


def port_open(url: str) -> bool:
    host, port = url.rsplit("//", 1)[1].split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def alive(pid: int) -> bool:
    """Running, not a zombie (an exited child the container's init may never reap)."""
    return _pid_alive(pid)


@pytest.mark.slow
def test_two_sandboxes_start_stop_restart_without_leftovers(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    state_a, state_b = up(first), up(second)
    try:
        assert state_a["aws_endpoint_url"] != state_b["aws_endpoint_url"]
        assert state_a["opensearch_url"] != state_b["opensearch_url"]
        for state in (state_a, state_b):
            assert port_open(state["aws_endpoint_url"]) and port_open(state["opensearch_url"])
        assert up(first)["pid"] == state_a["pid"]  # idempotent: the running one is reused
    finally:
        assert down(first) and down(second)
    for state in (state_a, state_b):
        time.sleep(0.2)
        assert not alive(state["pid"]) and not alive(state["opensearch_pid"])
        assert not port_open(state["aws_endpoint_url"]) and not port_open(state["opensearch_url"])
        xray = state["config"]["service_endpoints"]["xray"]
        assert not port_open(xray)
    assert read_state(first) is None and not down(first)

    # a crashed sandbox (SIGKILL) leaves a stale state file; the next start replaces it
    crashed = up(first)
    os.kill(crashed["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(crashed["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_state_path(first).exists()
    restarted = up(first)
    try:
        assert restarted["pid"] != crashed["pid"]
        assert port_open(restarted["aws_endpoint_url"])
    finally:
        down(first)
    time.sleep(0.5)
    assert not alive(crashed["opensearch_pid"])  # osmem follows its parent (--parent-pid)


def test_state_file_is_private_and_config_loads(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sandbox.stack import write_state

    path = write_state(stack, tmp_path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    config = load_config(path)
    assert config.roster.external_id.get_secret_value() == seed.EXTERNAL_ID
    assert config.roster.accounts[0].account_id == "012345678901"
    assert json.loads(path.read_text())["pid"] == os.getpid()


def test_member_roles_isolate_data_and_log_account_sees_nothing(stack, fresh_roster) -> None:  # type: ignore[no-untyped-def]
    sessions = MemberSessions(fresh_roster)
    now = time.time()
    a, b = fresh_roster.accounts[0].account_id, fresh_roster.accounts[1].account_id
    trace_id = f"1-{int(now) - 60:08x}-{'ab' * 12}"
    doc = json.dumps(
        {
            "name": "only-in-a",
            "id": "1" * 16,
            "trace_id": trace_id,
            "start_time": now - 60,
            "end_time": now - 59,
        }
    )
    sessions.client(a, "us-east-1", "xray").put_trace_segments(TraceSegmentDocuments=[doc])
    assert sessions.session(a, "us-east-1").client("sts").get_caller_identity()["Account"] == a

    def ids(client) -> set[str]:  # type: ignore[no-untyped-def]
        found = client.get_trace_summaries(StartTime=now - 600, EndTime=now, Sampling=False)["TraceSummaries"]
        return {s["Id"] for s in found}

    assert ids(sessions.client(a, "us-east-1", "xray")) == {trace_id}
    assert ids(sessions.client(b, "us-east-1", "xray")) == set()
    assert trace_id not in ids(boto3.client("xray", region_name="us-east-1"))


def test_organization_roles_queue_and_bucket_are_seeded(stack) -> None:  # type: ignore[no-untyped-def]
    org = boto3.client("organizations")
    names = {a["Id"]: a["Name"] for a in org.list_accounts()["Accounts"]}
    assert {m.account_id: m.name for m in seed.MEMBERS}.items() <= names.items()
    tags = {t["Key"]: t["Value"] for t in org.list_tags_for_resource(ResourceId="012345678901")["Tags"]}
    assert tags == {"environment": "dev", "team": "payments"}
    layout = seed.ORG_LAYOUT
    assert layout is not None
    prod_parent = org.list_parents(ChildId="345678901234")["Parents"][0]["Id"]
    assert prod_parent == layout.ous["prod"]
    # The sandbox's Organizations roster (workloads OU) resolves to exactly the static members.
    organizations_roster = stack.config.roster.model_copy(update={"source": "organizations", "accounts": []})
    resolved = resolve(
        stack.config.model_copy(update={"roster": organizations_roster}),
        boto3.client("s3"),
        client_factory(stack.config),
        force=True,
    )
    assert {(a.account_id, a.name, a.environment, tuple(a.regions)) for a in resolved.roster.accounts} == {
        (m.account_id, m.name, m.environment, tuple(m.regions)) for m in seed.MEMBERS
    }
    attrs = boto3.client("sqs").get_queue_attributes(QueueUrl=stack.config.queue.queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] in (5, "5")
    assert "aws:PrincipalOrgID" in attrs["Policy"]
    assert attrs["SqsManagedSseEnabled"] == "true"
    s3 = boto3.client("s3")
    encryption = s3.get_bucket_encryption(Bucket=stack.config.archive.bucket)
    assert encryption["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert s3.get_public_access_block(Bucket=stack.config.archive.bucket)["PublicAccessBlockConfiguration"][
        "BlockPublicAcls"
    ]
    iam_policy = seed.reader_trust_policy(seed.LOG_ACCOUNT_ID, seed.EXTERNAL_ID)
    assert iam_policy["Statement"][0]["Condition"] == {"StringEquals": {"sts:ExternalId": seed.EXTERNAL_ID}}


def test_tls_only_bucket_policy_is_enforced_by_the_sandbox(stack) -> None:  # type: ignore[no-untyped-def]
    """Why the sandbox bucket has no TLS-only policy: moto evaluates it, and the sandbox is HTTP."""
    session = boto3.Session(region_name="us-east-1")
    seed.seed_bucket(session, bucket="xraylake-tls-only-check", tls_only=True)
    with pytest.raises(Exception, match="Forbidden|AccessDenied|403"):
        session.client("s3").put_object(Bucket="xraylake-tls-only-check", Key="k", Body=b"x")
