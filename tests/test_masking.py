from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_wpm.masking import MASK, TOO_DEEP, SecretMasker

SANITIZE_ENV = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"


@pytest.fixture
def masker() -> SecretMasker:
    return SecretMasker()


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "set-cookie",
        "X-Api-Key",
        "x-auth-token",
        "PASSWORD",
        "passwd",
        "pwd",
        "api_key",
        "apikey",
        "secret_key",
        "private_key",
        "key",
        "refresh_token",
        "access_token",
        "client_secret",
        "credentials",
        "sessionid",
        "X-CSRF-Token",
        "signature",
        "bearer",
        "HTTP_AUTHORIZATION",
    ],
)
def test_secret_names(masker: SecretMasker, name: str) -> None:
    assert masker.is_secret(name)


@pytest.mark.parametrize(
    "name", ["user", "page", "q", "content-type", "Accept", "user-agent", "id", "HTTP_HOST"]
)
def test_non_secret_names(masker: SecretMasker, name: str) -> None:
    assert not masker.is_secret(name)


def test_substring_matching_over_masks_on_purpose(masker: SecretMasker) -> None:
    assert masker.is_secret("monkey")


def test_extra_keys_are_case_insensitive_substrings() -> None:
    masker = SecretMasker(extra_keys=["SSN", ""])
    assert masker.is_secret("customer_ssn")
    assert not masker.is_secret("user")


def test_sanitize_patterns_are_case_insensitive_regexes() -> None:
    masker = SecretMasker(sanitize_patterns=["x-internal-.*", "^account$"])
    assert masker.is_secret("X-Internal-Id")
    assert masker.is_secret("HTTP_X_INTERNAL_ID")
    assert masker.is_secret("ACCOUNT")
    assert not masker.is_secret("accounts-page")
    assert not masker.is_secret("x-request-id")


def test_invalid_sanitize_pattern_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_wpm"):
        masker = SecretMasker(sanitize_patterns=["(unclosed", "x-ok"])
    assert "(unclosed" in caplog.text
    assert masker.is_secret("x-ok")
    assert not masker.is_secret("user")


def test_from_env_reads_otel_sanitize_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SANITIZE_ENV, "x-tenant-.*, , .*-ssn")
    masker = SecretMasker.from_env(extra_keys=["pin"])
    assert masker.is_secret("X-Tenant-Id")
    assert masker.is_secret("customer-ssn")
    assert masker.is_secret("pin_code")
    assert not masker.is_secret("content-type")


def test_from_env_without_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SANITIZE_ENV, raising=False)
    masker = SecretMasker.from_env()
    assert masker.is_secret("token")
    assert not masker.is_secret("x-tenant-id")


def test_mask_mapping_keeps_order_and_repeated_keys(masker: SecretMasker) -> None:
    pairs = [("Accept", "*/*"), ("Cookie", "a=1"), ("Cookie", "b=2"), ("q", "x")]
    assert masker.mask_mapping(pairs) == [
        ("Accept", "*/*"),
        ("Cookie", MASK),
        ("Cookie", MASK),
        ("q", "x"),
    ]


def test_mask_mapping_masks_nested_json_under_plain_keys(masker: SecretMasker) -> None:
    masked = masker.mask_mapping({"data": {"password": "p", "name": "n"}, "token": "t"})
    assert masked == [("data", {"password": MASK, "name": "n"}), ("token", MASK)]


def test_mask_json_nested(masker: SecretMasker) -> None:
    document = {
        "user": {"name": "ann", "credentials": {"password": "hunter2"}},
        "items": [{"api_key": "k1", "id": 1}, {"id": 2}],
        "refresh_token": {"value": "whole-subtree"},
        "page": 3,
    }
    assert masker.mask_json(document) == {
        "user": {"name": "ann", "credentials": MASK},
        "items": [{"api_key": MASK, "id": 1}, {"id": 2}],
        "refresh_token": MASK,
        "page": 3,
    }
    assert document["user"]["credentials"] == {"password": "hunter2"}  # input untouched


def test_mask_json_scalars_pass_through(masker: SecretMasker) -> None:
    assert masker.mask_json("text") == "text"
    assert masker.mask_json(None) is None
    assert masker.mask_json([1, "a"]) == [1, "a"]


def test_very_deep_json_is_cut_not_crashing(masker: SecretMasker) -> None:
    deep: object = {"password": "leaf"}
    for _ in range(10_000):
        deep = {"child": [deep]}
    masked = masker.mask_json(deep)
    assert TOO_DEEP in json.dumps(masked)
    assert "leaf" not in json.dumps(masked)


def test_self_referencing_structure_terminates(masker: SecretMasker) -> None:
    loop: list[object] = []
    loop.append(loop)
    assert TOO_DEEP in json.dumps(masker.mask_json(loop))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("page=2&q=shoes", "page=2&q=shoes"),
        ("token=abc&page=2", f"token={MASK}&page=2"),
        ("api_key=1&api_key=2", f"api_key={MASK}&api_key={MASK}"),
        ("password=&q=", "password=&q="),
        ("pass%77ord=x", f"pass%77ord={MASK}"),
        ("a=%ff%fe&secret=%ff", f"a=%ff%fe&secret={MASK}"),
        ("flag&&=x&token", "flag&&=x&token"),
        ("q=a=b&auth=c=d", f"q=a=b&auth={MASK}"),
    ],
)
def test_mask_query(masker: SecretMasker, query: str, expected: str) -> None:
    assert masker.mask_query(query) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/a?page=1", "https://example.com/a?page=1"),
        ("https://bob:pw@example.com/a", f"https://{MASK}@example.com/a"),
        ("https://bob@example.com", f"https://{MASK}@example.com"),
        ("redis://:p@ss@cache:6379/0", f"redis://{MASK}@cache:6379/0"),
        ("//bob:pw@example.com/x", f"//{MASK}@example.com/x"),
        ("https://example.com/a?token=t&q=1", f"https://example.com/a?token={MASK}&q=1"),
        ("https://example.com/cb#access_token=t", f"https://example.com/cb#access_token={MASK}"),
        ("https://example.com/p@th?x=1#section", "https://example.com/p@th?x=1#section"),
        ("/relative/path?session=1", f"/relative/path?session={MASK}"),
    ],
)
def test_mask_url(masker: SecretMasker, url: str, expected: str) -> None:
    assert masker.mask_url(url) == expected


def test_mask_text_replaces_literal_secrets() -> None:
    text = "POST failed: token s3cr3t-token-value rejected (s3cr3t-token-value)"
    assert SecretMasker.mask_text(text, ["s3cr3t-token-value"]) == (
        f"POST failed: token {MASK} rejected ({MASK})"
    )


def test_mask_text_ignores_empty_and_short_values() -> None:
    assert SecretMasker.mask_text("a b abc", ["", "a", "abc"]) == "a b abc"


def test_mask_text_prefers_longest_secret() -> None:
    assert SecretMasker.mask_text("xx abcdefgh xx", ["abcd", "abcdefgh"]) == f"xx {MASK} xx"


def test_mask_text_hides_bearer_credentials_it_was_not_told_about() -> None:
    text = "proxy said: bad header Authorization: bearer eyJhbGciOi.x.y (and BEARER  abc)"
    assert SecretMasker.mask_text(text, []) == (
        f"proxy said: bad header Authorization: bearer {MASK} (and BEARER  {MASK})"
    )


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
secret_names = st.sampled_from(["password", "Authorization", "x-api-key", "refresh_token"])


@settings(max_examples=200)
@given(
    document=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    secret_name=secret_names,
    path=st.lists(st.sampled_from(["a", "b", 0]), max_size=5),
    data=st.data(),
)
def test_secret_value_never_survives_mask_json(
    document: dict[str, object],
    secret_name: str,
    path: list[object],
    data: st.DataObject,
) -> None:
    secret_value = "SECRET-" + data.draw(st.uuids()).hex
    node: dict[str, object] = document
    for step in path:
        child: dict[str, object] = {}
        node[str(step)] = [child] if step == 0 else child
        node = child
    node[secret_name] = secret_value
    masker = SecretMasker()
    assert secret_value not in json.dumps(masker.mask_json(document))
