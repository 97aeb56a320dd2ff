from __future__ import annotations

import json
import logging
from urllib.parse import quote

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
        # short words, as whole words of the name
        "sig",
        "pw",
        "user_pw",
        "pass",
        "user-pass",
        "otp",
        "OTPCode",
        "pin",
        "newPin",
        "pin_code",
        "mfa_code",
        "totp",
        "connect.sid",
        "card",
        "card_number",
        "cardNumber",
        # the whole name
        "code",
        "Code",
        # substrings from other agents' default lists
        "jwt",
        "id_jwt",
        "passphrase",
        "cvv",
        "cvv2",
        "cvc",
        "credit_card",
        "PHPSESSID",
        "_xsrf",
        "XSRF-TOKEN",
        # OpenTelemetry's url.query redaction list
        "AWSAccessKeyId",
        "Signature",
        "X-Goog-Signature",
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


# --- names the substring list does not reach ---------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "pinned",
        "spinach",
        "signal",
        "design",
        "bypass",
        "compass",
        "passenger",
        "country_code",
        "status_code",
        "postcode",
        "encode",
        "discard",
        "cardinality",
        "topic",
        "pwa",
    ],
)
def test_short_words_do_not_match_inside_other_words(masker: SecretMasker, name: str) -> None:
    assert not masker.is_secret(name)


# --- URLs inside values ------------------------------------------------------------------

SECRET = "S3crInsideAValue99"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Original-URI", f"/login?token={SECRET}"),
        ("X-Forwarded-Uri", f"/oauth/cb?state=1&code={SECRET}"),
        ("X-Rewrite-Url", f"https://shop.example.com/a?page=1&access_token={SECRET}#x"),
        ("next", f"/cb?access_token={SECRET}"),
        ("return_to", f"/cb#id_token={SECRET}&state=2"),
        ("redirect", f"%2Fcb%3Ftoken%3D{SECRET}"),
        ("redirect", f"https%3A%2F%2Fexample.com%2Fcb%3Fsig%3D{SECRET}"),
        ("redirect", f"%252Fcb%253Fpassword%253D{SECRET}"),
        ("link", f"see https://bob:{SECRET}@example.com/x for details"),
        ("path", f"/files;jsessionid={SECRET}?x=1"),
    ],
)
def test_urls_inside_values_have_their_secrets_masked(
    masker: SecretMasker, name: str, value: str
) -> None:
    (masked,) = masker.mask_mapping([(name, value)])
    assert SECRET not in masked[1]
    assert MASK in masked[1]


def test_harmless_parameters_inside_values_are_kept(masker: SecretMasker) -> None:
    assert masker.mask_value("/search?q=shoes&page=2") == "/search?q=shoes&page=2"
    assert masker.mask_value("%2Fsearch%3Fq%3Dshoes") == "%2Fsearch%3Fq%3Dshoes"
    assert masker.mask_value(f"/cb?state=1&code={SECRET}") == f"/cb?state=1&code={MASK}"


def test_a_secret_behind_percent_encoding_is_shown_decoded_and_masked(
    masker: SecretMasker,
) -> None:
    url = f"https://shop.example.com/login?redirect=%2Fcb%3Ftoken%3D{SECRET}&page=2"
    assert masker.mask_url(url) == (
        f"https://shop.example.com/login?redirect=/cb?token={MASK}&page=2"
    )


def test_query_parameter_values_holding_urls_are_masked(masker: SecretMasker) -> None:
    assert masker.mask_query(f"next=%2Fcb%3Faccess_token%3D{SECRET}&q=1") == (
        f"next=/cb?access_token={MASK}&q=1"
    )


# --- values that are secrets whatever their name ---------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkYSJ9"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAS3crPrivateKeyBody\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        (JWT, JWT),
        (f"token was {JWT}.", JWT),
        ("Bearer S3crBearerLike123", "S3crBearerLike123"),
        ("sent with bearer abcdefgh12345678", "abcdefgh12345678"),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l"),
        (f"key:\n{PRIVATE_KEY}\n", "MIIEowIBAAKCAQEAS3crPrivateKeyBody"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvS3crCutShort", "MIIEvS3crCutShort"),
        ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("id ASIAY34FZKBOKMUTVV7A here", "ASIAY34FZKBOKMUTVV7A"),
        ("ghp_S3crGitHubToken0123456789abcdefghij", "ghp_S3crGitHubToken0123456789abcdefghij"),
        ("sk_live_S3crStripe0123456789", "sk_live_S3crStripe0123456789"),
        ("4111111111111111", "4111111111111111"),
        ("card 4111 1111 1111 1111 ok", "4111 1111 1111 1111"),
        ("5500-0000-0000-0004", "5500-0000-0000-0004"),
        ("378282246310005", "378282246310005"),
    ],
)
def test_secret_shaped_values_are_masked_under_any_name(
    masker: SecretMasker, value: str, secret: str
) -> None:
    (masked,) = masker.mask_mapping([("note", value)])
    assert secret not in masked[1]
    assert MASK in masked[1]
    assert secret not in json.dumps(masker.mask_json({"comment": [value]}))


@pytest.mark.parametrize(
    "value",
    [
        "4111111111111112",  # fails the Luhn check
        "1700000000000",  # a timestamp in milliseconds: no card prefix
        "1700000000000000000",  # and in nanoseconds
        "order 12345",
        "Bearer",
        "0af7651916cd43dd8448eb211c80319c",  # a trace id
        "eyJ alone",
    ],
)
def test_harmless_values_stay(masker: SecretMasker, value: str) -> None:
    assert masker.mask_value(value) == value


def test_card_numbers_as_json_numbers_are_masked(masker: SecretMasker) -> None:
    assert masker.mask_json({"n": 4111111111111111, "ts": 1700000000000, "ok": True}) == {
        "n": MASK,
        "ts": 1700000000000,
        "ok": True,
    }


def test_value_patterns_extend_the_scanner() -> None:
    masker = SecretMasker(value_patterns=[r"\bACME-[0-9]{6}\b", r"ref=(?P<secret>\w+)"])
    assert masker.mask_value("licence ACME-123456 ok") == f"licence {MASK} ok"
    assert masker.mask_value("see ref=abc1 now") == f"see ref={MASK} now"
    assert masker.mask_value(JWT) == MASK  # the built-in shapes still apply


# --- GraphQL inline arguments and key: value text ---------------------------------------

GRAPHQL_LOGIN = (
    'mutation { login(username: "ada", password: "S3crGraphQl1") { token } '
    "verify(pin: 4321, otp: '998877') { ok } }"
)


def test_graphql_inline_arguments_under_secret_names_are_masked(masker: SecretMasker) -> None:
    masked = masker.mask_value(GRAPHQL_LOGIN)
    assert masked == (
        f'mutation {{ login(username: "ada", password: "{MASK}") {{ token }} '
        f"verify(pin: {MASK}, otp: '{MASK}') {{ ok }} }}"
    )


def test_graphql_block_string_and_variables_definitions(masker: SecretMasker) -> None:
    query = 'mutation($id: ID!) { reset(id: $id, secret: """S3cr\nBlock""") { ok } }'
    assert masker.mask_value(query) == (
        f'mutation($id: ID!) {{ reset(id: $id, secret: """{MASK}""") {{ ok }} }}'
    )


def test_graphql_in_a_json_body_and_in_a_query_string(masker: SecretMasker) -> None:
    body = masker.mask_json({"query": GRAPHQL_LOGIN, "variables": {"password": "v"}})
    assert "S3crGraphQl1" not in json.dumps(body)
    assert '"ada"' in body["query"]
    url = "/graphql?query=mutation%20%7Blogin(password%3A%20%22S3crGraphQl1%22)%7D"
    assert "S3crGraphQl1" not in masker.mask_url(url)


def test_json_held_in_a_string_is_masked(masker: SecretMasker) -> None:
    masked = masker.mask_value('{"user": "ada", "password": "S3crJsonText1"}')
    assert masked == f'{{"user": "ada", "password": "{MASK}"}}'


@settings(max_examples=200)
@given(
    name=st.sampled_from(["token", "access_token", "code", "sig", "pw", "password"]),
    wrappers=st.lists(
        st.sampled_from(["query", "fragment", "encoded", "absolute", "form"]), max_size=4
    ),
)
def test_a_secret_parameter_nested_in_redirects_never_survives(name: str, wrappers) -> None:
    value = f"{name}={SECRET}"
    for wrapper in wrappers:
        if wrapper == "query":
            value = f"/cb?next={value}" if "=" not in value else f"/cb?x=1&{value}"
        elif wrapper == "fragment":
            value = f"/cb#{value}"
        elif wrapper == "encoded":
            value = f"/go?redirect={quote(value, safe='')}"
        elif wrapper == "absolute":
            value = (
                f"https://example.com/login?state=1&{value}"
                if value[0] != "/"
                else (f"https://example.com{value}")
            )
        else:
            value = f"return_to={quote(value, safe='')}"
    assert SECRET not in SecretMasker().mask_value(value)


def test_mask_value_patterns_is_a_setting_checked_at_start_up() -> None:
    from otel_wpm.config import Config, ConfigError

    config = Config.from_env({"WPM_MASK_VALUE_PATTERNS": r'["\\bACME-[0-9]{6}\\b", "x{1,2}"]'})
    assert config.mask_value_patterns == (r"\bACME-[0-9]{6}\b", "x{1,2}")
    with pytest.raises(ConfigError, match=r"WPM_MASK_VALUE_PATTERNS .*'\(unclosed'"):
        Config.from_env({"WPM_MASK_VALUE_PATTERNS": "(unclosed"})
    with pytest.raises(ConfigError, match="mask_value_patterns"):
        Config(mask_value_patterns=["[z-a]"])


def test_basic_followed_by_a_word_stays_bearer_never_does(masker: SecretMasker) -> None:
    assert masker.mask_value("Basic configuration needed") == "Basic configuration needed"
    assert masker.mask_value("Bearer abc.def") == f"Bearer {MASK}"
    assert SecretMasker.mask_text("401 for Authorization: Bearer abc.def", []) == (
        f"401 for Authorization: Bearer {MASK}"
    )
