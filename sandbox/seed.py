"""Seed the moto server with what a real deployment has: an organization, member accounts with
the reader role, and the log account's queue, dead-letter queue and archive bucket.

Runs inside the sandbox process (it patches moto's account-id generator so that member
accounts get the fixed ids below, one of them starting with 0).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import boto3

from blocks import ArchiveStore, MemberAccount, OrganizationsSource, Roster, TraceQueue
from sandbox.oam import XRAY_TRACE, OamRegistry

LOG_ACCOUNT_ID = "123456789012"  # moto's account for the default "testing" keys
EXTERNAL_ID = "xraylake-sandbox-external-id"
READER_ROLE = "xraylake-reader"
COLLECTOR_ROLE = "xraylake-collector"
QUEUE_NAME = "xraylake-traces"
DLQ_NAME = "xraylake-traces-dlq"
BUCKET = "xraylake-archive-123456789012"
MAX_RECEIVE_COUNT = 5

MEMBERS = [
    MemberAccount(account_id="012345678901", name="dev", environment="dev", regions=["us-east-1"]),
    MemberAccount(account_id="234567890123", name="qa", environment="qa", regions=["us-east-1"]),
    MemberAccount(account_id="345678901234", name="prod", environment="prod", regions=["us-east-1", "eu-west-1"]),
]

# (account, region) pairs in CloudWatch Transaction Search mode when the sandbox starts with
# `transaction_search=True` (the demo): their spans go to aws/spans, X-Ray indexes ~1 %.
TRANSACTION_SEARCH_REGIONS = [("345678901234", "eu-west-1")]

# OUs (Root → workloads → nonprod | prod; Root → platform) and tags an Organizations roster reads.
WORKLOADS_OU = "workloads"
MEMBER_OUS = {"dev": "nonprod", "qa": "nonprod", "prod": "prod"}
MEMBER_TAGS = {"dev": {"team": "payments"}, "qa": {"team": "payments"}, "prod": {"team": "payments"}}
ORGANIZATIONS_READER_ROLE = "xraylake-organizations-reader"
ORGANIZATIONS_READ_ACTIONS = [
    "organizations:ListRoots",
    "organizations:ListAccounts",
    "organizations:ListAccountsForParent",
    "organizations:ListOrganizationalUnitsForParent",
    "organizations:DescribeOrganizationalUnit",
    "organizations:ListTagsForResource",
]
# The monitoring account of CloudWatch cross-account observability (sandbox/oam.py), in OU platform.
MONITORING_ACCOUNT_ID = "456789012345"
MONITORING_ROLE = "xraylake-monitoring-reader"


@dataclass(frozen=True)
class OrgLayout:
    """What `seed_organization` created: ids a roster configuration names."""

    org_id: str
    root_id: str
    ous: dict[str, str]  # name → OU id


READER_ACTIONS = [
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
]


@contextlib.contextmanager
def _fixed_account_ids(ids: list[str]) -> Iterator[None]:
    """moto draws member account ids at random; hand it ours, in order."""
    import moto.organizations.models as org_models

    pending = iter(ids)
    original = org_models.utils.make_random_account_id
    org_models.utils.make_random_account_id = lambda: next(pending)  # type: ignore[assignment]
    try:
        yield
    finally:
        org_models.utils.make_random_account_id = original  # type: ignore[assignment]


def reader_trust_policy(log_account_id: str, external_id: str) -> dict[str, object]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{log_account_id}:role/{COLLECTOR_ROLE}"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }


def seed_organization(session: boto3.Session, members: list[MemberAccount] = MEMBERS) -> OrgLayout:
    """The Organization: members under workloads/{nonprod,prod} with environment and team tags, the
    monitoring account under platform."""
    org = session.client("organizations")
    org_id: str = org.create_organization(FeatureSet="ALL")["Organization"]["Id"]
    root_id: str = org.list_roots()["Roots"][0]["Id"]
    ous: dict[str, str] = {}
    for name, parent in (("workloads", root_id), ("platform", root_id)):
        ous[name] = org.create_organizational_unit(ParentId=parent, Name=name)["OrganizationalUnit"]["Id"]
    for name in ("nonprod", "prod"):
        ous[name] = org.create_organizational_unit(ParentId=ous["workloads"], Name=name)["OrganizationalUnit"]["Id"]
    with _fixed_account_ids([*(m.account_id for m in members), MONITORING_ACCOUNT_ID]):
        for member in members:
            tags = {"environment": member.environment, **MEMBER_TAGS.get(member.name, {})}
            org.create_account(
                Email=f"{member.name}@example.com",
                AccountName=member.name,
                Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
            )
            ou = ous[MEMBER_OUS.get(member.name, "nonprod")]
            org.move_account(AccountId=member.account_id, SourceParentId=root_id, DestinationParentId=ou)
        org.create_account(Email="observability@example.com", AccountName="observability")
        org.move_account(AccountId=MONITORING_ACCOUNT_ID, SourceParentId=root_id, DestinationParentId=ous["platform"])
    return OrgLayout(org_id, root_id, ous)


def seed_organizations_reader(session: boto3.Session) -> str:
    """The read-only Organizations role in the management account (here: the log account)."""
    iam = session.client("iam")
    iam.create_role(
        RoleName=ORGANIZATIONS_READER_ROLE,
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{LOG_ACCOUNT_ID}:role/{COLLECTOR_ROLE}"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    iam.put_role_policy(
        RoleName=ORGANIZATIONS_READER_ROLE,
        PolicyName="xraylake-organizations-read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ORGANIZATIONS_READ_ACTIONS, "Resource": "*"}],
            }
        ),
    )
    return f"arn:aws:iam::{LOG_ACCOUNT_ID}:role/{ORGANIZATIONS_READER_ROLE}"


def seed_member_role(account_id: str, log_account_id: str, external_id: str) -> None:
    """The read-only role in one member account (moto assumes it without checking the trust)."""
    member = (
        boto3.Session()
        .client("sts")
        .assume_role(
            RoleArn=f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole",
            RoleSessionName="xraylake-seed",
        )["Credentials"]
    )
    iam = boto3.Session(
        aws_access_key_id=member["AccessKeyId"],
        aws_secret_access_key=member["SecretAccessKey"],
        aws_session_token=member["SessionToken"],
    ).client("iam")
    iam.create_role(
        RoleName=READER_ROLE,
        AssumeRolePolicyDocument=json.dumps(reader_trust_policy(log_account_id, external_id)),
        Tags=[{"Key": "app", "Value": "xraylake"}],
    )
    iam.put_role_policy(
        RoleName=READER_ROLE,
        PolicyName="xraylake-read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": READER_ACTIONS, "Resource": "*"}],
            }
        ),
    )


def seed_queue(session: boto3.Session, org_id: str, name: str = QUEUE_NAME) -> TraceQueue:
    sqs = session.client("sqs")
    dlq_url = sqs.create_queue(
        QueueName=f"{name}-dlq",
        Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600), "SqsManagedSseEnabled": "true"},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_arn = dlq_arn.removesuffix("-dlq")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OrgMembersSend",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": org_id}},
            }
        ],
    }
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": "120",
            "MessageRetentionPeriod": str(4 * 24 * 3600),
            "ReceiveMessageWaitTimeSeconds": "20",
            "SqsManagedSseEnabled": "true",
            "Policy": json.dumps(policy),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}),
        },
    )["QueueUrl"]
    return TraceQueue(queue_url=queue_url, dlq_url=dlq_url, region=session.region_name or "us-east-1")


def seed_bucket(session: boto3.Session, bucket: str = BUCKET, tls_only: bool = False) -> ArchiveStore:
    """The archive bucket: SSE, public access blocked, lifecycle for claim-check payloads.

    `tls_only` adds the deny-non-TLS policy a real deployment has (infra/log-account.yaml). The
    sandbox speaks plain HTTP and moto evaluates that Deny (every call gets 403), so it is off here.
    """
    s3 = session.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    if tls_only:
        s3.put_bucket_policy(
            Bucket=bucket,
            Policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "DenyInsecureTransport",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                }
            ),
        )
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "expire-claim-check-payloads",
                    "Status": "Enabled",
                    "Filter": {"Prefix": "payloads/"},
                    "Expiration": {"Days": 14},
                }
            ]
        },
    )
    return ArchiveStore(bucket=bucket, region=session.region_name or "us-east-1")


def seed_observability(linked: tuple[str, ...] = ("dev", "qa")) -> OamRegistry:
    """CloudWatch cross-account observability: a sink in the monitoring account in every member
    region, and links sharing X-Ray traces from `linked` members (prod stays unlinked: it is
    collected through its own role)."""
    registry = OamRegistry()
    regions = sorted({r for m in MEMBERS for r in m.regions})
    for region in regions:
        sink = registry.create_sink(MONITORING_ACCOUNT_ID, region, "xraylake-sandbox")
        for member in MEMBERS:
            if member.name in linked and region in member.regions:
                registry.create_link(member.account_id, region, sink, [XRAY_TRACE, "AWS::Logs::LogGroup"], member.name)
    return registry


ORG_LAYOUT: OrgLayout | None = None  # set by seed_all in the sandbox process


def organizations_source(layout: OrgLayout, role_arn: str, **overrides: object) -> OrganizationsSource:
    """The sandbox's Organizations roster: the workloads OU, environment from the tag, two regions for prod."""
    values: dict[str, object] = {
        "role_arn": role_arn,
        "parents": [layout.ous["workloads"]],
        "regions": ["us-east-1"],
        "regions_by_ou": {"prod": ["us-east-1", "eu-west-1"]},
        "cache_ttl_seconds": 300,
    }
    return OrganizationsSource.model_validate(values | overrides)


def seed_all(region: str = "us-east-1") -> tuple[Roster, TraceQueue, ArchiveStore]:
    global ORG_LAYOUT
    session = boto3.Session(region_name=region)
    layout = ORG_LAYOUT = seed_organization(session)
    role_arn = seed_organizations_reader(session)
    for member in MEMBERS:
        seed_member_role(member.account_id, LOG_ACCOUNT_ID, EXTERNAL_ID)
    roster = Roster(
        accounts=list(MEMBERS),
        role_name=READER_ROLE,
        external_id=EXTERNAL_ID,  # type: ignore[arg-type]
        organizations=organizations_source(layout, role_arn),
    )
    return roster, seed_queue(session, layout.org_id), seed_bucket(session)
