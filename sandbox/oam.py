"""CloudWatch Observability Access Manager (OAM) for the sandbox: sinks, links, and the monitoring
account's view of linked accounts' X-Ray traces.

moto 5.2.5 has no OAM API (`ListSinks` answers 500), so the strict X-Ray front serves it: the OAM
operations xraylake and the seeding use (`CreateSink`, `CreateLink`, `DeleteLink`, `ListSinks`,
`ListAttachedLinks`, `ListLinks`, rest-json POSTs like the real service, reached through
`AWS_ENDPOINT_URL_OAM`), and, for a caller that owns a sink in the region, X-Ray reads that also
cover every source account linked with `AWS::XRay::Trace`, the way the service reports copies:

* GetTraceSummaries: one summary per trace id; a request chain that crossed accounts (one trace
  per account, the same id) is one summary whose `ServiceIds` lists the services of every account,
  each with its `AccountId` (the attribution the API documents; `aws.account_id` in segment
  documents is optional and not added here);
* BatchGetTraces: one trace per id holding the segments of every linked account that recorded it.

Only the account that owns a sink sees copies; each source account still sees only its own traces.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

XRAY_TRACE = "AWS::XRay::Trace"
PATHS = frozenset(
    {"/CreateSink", "/CreateLink", "/DeleteLink", "/ListSinks", "/ListAttachedLinks", "/ListLinks", "/GetSink"}
)


@dataclass
class _Link:
    arn: str
    source: str
    region: str
    sink_arn: str
    resource_types: list[str]
    label: str


@dataclass
class OamRegistry:
    """Sinks per (monitoring account, region) and the links attached to them (thread-safe)."""

    sinks: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # → (arn, name)
    links: dict[str, _Link] = field(default_factory=dict)  # link arn → link
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def create_sink(self, account: str, region: str, name: str) -> str:
        with self._lock:
            if (account, region) in self.sinks:
                return self.sinks[(account, region)][0]
            arn = f"arn:aws:oam:{region}:{account}:sink/{uuid.uuid4()}"
            self.sinks[(account, region)] = (arn, name)
            return arn

    def create_link(self, source: str, region: str, sink_arn: str, resource_types: list[str], label: str) -> str:
        parts = sink_arn.split(":")
        if len(parts) < 6 or parts[3] != region:
            raise ValueError(f"sink {sink_arn} is not in region {region}: links stay within a region")
        with self._lock:
            if sink_arn not in {arn for arn, _ in self.sinks.values()}:
                raise LookupError(f"sink {sink_arn} does not exist")
            for link in self.links.values():
                if link.source == source and link.region == region and link.sink_arn == sink_arn:
                    raise ValueError(f"account {source} already links to {sink_arn}")
            arn = f"arn:aws:oam:{region}:{source}:link/{uuid.uuid4()}"
            self.links[arn] = _Link(arn, source, region, sink_arn, list(resource_types), label)
            return arn

    def delete_link(self, arn: str) -> None:
        with self._lock:
            self.links.pop(arn, None)

    def sink_of(self, account: str, region: str) -> str | None:
        with self._lock:
            found = self.sinks.get((account, region))
            return found[0] if found else None

    def trace_sources(self, account: str, region: str) -> list[str]:
        """Accounts whose X-Ray traces are copied to `account`'s sink in `region` (not itself)."""
        sink = self.sink_of(account, region)
        if sink is None:
            return []
        with self._lock:
            return sorted(
                {
                    link.source
                    for link in self.links.values()
                    if link.sink_arn == sink and XRAY_TRACE in link.resource_types and link.source != account
                }
            )

    # ------------------------------------------------------------------ the OAM API

    def handle(self, route: str, account: str, region: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return 400, {"__type": "ValidationException", "message": "body is not JSON"}
        try:
            if route == "/CreateSink":
                arn = self.create_sink(account, region, str(request.get("Name") or "sink"))
                return 200, {"Arn": arn, "Id": arn.rsplit("/", 1)[1], "Name": request.get("Name"), "Tags": {}}
            if route == "/CreateLink":
                types = [str(t) for t in request.get("ResourceTypes") or []]
                label = str(request.get("LabelTemplate") or "$AccountName").replace("$AccountName", account)
                arn = self.create_link(account, region, str(request.get("SinkIdentifier")), types, label)
                return 200, {"Arn": arn, "Id": arn.rsplit("/", 1)[1], "Label": label, "ResourceTypes": types}
            if route == "/DeleteLink":
                self.delete_link(str(request.get("Identifier")))
                return 200, {}
            if route == "/ListSinks":
                with self._lock:
                    items = [
                        {"Arn": arn, "Id": arn.rsplit("/", 1)[1], "Name": name}
                        for (owner, reg), (arn, name) in self.sinks.items()
                        if owner == account and reg == region
                    ]
                return 200, {"Items": items}
            if route == "/ListAttachedLinks":
                sink = str(request.get("SinkIdentifier"))
                if sink != self.sink_of(account, region):
                    return 404, {"__type": "ResourceNotFoundException", "message": f"sink {sink} not found"}
                with self._lock:
                    links = [
                        {"LinkArn": k.arn, "Label": k.label, "ResourceTypes": k.resource_types}
                        for k in self.links.values()
                        if k.sink_arn == sink
                    ]
                return 200, {"Items": links}
            if route == "/ListLinks":
                with self._lock:
                    mine = [
                        {
                            "Arn": k.arn,
                            "Id": k.arn.rsplit("/", 1)[1],
                            "Label": k.label,
                            "SinkArn": k.sink_arn,
                            "ResourceTypes": k.resource_types,
                        }
                        for k in self.links.values()
                        if k.source == account and k.region == region
                    ]
                return 200, {"Items": mine}
        except LookupError as error:
            return 404, {"__type": "ResourceNotFoundException", "message": str(error)}
        except ValueError as error:
            return 409, {"__type": "ConflictException", "message": str(error)}
        return 400, {"__type": "InvalidParameterException", "message": f"operation {route} is not emulated"}


# --------------------------------------------------------------------------- monitoring-account reads

Forward = Callable[[str], tuple[int, dict[str, Any] | None, Any]]


def merge_summaries(
    per_account: dict[str, list[dict[str, Any]]], services: Callable[[str, str], list[tuple[str, str]]]
) -> list[dict[str, Any]]:
    """One summary per trace id across the source accounts, `ServiceIds` carrying each `AccountId`."""
    merged: dict[str, dict[str, Any]] = {}
    for account, summaries in per_account.items():
        for summary in summaries:
            trace_id = str(summary.get("Id"))
            target = merged.get(trace_id)
            if target is None:
                target = merged[trace_id] = dict(summary, ServiceIds=[])
            else:
                for flag in ("HasError", "HasFault", "HasThrottle", "IsPartial"):
                    target[flag] = bool(target.get(flag)) or bool(summary.get(flag))
            for name, kind in services(account, trace_id):
                target["ServiceIds"].append({"Name": name, "Names": [name], "AccountId": account, "Type": kind})
    return list(merged.values())


def merge_traces(per_account: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One trace per id holding the segments every source account recorded for it."""
    merged: dict[str, dict[str, Any]] = {}
    for traces in per_account.values():
        for trace in traces:
            trace_id = str(trace.get("Id"))
            target = merged.get(trace_id)
            if target is None:
                merged[trace_id] = dict(trace, Segments=list(trace.get("Segments") or []))
                continue
            target["Segments"] += list(trace.get("Segments") or [])
            target["Duration"] = max(target.get("Duration") or 0, trace.get("Duration") or 0)
            target["LimitExceeded"] = bool(target.get("LimitExceeded")) or bool(trace.get("LimitExceeded"))
    return list(merged.values())
