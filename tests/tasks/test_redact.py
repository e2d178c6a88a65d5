"""Redaction: key deny-list through JSON (and JSON held in strings), URL query masking, caps."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.redact import DEFAULT_DENY_KEYS, RedactionPolicy, cap_utf8, key_words, normalise_key, redact_url
from tests.fuzzing import LONG, LONG_TIMEOUT_SECONDS

POLICY = RedactionPolicy()


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "dbPassword",
        "user_passwd",
        "client_secret",
        "SecretString",
        "accessToken",
        "X-Amz-Security-Token",
        "Authorization",
        "X-Api-Key",
        "apiKey",
        "api_key",
        "API Key",
        "creditCardNumber",
        "credit_card",
        "card-number",
        "cvv",
        "cardCvv",
        "ssn",
        "user_ssn",
        "userSSN",
        "privateKey",
        "private_key",
        "sessionId",
        "Set-Cookie",
    ],
)
def test_default_deny_list_catches_common_spellings(key: str) -> None:
    assert POLICY.is_denied(key)


@pytest.mark.parametrize(
    "key", ["name", "orderId", "class_name", "lesson", "status", "cardinality", "email", "UserID", "amount"]
)
def test_ordinary_keys_pass(key: str) -> None:
    assert not POLICY.is_denied(key)


def test_normalisation_helpers() -> None:
    assert normalise_key("X-Api-Key") == "xapikey"
    assert key_words("userSSN_value") == ["user", "ssn", "value"]
    assert key_words("HTTPStatusCode") == ["http", "status", "code"]
    assert "session" in DEFAULT_DENY_KEYS


def test_redact_value_recurses_and_never_mutates() -> None:
    payload = {
        "orderId": "4711",
        "customer": {
            "email": "a@example.com",
            "password": "hunter2",
            "cards": [{"cvv": "123", "last4": "1111"}],
        },
        "headers": [{"Authorization": "Bearer abc"}, {"Accept": "*/*"}],
        "count": 3,
        "nested_json": '{"apiKey": "k-1", "keep": [1, 2]}',
        "token": {"even": "objects are replaced whole"},
    }
    original = orjson.dumps(payload)
    redacted = POLICY.redact_value(payload)
    assert orjson.dumps(payload) == original  # input untouched
    assert redacted["orderId"] == "4711"
    assert redacted["count"] == 3
    assert redacted["customer"]["password"] == "***"
    assert redacted["customer"]["email"] == "a@example.com"
    assert redacted["customer"]["cards"] == [{"cvv": "***", "last4": "1111"}]
    assert redacted["headers"] == [{"Authorization": "***"}, {"Accept": "*/*"}]
    assert orjson.loads(redacted["nested_json"]) == {"apiKey": "***", "keep": [1, 2]}
    assert redacted["token"] == "***"


def test_json_string_without_secrets_is_kept_byte_for_byte() -> None:
    text = '{ "a" : 1,  "b": [true, null] }'
    assert POLICY.redact_value(text) == text
    assert POLICY.redact_value("{not json") == "{not json"


def test_long_strings_are_cut() -> None:
    policy = RedactionPolicy(max_string_chars=32)
    assert policy.redact_value({"a": "x" * 100}) == {"a": "x" * 32}


def test_custom_policy() -> None:
    policy = RedactionPolicy(deny_keys=("email", "iban"), replacement="[redacted]")
    assert policy.redact_value({"email": "a@b.c", "password": "kept", "IBAN": "DE00"}) == {
        "email": "[redacted]",
        "password": "kept",
        "IBAN": "[redacted]",
    }


def test_deep_nesting_is_bounded() -> None:
    value: object = "leaf"
    for _ in range(200):
        value = {"k": value}
    redacted = POLICY.redact_value(value)
    assert isinstance(redacted, dict)  # no RecursionError; the far end is replaced


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://localhost:8000/", "http://localhost:8000/"),
        ("https://api.example.com/health", "https://api.example.com/health"),
        ("https://x.com/p?a=1&token=abc", "https://x.com/p?a=***&token=***"),
        ("https://x.com/p?flag&a=", "https://x.com/p?flag&a=***"),
        ("https://u:p4ss@h.com/x?q=1#frag", "https://u:***@h.com/x?q=***#frag"),
        ("https://h.com/cb#access_token=abc&state=1", "https://h.com/cb#access_token=***&state=***"),
        (
            "jdbc:postgresql://db.example.com:5432/ebdb?myInterceptor=foo",
            "jdbc:postgresql://db.example.com:5432/ebdb?myInterceptor=***",
        ),
        ("user@host", "user@host"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert POLICY.redact_url(url) == expected


def test_cap_utf8_never_splits_a_character() -> None:
    assert cap_utf8("abc", 10) == ("abc", False)
    text, cut = cap_utf8("é" * 10, 5)
    assert cut
    assert text == "éé"
    assert len(text.encode()) <= 5


def test_redact_payload_caps_and_flags() -> None:
    policy = RedactionPolicy(max_payload_bytes=64)
    text, truncated = policy.redact_payload(orjson.dumps({"password": "x", "data": "y" * 200}).decode())
    assert truncated
    assert text is not None
    assert len(text.encode()) <= 64
    assert '"password":"***"' in text
    assert policy.redact_payload(None) == (None, False)
    assert policy.redact_payload({"secret": 1}) == ('{"secret":"***"}', False)
    assert policy.redact_payload("plain text") == ("plain text", False)


def test_policy_is_a_hashable_value() -> None:
    assert RedactionPolicy() == RedactionPolicy()
    POLICY.is_denied("warm the cache")
    assert RedactionPolicy() == POLICY
    assert RedactionPolicy.model_validate(POLICY.model_dump()) == POLICY


def test_redact_trace_masks_urls_and_denied_keys_and_leaves_clean_documents_alone() -> None:
    import orjson

    from tasks.redact import RedactionPolicy, redact_trace

    clean = orjson.dumps({"id": "a" * 16, "name": "svc", "http": {"request": {"url": "https://x/y"}}}).decode()
    dirty = orjson.dumps(
        {
            "id": "b" * 16,
            "name": "svc",
            "http": {"request": {"url": "https://x/login?user=bob&token=s3cr3t"}},
            "metadata": {"default": {"db_password": "hunter2", "rows": 3}},
            "subsegments": [{"id": "c" * 16, "sql": {"url": "postgres://app:pw@db/x?sslpassword=zz"}}],
        }
    ).decode()
    trace = {
        "Id": "1-5f000000-" + "0" * 24,
        "Segments": [
            {"Id": "a", "Document": clean},
            {"Id": "b", "Document": dirty},
            {"Id": "n", "Document": "not json ?token=x"},
        ],
    }
    out = redact_trace(trace, RedactionPolicy())
    assert out["Segments"][0]["Document"] is clean  # untouched, not even re-serialised
    assert out["Segments"][2]["Document"] == "not json ?token=x"  # the transform reports non-JSON
    masked = out["Segments"][1]["Document"]
    for secret in ("s3cr3t", "hunter2", "zz"):
        assert secret not in masked
    doc = orjson.loads(masked)
    assert doc["http"]["request"]["url"] == "https://x/login?user=***&token=***"
    assert doc["metadata"]["default"] == {"db_password": "***", "rows": 3}
    assert trace["Segments"][1]["Document"] == dirty  # the input is not modified
    assert redact_trace(out, RedactionPolicy()) == out  # idempotent: replays keep their envelope ids


@pytest.mark.parametrize(
    ("policy", "document", "secret"),
    [
        # a configured key that shares no fragment with the default list
        (
            RedactionPolicy(deny_keys=("date of birth",)),
            {"metadata": {"default": {"DateOfBirth": "1970-01-01"}}},
            "1970",
        ),
        # a password in the URL's userinfo and no query string
        (POLICY, {"http": {"request": {"url": "https://bob:hunter2@example.com/x"}}}, "hunter2"),
        # a denied key spelled with JSON escapes
        (POLICY, '{"metadata": {"default": {"pass\\u0077ord": "hunter2"}}}', "hunter2"),
        # a multi-word pattern written with separators
        (POLICY, {"annotations": {"Credit-Card_Number": "4111111111111111"}}, "4111"),
    ],
)
def test_the_document_pre_filter_never_skips_a_document_that_needs_masking(
    policy: RedactionPolicy, document: object, secret: str
) -> None:
    from tasks.redact import redact_document

    text = document if isinstance(document, str) else orjson.dumps(document).decode()
    assert policy.document_suspect(text)
    assert secret not in redact_document(text, policy)


_KEYS = ["id", "name", "url", "request_url", "sql", "rows", "Token", "x-api-key", "SessionId", "sn", "cvv2", "pass"]


@pytest.mark.slow
@pytest.mark.fuzz
@pytest.mark.timeout(LONG_TIMEOUT_SECONDS)
@LONG
@given(
    document=st.recursive(
        st.one_of(
            st.none(),
            st.integers(-(2**40), 2**40),
            st.sampled_from(["a?b=1", "u:p@h", "https://h/x?q=1", "plain", "é"]),
        ),
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=8)), children, max_size=4),
        ),
        max_leaves=12,
    ),
    deny=st.lists(st.sampled_from(["password", "ssn", "api key", "x", "sn", "ab cd", "token"]), max_size=3),
)
def test_pre_filter_is_a_superset_of_what_masking_changes(document: object, deny: list[str]) -> None:
    from tasks.redact import _mask

    policy = RedactionPolicy(deny_keys=tuple(deny))
    text = orjson.dumps(document).decode()
    if not policy.document_suspect(text):
        assert _mask(orjson.loads(text), policy, policy.key_denied) == (orjson.loads(text), False)
