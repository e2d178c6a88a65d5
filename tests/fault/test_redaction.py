"""Secrets in Step Functions input/output (a real moto execution, collected with DescribeExecution)
and in URL query strings (segment http.request.url) never reach the index or Parquet."""

from __future__ import annotations

import gzip
import io
import time

import boto3
import orjson
import pyarrow.parquet as pq
import pytest

from blocks.config import Config
from flows.collect import collect
from flows.consume import run_consumer
from sandbox.traffic import trace_id_for
from tasks import archive
from tasks.aws import MemberSessions
from tasks.index import client_for
from tests.fault import helpers as h

pytestmark = pytest.mark.usefixtures("prefect_harness")

PASSWORD = "hunter2-sfn-password-0f3a"
TOKEN = "tok-sfn-token-91be"
URL_TOKEN = "url-token-77c1"
API_KEY = "url-api-key-5d2e"


def _parquet_and_index_text(config: Config) -> tuple[str, str]:
    s3 = boto3.client("s3")
    parts = []
    for obj in archive.list_keys(s3, config.archive.bucket, "parquet/"):
        body = s3.get_object(Bucket=config.archive.bucket, Key=obj["Key"])["Body"].read()
        parts.append(orjson.dumps(pq.read_table(io.BytesIO(body)).to_pylist(), default=str).decode())
    client = client_for(config.opensearch)
    client.indices.refresh(index="*")
    hits = client.search(index="*", body={"size": 10_000, "query": {"match_all": {}}})["hits"]["hits"]
    return "".join(parts), orjson.dumps(hits).decode()


def test_step_functions_io_and_url_query_secrets_are_redacted(fresh_config: Config, config_file: str) -> None:
    account = fresh_config.roster.accounts[0].account_id
    states = MemberSessions(fresh_config.roster).client(account, h.REGION, "stepfunctions")
    machine = states.create_state_machine(
        name="login-flow",
        definition=orjson.dumps(
            {
                "StartAt": "Echo",
                "States": {
                    "Echo": {
                        "Type": "Pass",
                        "Result": {"token": TOKEN, "ok": True},
                        "ResultPath": "$.session",
                        "End": True,
                    }
                },
            }
        ).decode(),
        roleArn=f"arn:aws:iam::{account}:role/sfn",
    )["stateMachineArn"]
    execution = states.start_execution(
        stateMachineArn=machine, name="run-1", input=orjson.dumps({"user": "ana", "password": PASSWORD}).decode()
    )["executionArn"]
    h.wait_for(lambda: states.describe_execution(executionArn=execution)["status"] != "RUNNING", 30, "the execution")
    described = states.describe_execution(executionArn=execution)
    assert PASSWORD in described["input"] and TOKEN in described["output"]  # the secrets are really there

    start = described["startDate"].timestamp()
    trace_id = trace_id_for(start, "a" * 24)
    root = {
        "name": "login-flow",
        "id": "1" * 16,
        "trace_id": trace_id,
        "start_time": start,
        "end_time": start + 0.5,
        "origin": "AWS::StepFunctions::StateMachine",
        "resource_arn": machine,
        "aws": {"execution_arn": execution},
        "http": {
            "request": {
                "method": "GET",
                "url": f"https://api.example.com/login?token={URL_TOKEN}&api_key={API_KEY}&page=2",
            }
        },
    }
    h.put_documents(fresh_config, account, [root])
    time.sleep(1.0)
    state = collect(execution_arn=execution, config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    stats = run_consumer(fresh_config, wait_seconds=1, use_tasks=False)
    assert stats.traces == 1 and stats.documents_failed == 0, stats.as_dict()

    parquet, index = _parquet_and_index_text(fresh_config)
    assert trace_id in parquet and trace_id in index
    assert "api.example.com/login?token=***&api_key=***" in index  # the URL stays readable, values masked
    for secret in (PASSWORD, TOKEN, URL_TOKEN, API_KEY):
        assert secret not in index, f"{secret} in the index"
    for secret in (PASSWORD, TOKEN, URL_TOKEN, API_KEY):
        assert secret not in parquet, f"{secret} in Parquet"
    # collectors redact at source (the default): the raw archive holds no secret either
    s3 = boto3.client("s3")
    bucket = fresh_config.archive.bucket
    raw = b"".join(
        gzip.decompress(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
        for o in s3.list_objects_v2(Bucket=bucket, Prefix="raw/").get("Contents", [])
    ).decode()
    assert trace_id in raw
    for secret in (PASSWORD, TOKEN, URL_TOKEN, API_KEY):
        assert secret not in raw, f"{secret} in the raw archive"
