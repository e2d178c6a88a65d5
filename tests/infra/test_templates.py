"""The CloudFormation templates in infra/: lint, security structure, and a real deployment on moto.

Three layers:

* cfn-lint (its Python API, informational checks included): any finding fails the test.
* Structural security assertions on the templates as CloudFormation reads them (loaded with
  `cfnlint.decode`, which understands the short tags !Sub/!Ref/!GetAtt/!If).
* Deployment over HTTP to the moto server's CloudFormation (the session `stack` fixture): the
  log-account stack in the log account, the member stack in a fresh member account, then one
  X-Ray segment written in the member account is read back through `tasks.aws.MemberSessions`
  assuming the role the stack created, with the ExternalId.

What moto cannot prove: moto 5.2.5 does not evaluate trust policies or ExternalIds (it assumes
roles that do not even exist), so "only the log account's collector role, with the ExternalId,
may assume the reader role" is verified structurally below, not by the deployment. moto's
CloudFormation also skips AWS::SQS::QueuePolicy and AWS::S3::BucketPolicy (unsupported types,
logged and ignored) and applies only BucketEncryption and Tags of an AWS::S3::Bucket (public
access block, versioning, ownership controls and lifecycle are ignored), and it shows NoEcho
parameters in DescribeStacks (it compares parameter values, not keys, with the NoEcho list): those
are likewise verified structurally only. See infra/README.md, "Testing on moto".
"""

from __future__ import annotations

import ast
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import ManualArgs, lint, lint_file
from cfnlint.decode import decode

from blocks import MemberAccount, Roster
from sandbox import seed
from sandbox.stack import SandboxStack
from tasks.aws import MemberSessions

INFRA = Path(__file__).resolve().parents[2] / "infra"
MEMBER_TEMPLATE = INFRA / "member-reader-role.yaml"
LOG_TEMPLATE = INFRA / "log-account.yaml"
ORGANIZATIONS_TEMPLATE = INFRA / "organizations-reader-role.yaml"
MONITORING_TEMPLATE = INFRA / "monitoring-reader-role.yaml"
TEMPLATES = [MEMBER_TEMPLATE, LOG_TEMPLATE, ORGANIZATIONS_TEMPLATE, MONITORING_TEMPLATE]

READER_ACTIONS = {
    "xray:GetTraceSummaries",
    "xray:BatchGetTraces",
    "xray:GetTraceSegmentDestination",
    "xray:GetIndexingRules",
    "xray:StartTraceRetrieval",
    "xray:ListRetrievedTraces",
    "logs:FilterLogEvents",
    "logs:StartQuery",
    "logs:GetQueryResults",
    "logs:DescribeLogGroups",
    "states:DescribeExecution",
}
# moto's CloudFormation skips these two resource types with a UserWarning (see the module docstring);
# any other unsupported type still shows up. ("." stands for ":", which the filter syntax reserves.)
pytestmark = pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS..(SQS..QueuePolicy|S3..BucketPolicy) but:UserWarning"
)
LINT_CONFIG = ManualArgs(include_checks=["I"], regions=["us-east-1", "eu-west-1", "ap-southeast-2"])


# ---------------------------------------------------------------- helpers


def load(path: Path) -> dict[str, Any]:
    template, errors = decode(str(path))
    assert not errors, [str(e) for e in errors]
    assert template is not None
    return template


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Policy statements, with the `!If [cond, statement, !Ref AWS::NoValue]` ones unwrapped."""
    found = []
    for statement in as_list(document["Statement"]):
        if "Fn::If" in statement:
            _, when_true, _ = statement["Fn::If"]
            found.append(when_true)
        else:
            found.append(statement)
    return found


def allowed_actions(document: dict[str, Any]) -> set[str]:
    return {
        action
        for statement in statements(document)
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
    }


def tls_only_deny(document: dict[str, Any], service: str) -> dict[str, Any]:
    for statement in statements(document):
        if (
            statement["Effect"] == "Deny"
            and statement["Principal"] == "*"
            and statement["Action"] == f"{service}:*"
            and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ):
            return statement
    raise AssertionError(f"no Deny {service}:* without aws:SecureTransport in {document}")


def policy_document(raw: Any) -> dict[str, Any]:
    """An IAM policy document as moto returns it: a dict, a JSON string, or (moto 5.2.5, inline
    policies created by CloudFormation) the Python repr of the dict, with AWS::NoValue list items
    left in as None."""
    if isinstance(raw, dict):
        document = raw
    else:
        try:
            document = json.loads(raw)
        except ValueError:
            document = ast.literal_eval(raw)
    document["Statement"] = [s for s in as_list(document["Statement"]) if s is not None]
    return document


def wait_for_stack(cloudformation: Any, name: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        if not described["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            return described
        time.sleep(0.2)


def deploy(session: boto3.Session, name: str, template: Path, parameters: dict[str, str]) -> dict[str, Any]:
    cloudformation = session.client("cloudformation")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=template.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    described = wait_for_stack(cloudformation, name)
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    return described


def outputs(described: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def member_session(account_id: str, region: str) -> boto3.Session:
    """Credentials inside a member account, the way an org admin (or a StackSet) gets them."""
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole",
        RoleSessionName="xraylake-infra-test",
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=region,
    )


# ---------------------------------------------------------------- cfn-lint


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_clean(template: Path) -> None:
    findings = lint_file(template, config=LINT_CONFIG)
    assert findings == [], "\n".join(f"{f.rule.id} {f.message} ({f.filename}:{f.linenumber})" for f in findings)


def test_cfn_lint_harness_reports_findings() -> None:
    """Guards the test above: the same lint call does report a broken template."""
    broken = LOG_TEMPLATE.read_text().replace("ReceiveMessageWaitTimeSeconds: 20", "ReceiveMessageWaitTimeSeconds: 21")
    findings = lint(broken, config=LINT_CONFIG)
    assert any("ReceiveMessageWaitTimeSeconds" in str(f.path) for f in findings), findings


# ---------------------------------------------------------------- member reader role (structure)


def test_reader_role_trusts_only_the_collector_role_with_external_id() -> None:
    template = load(MEMBER_TEMPLATE)
    (role,) = resources_of_type(template, "AWS::IAM::Role").values()
    trust = role["Properties"]["AssumeRolePolicyDocument"]
    (statement,) = as_list(trust["Statement"])

    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${LogAccountId}:role/${CollectorRoleName}"}
    }
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}

    parameters = template["Parameters"]
    assert parameters["ExternalId"]["NoEcho"] is True
    assert parameters["ExternalId"]["MinLength"] >= 2
    assert "Default" not in parameters["ExternalId"]
    assert parameters["LogAccountId"]["AllowedPattern"] == r"^\d{12}$"
    assert "Default" not in parameters["LogAccountId"]
    assert parameters["CollectorRoleName"]["Default"] == seed.COLLECTOR_ROLE
    assert parameters["ReaderRoleName"]["Default"] == Roster().role_name
    assert role["Properties"]["RoleName"] == {"Ref": "ReaderRoleName"}
    assert role["Properties"]["MaxSessionDuration"] == {"Ref": "MaxSessionDuration"}


def test_reader_role_allows_exactly_the_read_only_actions() -> None:
    template = load(MEMBER_TEMPLATE)
    (role,) = resources_of_type(template, "AWS::IAM::Role").values()
    policies = role["Properties"]["Policies"]
    assert "ManagedPolicyArns" not in role["Properties"]
    assert not resources_of_type(template, "AWS::IAM::Policy")
    assert not resources_of_type(template, "AWS::IAM::ManagedPolicy")

    documents = [p["PolicyDocument"] for p in policies]
    assert all(s["Effect"] == "Allow" for d in documents for s in statements(d))
    actions = set().union(*(allowed_actions(d) for d in documents))
    assert actions == READER_ACTIONS
    assert not any("*" in action or "?" in action for action in actions)
    # The sandbox seeds member roles with a subset of what the template grants.
    assert set(seed.READER_ACTIONS) <= actions

    by_action = {a: s for d in documents for s in statements(d) for a in as_list(s["Action"])}
    # Step Functions: this account's executions only.
    assert by_action["states:DescribeExecution"]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:states:*:${AWS::AccountId}:execution:${StateMachineNamePattern}:*"
    }
    # X-Ray read APIs have no resource-level permissions.
    assert by_action["xray:BatchGetTraces"]["Resource"] == "*"
    # Transaction Search spans: reading log events and starting queries on aws/spans only.
    spans_group = "arn:${AWS::Partition}:logs:*:${AWS::AccountId}:log-group:aws/spans"
    for action in ("logs:FilterLogEvents", "logs:StartQuery"):
        assert by_action[action]["Resource"] == [{"Fn::Sub": spans_group}, {"Fn::Sub": spans_group + ":*"}]
    assert by_action["logs:GetQueryResults"]["Resource"] == by_action["logs:DescribeLogGroups"]["Resource"] == "*"
    assert "logs:StopQuery" not in actions and not any(a.startswith("logs:Put") for a in actions)


def test_reader_role_outputs_its_arn() -> None:
    template = load(MEMBER_TEMPLATE)
    assert template["Outputs"]["ReaderRoleArn"]["Value"] == {"Fn::GetAtt": ["ReaderRole", "Arn"]}
    assert "Export" not in template["Outputs"]["ReaderRoleArn"]  # StackSet instances must not collide


# ---------------------------------------------------------------- organizations / monitoring readers (structure)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (ORGANIZATIONS_TEMPLATE, set(seed.ORGANIZATIONS_READ_ACTIONS)),
        (
            MONITORING_TEMPLATE,
            {
                "xray:GetTraceSummaries",
                "xray:BatchGetTraces",
                "xray:GetTraceSegmentDestination",
                "oam:ListSinks",
                "oam:ListAttachedLinks",
            },
        ),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else "",
)
def test_organizations_and_monitoring_roles_allow_only_read_actions_to_the_collector(
    path: Path, expected: set[str]
) -> None:
    template = load(path)
    (role,) = resources_of_type(template, "AWS::IAM::Role").values()
    (statement,) = as_list(role["Properties"]["AssumeRolePolicyDocument"]["Statement"])
    assert statement["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${LogAccountId}:role/${CollectorRoleName}"}
    }
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    assert template["Parameters"]["ExternalId"]["NoEcho"] is True
    assert "ManagedPolicyArns" not in role["Properties"]
    documents = [p["PolicyDocument"] for p in role["Properties"]["Policies"]]
    assert all(s["Effect"] == "Allow" for d in documents for s in statements(d))
    actions = set().union(*(allowed_actions(d) for d in documents))
    assert actions == expected
    assert all(a.split(":")[1].startswith(("List", "Describe", "Get", "BatchGet")) for a in actions)


# ---------------------------------------------------------------- log account (structure)


def test_queue_policy_admits_only_the_organization_and_denies_plain_http() -> None:
    template = load(LOG_TEMPLATE)
    policies = resources_of_type(template, "AWS::SQS::QueuePolicy")
    by_queue = {p["Properties"]["Queues"][0]["Ref"]: p["Properties"]["PolicyDocument"] for p in policies.values()}
    assert set(by_queue) == {"TraceQueue", "DeadLetterQueue"}

    queue_policy = by_queue["TraceQueue"]
    allows = [s for s in statements(queue_policy) if s["Effect"] == "Allow"]
    assert allows, "the trace queue must admit the organization's senders"
    for statement in allows:
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}
    assert all(s["Effect"] == "Deny" for s in statements(by_queue["DeadLetterQueue"]))
    for document in by_queue.values():
        tls_only_deny(document, "sqs")
    assert template["Parameters"]["OrganizationId"]["AllowedPattern"].startswith("^o-")


def test_queues_encrypted_redriven_and_long_polled() -> None:
    template = load(LOG_TEMPLATE)
    queues = resources_of_type(template, "AWS::SQS::Queue")
    assert set(queues) == {"TraceQueue", "DeadLetterQueue"}
    for queue in queues.values():
        properties = queue["Properties"]
        assert properties["SqsManagedSseEnabled"] == {"Fn::If": ["UseKms", {"Ref": "AWS::NoValue"}, True]}
        assert properties["KmsMasterKeyId"]["Fn::If"][0] == "UseKms"

    main = queues["TraceQueue"]["Properties"]
    assert main["ReceiveMessageWaitTimeSeconds"] == 20
    assert main["VisibilityTimeout"] == {"Ref": "VisibilityTimeoutSeconds"}
    assert main["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert template["Parameters"]["MaxReceiveCount"]["Default"] == seed.MAX_RECEIVE_COUNT == 5
    assert queues["DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_bucket_private_encrypted_tls_only_with_payload_expiry() -> None:
    template = load(LOG_TEMPLATE)
    (bucket,) = resources_of_type(template, "AWS::S3::Bucket").values()
    properties = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"

    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    (sse,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == {"Fn::If": ["UseKms", "aws:kms", "AES256"]}

    (bucket_policy,) = resources_of_type(template, "AWS::S3::BucketPolicy").values()
    assert bucket_policy["Properties"]["Bucket"] == {"Ref": "ArchiveBucket"}
    deny = tls_only_deny(bucket_policy["Properties"]["PolicyDocument"], "s3")
    assert deny["Resource"] == [
        {"Fn::GetAtt": ["ArchiveBucket", "Arn"]},
        {"Fn::Sub": "${ArchiveBucket.Arn}/*"},
    ]

    rules = [r["Fn::If"][1] if "Fn::If" in r else r for r in properties["LifecycleConfiguration"]["Rules"]]
    by_prefix = {r.get("Prefix"): r for r in rules}
    payloads = by_prefix["payloads/"]
    assert payloads["Status"] == "Enabled"
    assert payloads["ExpirationInDays"] == {"Ref": "PayloadExpirationDays"}
    assert by_prefix["raw/"]["Transitions"][0]["StorageClass"] == {"Ref": "RawTransitionStorageClass"}
    assert "ExpirationInDays" not in by_prefix["raw/"], "raw envelopes are the replay store: never expired"


def test_collector_role_least_privilege() -> None:
    template = load(LOG_TEMPLATE)
    role = template["Resources"]["CollectorRole"]["Properties"]
    assert role["RoleName"] == {"Ref": "CollectorRoleName"}
    assert template["Parameters"]["CollectorRoleName"]["Default"] == seed.COLLECTOR_ROLE
    (policy,) = role["Policies"]
    document = policy["PolicyDocument"]
    assert all(s["Effect"] == "Allow" for s in statements(document))
    for action in allowed_actions(document):
        assert "*" not in action, action

    by_sid = {s["Sid"]: s for s in statements(document)}
    assume = by_sid["AssumeMemberReaderRoles"]
    assert assume["Action"] == "sts:AssumeRole"
    assert assume["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${ReaderRoleName}"}
    assert assume["Condition"] == {"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}}

    assert set(by_sid["UseTraceQueues"]["Action"]) == {
        "sqs:SendMessage",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    }
    deletes = [s for s in statements(document) if "s3:DeleteObject" in as_list(s["Action"])]
    assert [d["Resource"] for d in deletes] == [
        [
            {"Fn::Sub": "${ArchiveBucket.Arn}/parquet/*"},
            {"Fn::Sub": "${ArchiveBucket.Arn}/state/*"},
            {"Fn::Sub": "${ArchiveBucket.Arn}/iceberg/*"},
        ]
    ]
    lake = by_sid["LakeCatalog"]
    assert not any(a.startswith("glue:Delete") for a in lake["Action"])  # tables are never dropped
    assert all("${LakeDatabaseName}" in r["Fn::Sub"] or r["Fn::Sub"].endswith(":catalog") for r in lake["Resource"])
    assert set(template["Outputs"]) >= {"QueueUrl", "DlqUrl", "BucketName", "CollectorRoleArn"}


def test_lake_database_and_athena_workgroup() -> None:
    template = load(LOG_TEMPLATE)
    resources = template["Resources"]
    database = resources["LakeDatabase"]
    assert database["Type"] == "AWS::Glue::Database"
    assert database["Properties"]["DatabaseInput"]["Name"] == {"Ref": "LakeDatabaseName"}
    workgroup = resources["AthenaWorkgroup"]["Properties"]
    assert workgroup["WorkGroupConfiguration"]["EnforceWorkGroupConfiguration"] is True
    assert workgroup["WorkGroupConfiguration"]["EngineVersion"] == {"SelectedEngineVersion": "Athena engine version 3"}
    assert workgroup["WorkGroupConfiguration"]["ResultConfiguration"]["OutputLocation"] == {
        "Fn::Sub": "s3://${ArchiveBucket}/athena-results/"
    }
    assert set(template["Outputs"]) >= {"LakeDatabaseName", "AthenaWorkgroupName"}


# ---------------------------------------------------------------- deployment on moto


def _fresh_member_account_id() -> str:
    return f"0777{random.randrange(10**8):08d}"


@pytest.mark.parametrize("encryption", ["aws-managed", "kms"])
def test_log_account_stack_deploys(stack: SandboxStack, encryption: str) -> None:
    session = boto3.Session(region_name=stack.config.region)
    org_id = session.client("organizations").describe_organization()["Organization"]["Id"]
    suffix = uuid.uuid4().hex[:8]
    described = deploy(
        session,
        f"xraylake-log-{suffix}",
        LOG_TEMPLATE,
        {
            "OrganizationId": org_id,
            "EncryptionMode": encryption,
            "QueueName": f"xraylake-traces-{suffix}",
            "BucketName": f"xraylake-archive-{suffix}",
            "CollectorRoleName": f"xraylake-collector-{suffix}",
            "MaxReceiveCount": "3",
            "RawTransitionDays": "30",
        },
    )
    out = outputs(described)
    log_account = stack.config.log_account_id
    # moto's CloudFormation does not model AWS::Glue::Database or AWS::Athena::WorkGroup (it skips
    # them and the outputs that name them): test_lake_database_and_athena_workgroup checks those
    assert set(out) >= {"QueueUrl", "DlqUrl", "BucketName", "CollectorRoleArn"}
    assert out["CollectorRoleArn"] == f"arn:aws:iam::{log_account}:role/xraylake-collector-{suffix}"

    sqs = session.client("sqs")
    dlq = sqs.get_queue_attributes(QueueUrl=out["DlqUrl"], AttributeNames=["All"])["Attributes"]
    queue = sqs.get_queue_attributes(QueueUrl=out["QueueUrl"], AttributeNames=["All"])["Attributes"]
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq["QueueArn"],
        "maxReceiveCount": 3,
    }
    assert queue["ReceiveMessageWaitTimeSeconds"] == "20"
    assert dlq["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    if encryption == "kms":
        assert queue["KmsMasterKeyId"] == dlq["KmsMasterKeyId"] == out["KmsKeyArn"]
    else:
        assert queue["SqsManagedSseEnabled"] == dlq["SqsManagedSseEnabled"] == "true"
        assert "KmsKeyArn" not in out
    sqs.send_message(QueueUrl=out["QueueUrl"], MessageBody="ping")
    received = sqs.receive_message(QueueUrl=out["QueueUrl"], WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in received] == ["ping"]
    sqs.delete_message(QueueUrl=out["QueueUrl"], ReceiptHandle=received[0]["ReceiptHandle"])

    s3 = session.client("s3")
    s3.head_bucket(Bucket=out["BucketName"])
    (rule,) = s3.get_bucket_encryption(Bucket=out["BucketName"])["ServerSideEncryptionConfiguration"]["Rules"]
    default = rule["ApplyServerSideEncryptionByDefault"]
    if encryption == "kms":
        assert default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": out["KmsKeyArn"]}
    else:
        assert default == {"SSEAlgorithm": "AES256"}

    iam = session.client("iam")
    collector = f"xraylake-collector-{suffix}"
    trust = iam.get_role(RoleName=collector)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    document = policy_document(
        iam.get_role_policy(RoleName=collector, PolicyName="xraylake-collector")["PolicyDocument"]
    )
    sids = {s["Sid"] for s in document["Statement"]}
    assert ("UseEncryptionKey" in sids) == (encryption == "kms")
    assert "WriteOpenSearch" not in sids


def test_member_role_stack_deploys_and_reads_traces(stack: SandboxStack) -> None:
    region = stack.config.region
    log_account = stack.config.log_account_id
    member_id = _fresh_member_account_id()
    external_id = f"xraylake-{uuid.uuid4().hex}"
    collector_role = f"xraylake-collector-{uuid.uuid4().hex[:8]}"
    member = member_session(member_id, region)
    assert member.client("sts").get_caller_identity()["Account"] == member_id

    described = deploy(
        member,
        "xraylake-member-reader",
        MEMBER_TEMPLATE,
        {"LogAccountId": log_account, "CollectorRoleName": collector_role, "ExternalId": external_id},
    )
    out = outputs(described)
    assert out["ReaderRoleArn"] == f"arn:aws:iam::{member_id}:role/xraylake-reader"

    # The role exists in the member account (not the log account), with the trust we wrote.
    role = member.client("iam").get_role(RoleName=out["ReaderRoleName"])["Role"]
    assert role["Arn"] == out["ReaderRoleArn"]
    assert role["MaxSessionDuration"] == 3600
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Sid": "LogAccountCollectorOnly",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{log_account}:role/{collector_role}"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
        }
    ]
    read = policy_document(
        member.client("iam").get_role_policy(RoleName=out["ReaderRoleName"], PolicyName="xraylake-read")[
            "PolicyDocument"
        ]
    )
    assert {a for s in read["Statement"] for a in as_list(s["Action"])} == READER_ACTIONS

    # One segment written in the member account ...
    now = time.time()
    trace_id = f"1-{int(now):08x}-{uuid.uuid4().hex[:24]}"
    segment = {
        "trace_id": trace_id,
        "id": uuid.uuid4().hex[:16],
        "name": "infra-test",
        "start_time": now - 1.0,
        "end_time": now - 0.5,
    }
    result = member.client("xray").put_trace_segments(TraceSegmentDocuments=[json.dumps(segment)])
    assert result["UnprocessedTraceSegments"] == []

    # ... read back by the collector code path, assuming the stack's role with the ExternalId.
    roster = Roster(
        accounts=[MemberAccount(account_id=member_id, name="infra-test", regions=[region])],
        role_name=out["ReaderRoleName"],
        external_id=external_id,  # type: ignore[arg-type]
    )
    sessions = MemberSessions(roster)
    assumed = sessions.session(member_id, region).client("sts").get_caller_identity()
    assert assumed["Account"] == member_id
    assert f":assumed-role/{out['ReaderRoleName']}/" in assumed["Arn"]

    xray = sessions.client(member_id, region, "xray")
    summaries = xray.get_trace_summaries(StartTime=now - 60, EndTime=now + 60, Sampling=False)
    assert [s["Id"] for s in summaries["TraceSummaries"]] == [trace_id]
    traces = xray.batch_get_traces(TraceIds=[trace_id])
    assert traces["UnprocessedTraceIds"] == []
    (trace,) = traces["Traces"]
    assert trace["Id"] == trace_id
    assert json.loads(trace["Segments"][0]["Document"])["id"] == segment["id"]
