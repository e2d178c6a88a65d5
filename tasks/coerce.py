"""Value coercion (pure), the transform's type discipline: one odd value never causes a mapping
conflict. Ids, names and free text become strings (objects as compact JSON), capped; counts and
status codes int64 or None; numbers finite floats or None; flags booleans; epoch microseconds
ISO-8601 UTC text through one bounded cache of second → text shared by every caller.

`tasks.transform` binds these to short module-level names on its hot path.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

__all__ = [
    "INT64",
    "MAX_NAME",
    "MAX_TEXT",
    "SECOND_CACHE_ENTRIES",
    "TRUE_STRINGS",
    "digest_hex",
    "iso_ms",
    "iso_ns",
    "iso_second",
    "safe_json",
    "second_cache",
    "to_bool",
    "to_float",
    "to_long",
    "to_text",
]

MAX_TEXT = 4096  # any single string field
MAX_NAME = 1024
INT64 = 1 << 63
TRUE_STRINGS = frozenset({"true", "True", "TRUE", "1"})

# Epoch second → ISO text. Bounded (about 2 MB) because a long-running consumer sees every second
# of every day: 16k entries cover 4.5 hours of distinct seconds, the span of most envelopes.
SECOND_CACHE_ENTRIES = 16_384
second_cache: dict[int, str] = {}


def iso_second(second: int) -> str:
    """Epoch second → `2017-07-08T00:23:31` (cached: a consumer formats the same seconds over and over)."""
    text = second_cache.get(second)
    if text is None:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        if len(second_cache) >= SECOND_CACHE_ENTRIES:
            second_cache.clear()
        second_cache[second] = text
    return text


def iso_ms(us: int) -> str:
    """Epoch microseconds → `2017-07-08T00:23:31.562Z`."""
    return "%s.%03dZ" % (iso_second(us // 1_000_000), (us // 1000) % 1000)  # noqa: UP031 (faster)


def iso_ns(us: int) -> str:
    """Epoch microseconds → `2017-07-08T00:23:31.562000000Z` (X-Ray has µs resolution at best)."""
    return "%s.%06d000Z" % (iso_second(us // 1_000_000), us % 1_000_000)  # noqa: UP031 (faster)


def to_long(value: Any) -> int | None:
    kind = type(value)
    if kind is int:
        return value if -INT64 <= value < INT64 else None
    if kind is float:
        return int(value) if value.is_integer() and -9.2e18 < value < 9.2e18 else None
    if kind is str:
        text = value.strip()
        try:
            return to_long(int(text))
        except ValueError:
            try:
                return to_long(float(text))
            except ValueError:
                return None
    return None


def to_float(value: Any) -> float | None:
    kind = type(value)
    if kind is float:
        return value if value == value and abs(value) != float("inf") else None
    if kind is int:
        return float(value) if -INT64 < value < INT64 else None
    if kind is str:
        try:
            return to_float(float(value))
        except ValueError:
            return None
    return None


def to_bool(value: Any) -> bool:
    return value is True or (type(value) is str and value in TRUE_STRINGS) or (type(value) is int and value == 1)


def to_text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """Any JSON value → a string (objects as compact JSON), capped; None stays None."""
    kind = type(value)
    if kind is str:
        return value if len(value) <= limit else value[:limit]
    if value is None:
        return None
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return str(value)
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = str(value)
    return text if len(text) <= limit else text[:limit]


def safe_json(value: Any) -> str:
    """Compact JSON of any value; whatever orjson refuses (ints beyond 64 bits, …) via repr."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)


def digest_hex(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()
