"""Prefect blocks that configure xraylake."""

from blocks.roster import MemberAccount, Roster, UnknownAccountError
from blocks.targets import ArchiveStore, OpenSearchTarget, TraceQueue

__all__ = ["ArchiveStore", "MemberAccount", "OpenSearchTarget", "Roster", "TraceQueue", "UnknownAccountError"]
