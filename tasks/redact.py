"""Redaction before indexing: a key deny-list over JSON values, and query-string masking in URLs.

Pure and fast (it runs on the transform's hot path): key decisions are cached per policy, strings
that cannot hold JSON or a query string are returned untouched without any parsing.

Key matching normalises a key to lower-case alphanumerics (`X-Api-Key`, `api_key`, `apiKey` and
`API Key` all become `apikey`). A pattern of 5+ characters matches anywhere in the normalised key
(`dbPassword`, `client_secret`, `accessToken`); a shorter pattern (`ssn`, `cvv`) must be a whole
word of the key (`user_ssn`, `cardCvv`), so `class_name` does not trip `ssn`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cached_property
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_DENY_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api key",
    "apikey",
    "api_key",
    "credit card",
    "card number",
    "cvv",
    "ssn",
    "private key",
    "session",
    "cookie",
)

_SHORT_PATTERN = 5  # patterns shorter than this match whole words only
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_JSON_START = frozenset("{[")


def normalise_key(key: str) -> str:
    """`X-Api-Key` → `apikey`: lower-case alphanumerics only."""
    return _NON_ALNUM.sub("", key.lower())


def key_words(key: str) -> list[str]:
    """`userSSN_value` → ['user', 'ssn', 'value'] (camelCase, snake, kebab, spaces, dots)."""
    return [word.lower() for word in _WORDS.findall(key)]


class RedactionPolicy(BaseModel):
    """What to hide before documents reach the index."""

    model_config = ConfigDict(frozen=True)

    deny_keys: tuple[str, ...] = Field(
        default=DEFAULT_DENY_KEYS,
        description="Key patterns whose values are replaced (case, '_', '-', ' ' and '.' are ignored).",
    )
    replacement: str = Field(default="***", description="What a denied value or a URL query value becomes.")
    max_string_chars: int = Field(
        default=4096, ge=16, description="Longer strings inside redacted values are cut to this length."
    )
    max_payload_bytes: int = Field(
        default=8192,
        ge=64,
        description="Cap (UTF-8 bytes) of Step Functions input/output/cause after redaction.",
    )

    # ------------------------------------------------------------------ keys

    @cached_property
    def key_denied(self) -> Callable[[str], bool]:
        """`key → bool`, memoised: the form to use in loops (a plain closure, no model lookups)."""
        normalised = {normalise_key(pattern) for pattern in self.deny_keys} - {""}
        long_patterns = tuple(sorted(p for p in normalised if len(p) >= _SHORT_PATTERN))
        short_patterns = frozenset(p for p in normalised if len(p) < _SHORT_PATTERN)
        cache: dict[str, bool] = {}

        def denied(key: str) -> bool:
            hit = cache.get(key)
            if hit is not None:
                return hit
            norm = normalise_key(key)
            result = any(pattern in norm for pattern in long_patterns)
            if not result and short_patterns:
                result = norm in short_patterns or any(word in short_patterns for word in key_words(key))
            if len(cache) < 65536:
                cache[key] = result
            return result

        return denied

    def is_denied(self, key: str) -> bool:
        """True when the value under `key` must be replaced."""
        return self.key_denied(key)

    @cached_property
    def document_suspect(self) -> Callable[[str], bool]:
        """`document → bool`, a pre-filter that may over-report but never misses: a denied key's
        normalised pattern (a short pattern's word included) found in the document with every
        byte `normalise_key` drops deleted, a URL key and a `?` or `@`, or a letter escape."""
        patterns = tuple(sorted(p.encode() for p in {normalise_key(p) for p in self.deny_keys} - {""}))

        def suspect(document: str) -> bool:
            if ("?" in document or "@" in document) and any(key in document for key in _QUOTED_URL_KEYS):
                return True
            if "\\" in document and _LETTER_ESCAPE.search(document):
                return True
            squeezed = document.lower().encode("utf-8", "surrogatepass").translate(None, _NOT_ALNUM_BYTES)
            return any(pattern in squeezed for pattern in patterns)

        return suspect

    # ------------------------------------------------------------------ values

    def redact_value(self, obj: Any) -> Any:
        """A copy of `obj` with denied keys' values replaced, recursing through dicts, lists and
        JSON held in strings (Step Functions input/output); long strings are cut."""
        return self._redact(obj, 0)

    def _redact(self, obj: Any, depth: int) -> Any:
        if isinstance(obj, str):
            return self._redact_str(obj, depth)
        if isinstance(obj, dict):
            if depth > 64:
                return self.replacement
            denied = self.key_denied
            out: dict[str, Any] = {}
            for key, value in obj.items():
                text_key = key if isinstance(key, str) else str(key)
                if denied(text_key):
                    out[text_key] = self.replacement
                elif isinstance(value, (dict, list, str)):
                    out[text_key] = self._redact(value, depth + 1)
                else:
                    out[text_key] = value
            return out
        if isinstance(obj, (list, tuple)):
            if depth > 64:
                return self.replacement
            return [self._redact(item, depth + 1) if isinstance(item, (dict, list, str)) else item for item in obj]
        return obj

    def _redact_str(self, text: str, depth: int) -> str:
        stripped = text.lstrip()
        if stripped and stripped[0] in _JSON_START and depth <= 64:
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, (dict, list)):
                redacted = self._redact(parsed, depth + 1)
                if redacted != parsed:
                    text = orjson.dumps(redacted).decode()
        if len(text) > self.max_string_chars:
            return text[: self.max_string_chars]
        return text

    def redact_payload(self, value: Any) -> tuple[str | None, bool]:
        """Redact a free-form payload (string or JSON value) and cap it at `max_payload_bytes`.

        Returns (text, truncated). Non-string values are serialised as JSON first.
        """
        if value is None:
            return None, False
        if isinstance(value, str):
            text = self._redact_payload_str(value)
        else:
            try:
                text = orjson.dumps(self.redact_value(value), default=str).decode()
            except (TypeError, orjson.JSONEncodeError):
                text = str(value)
        return cap_utf8(text, self.max_payload_bytes)

    def _redact_payload_str(self, text: str) -> str:
        stripped = text.lstrip()
        if not stripped or stripped[0] not in _JSON_START:
            return text
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if not isinstance(parsed, (dict, list)):
            return text
        redacted = self._redact(parsed, 0)
        return text if redacted == parsed else orjson.dumps(redacted).decode()

    # ------------------------------------------------------------------ urls

    def redact_url(self, url: str) -> str:
        """Mask query-string (and fragment) values and a userinfo password; keys stay readable."""
        return redact_url(url, self.replacement)


def cap_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    """`text` cut to at most `max_bytes` UTF-8 bytes (never inside a character) and whether it was cut."""
    if len(text) * 4 <= max_bytes:
        return text, False
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[:max_bytes].decode("utf-8", "ignore"), True


def _mask_pairs(part: str, replacement: str) -> str:
    pieces = []
    for pair in part.split("&"):
        key, sep, _ = pair.partition("=")
        pieces.append(f"{key}={replacement}" if sep else pair)
    return "&".join(pieces)


def redact_url(url: str, replacement: str = "***") -> str:
    """`https://u:p@h/x?a=1&b=2#t=3` → `https://u:***@h/x?a=***&b=***#t=***`.

    Works on the string (no re-encoding), so everything but the masked values stays byte-identical.
    Values without `=` (`?flag`) are kept: they name nothing secret on their own.
    """
    if "?" not in url and "@" not in url and "#" not in url:
        return url
    base, hash_sep, fragment = url.partition("#")
    base, query_sep, query = base.partition("?")
    scheme_end = base.find("://")
    if scheme_end >= 0 and "@" in base:
        authority_start = scheme_end + 3
        slash = base.find("/", authority_start)
        authority_end = len(base) if slash < 0 else slash
        authority = base[authority_start:authority_end]
        userinfo, at, host = authority.rpartition("@")
        if at and ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            base = f"{base[:authority_start]}{user}:{replacement}@{host}{base[authority_end:]}"
    if query_sep:
        base = f"{base}?{_mask_pairs(query, replacement)}"
    if hash_sep:
        base = f"{base}#{_mask_pairs(fragment, replacement) if '=' in fragment else fragment}"
    return base


# ============================================================================ whole traces

_URL_KEYS = frozenset({"url", "request_url", "http.url"})
_QUOTED_URL_KEYS = tuple(f'"{key}"' for key in sorted(_URL_KEYS))
# Every byte `normalise_key` drops: deleting them from the whole lower-cased document leaves each
# key's normalised form as a substring, so a substring test can only over-report.
_NOT_ALNUM_BYTES = bytes(b for b in range(256) if not (48 <= b <= 57 or 97 <= b <= 122))
# JSON escapes that turn letters of the text into other characters of the key (`\u0070` → `p`).
_LETTER_ESCAPE = re.compile(r"\\[bfnrtu]")


def _mask(obj: Any, policy: RedactionPolicy, denied: Callable[[str], bool], depth: int = 0) -> tuple[Any, bool]:
    """(obj with denied keys' values and URL query values masked, whether anything changed)."""
    if depth > 64:
        return obj, False
    if isinstance(obj, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, value in obj.items():
            text_key = key if isinstance(key, str) else str(key)
            if denied(text_key) and value not in (None, "", policy.replacement):
                out[key] = policy.replacement
                changed = True
            elif text_key in _URL_KEYS and isinstance(value, str) and ("?" in value or "@" in value):
                masked = redact_url(value, policy.replacement)
                out[key] = masked
                changed = changed or masked != value
            else:
                out[key], sub = _mask(value, policy, denied, depth + 1)
                changed = changed or sub
        return (out, True) if changed else (obj, False)
    if isinstance(obj, list):
        items = [_mask(item, policy, denied, depth + 1) for item in obj]
        if any(sub for _, sub in items):
            return [item for item, _ in items], True
    return obj, False


def redact_document(document: str, policy: RedactionPolicy) -> str:
    """A segment Document with secrets masked; the original string when nothing needed masking
    (most documents are not even parsed: a cheap scan rules them out)."""
    if not policy.document_suspect(document):
        return document
    try:
        parsed = orjson.loads(document)
    except orjson.JSONDecodeError:
        return document  # not JSON: the transform reports it; nothing to walk
    masked, changed = _mask(parsed, policy, policy.key_denied)
    return orjson.dumps(masked).decode() if changed else document


def redact_trace(trace: dict[str, Any], policy: RedactionPolicy) -> dict[str, Any]:
    """A BatchGetTraces `Trace` with each segment Document redacted; the same object when clean.

    Collectors apply it before envelopes are built, so nothing secret crosses SQS or lands in
    the archive (redaction is deterministic: replays and envelope ids stay stable); the consumer
    applies it again for envelopes from older or member-run collectors.
    """
    segments = trace.get("Segments")
    if not isinstance(segments, list):
        return trace
    changed = False
    out_segments = []
    for segment in segments:
        document = segment.get("Document") if isinstance(segment, dict) else None
        if isinstance(document, str):
            redacted = redact_document(document, policy)
            if redacted is not document:
                segment = {**segment, "Document": redacted}
                changed = True
        out_segments.append(segment)
    return {**trace, "Segments": out_segments} if changed else trace
