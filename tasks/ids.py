"""Trace and segment id formats (pure): what X-Ray and W3C allow, and why a value is refused.

Ids become document ids, Parquet keys and parts of S3 keys, so anything outside these formats is
refused per item (a trace, a segment) with a reason naming what was wrong, at the earliest point
that sees it: the collector, the importer and the consumer.

* X-Ray trace id  `1-<8 hex: epoch>-<24 hex>` (X-Ray API reference, "Trace ID format")
* W3C trace id    32 hex digits (Transaction Search spans, OTLP); not all zeros
* segment id      16 hex digits (X-Ray segment document "id"; a W3C span id likewise)
"""

from __future__ import annotations

from typing import Any

_HEX = frozenset("0123456789abcdefABCDEF")
MAX_SHOWN = 60  # characters of a refused value quoted in a reason


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _hex(text: str) -> bool:
    return _HEX.issuperset(text) and text.strip("0") != ""


def trace_id_problem(value: Any) -> str | None:
    """None for an X-Ray or W3C trace id; otherwise why it is not one."""
    if type(value) is not str:
        return f"trace id {_shown(value)} is a {type(value).__name__}, not a string"
    if len(value) == 35 and value[:2] == "1-" and value[10] == "-" and _hex(value[2:10] + value[11:]):
        return None
    if len(value) == 32 and _hex(value):
        return None
    return f"trace id {_shown(value)} is neither 1-<8 hex>-<24 hex> (X-Ray) nor 32 hex digits (W3C)"


def segment_id_problem(value: Any) -> str | None:
    """None for a 16-hex-digit segment (or span) id; otherwise why it is not one."""
    if type(value) is not str:
        return f"segment id {_shown(value)} is a {type(value).__name__}, not a string"
    if len(value) == 16 and _HEX.issuperset(value):  # all zeros too: X-Ray accepts it
        return None
    return f"segment id {_shown(value)} is not 16 hex digits"


def is_trace_id(value: Any) -> bool:
    return trace_id_problem(value) is None
