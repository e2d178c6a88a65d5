"""Prefect blocks that configure xraylake."""

from blocks.roster import MemberAccount, MonitoringAccount, OrganizationsSource, Roster, UnknownAccountError
from blocks.targets import ArchiveStore, OpenSearchTarget, TraceQueue

__all__ = [
    "ArchiveStore",
    "MemberAccount",
    "MonitoringAccount",
    "OpenSearchTarget",
    "OrganizationsSource",
    "Roster",
    "TraceQueue",
    "UnknownAccountError",
]
