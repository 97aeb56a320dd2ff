"""Hide secrets before anything taken from a request is written anywhere.

Usage::

    from otel_wpm.masking import MASK, SecretMasker

    masker = SecretMasker.from_env(extra_keys=["ssn"], value_patterns=[r"\bACME-[0-9]{8}\b"])
    masker.is_secret("X-Api-Key")                        # True
    masker.mask_mapping({"Authorization": "Bearer abc", "Accept": "*/*"})
    # [("Authorization", "[MASKED]"), ("Accept", "*/*")]
    masker.mask_json({"user": {"name": "ann", "password": "hunter2"}})
    # {"user": {"name": "ann", "password": "[MASKED]"}}
    masker.mask_url("https://bob:pw@example.com/a?token=abc&page=2")
    # "https://[MASKED]@example.com/a?token=[MASKED]&page=2"
    masker.mask_value("/cb?next=%2Fhome%3Faccess_token%3Dabc")
    # "/cb?next=/home?access_token=[MASKED]"
    masker.mask_text("login failed for token abcd1234", ["abcd1234"])
    # "login failed for token [MASKED]"
    masker.mask_text("echoed header: Authorization: Bearer abc.def", [])
    # "echoed header: Authorization: Bearer [MASKED]"

Which names are secret (case-insensitively):

* a name that *contains* one of :data:`SECRET_SUBSTRINGS` (``password``,
  ``token``, ``auth``, ``key``, ``cookie``, ``session``, ``jwt``, ``cvv`` ...)
  or one of the extra keys. Substring matching deliberately over-masks:
  ``monkey`` and ``author`` count as secret too, because showing a secret
  costs more than hiding a harmless value;
* a name with one of :data:`SECRET_WORDS` as a whole word (``pw``, ``pin``,
  ``sig``, ``otp``, ``pass`` ...): these are too short to match inside other
  words (``pinned``, ``spinach``, ``signal``, ``bypass`` stay visible). Words
  are split at non-letters and camelCase humps: ``newPin``, ``user_pw``,
  ``OTPCode`` are secret;
* a name that *is* one of :data:`SECRET_NAMES`: ``code`` (the OAuth
  authorization code) and the query parameters OpenTelemetry redacts in
  ``url.query``. ``country_code`` or ``status_code`` stay visible;
* a name one of the OpenTelemetry sanitize patterns matches
  (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS``).

Values are also looked into, whatever their name (:meth:`SecretMasker.mask_value`):

* URLs anywhere in a value, absolute or relative: ``user:pass@`` and the
  values of secret parameters after ``?``, ``&``, ``#`` or ``;``;
* inline arguments and ``key: value`` text, such as GraphQL's
  ``login(password: "...")`` or JSON held in a string, under a secret name;
* secrets recognisable by their shape (:data:`SECRET_VALUE_PATTERNS`): JSON
  Web Tokens, ``Bearer``/``Basic`` credentials, private-key blocks, AWS access
  key ids, well-known API token prefixes, and card numbers (13 to 19 digits
  with a card prefix that pass the Luhn check), plus the ``value_patterns``
  given (the ``mask_value_patterns`` setting);
* the same again after percent-decoding, so ``%2Fcb%3Ftoken%3D...`` is caught:
  a value where something was found only once decoded is shown decoded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Union
from urllib.parse import unquote, unquote_plus

from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
    PARAMS_TO_REDACT,
    get_custom_headers,
)

__all__ = ["MASK", "TOO_DEEP", "MAX_JSON_DEPTH", "SecretMasker"]

_log = logging.getLogger(__name__)

MASK = "[MASKED]"
TOO_DEEP = "[TOO DEEP]"
MAX_JSON_DEPTH = 64
MIN_SECRET_TEXT_LENGTH = 4
#: How many layers of percent-encoding and of parameters inside parameter values
#: are looked through.
MAX_NESTING = 8

# From the default lists of OpenTelemetry, Elastic APM (sanitize_field_names) and
# Sentry (EventScrubber's denylist), for names long enough to match inside others.
SECRET_SUBSTRINGS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "token",
    "auth",
    "key",
    "secret",
    "credential",
    "cookie",
    "session",
    "sessid",
    "csrf",
    "xsrf",
    "signature",
    "bearer",
    "jwt",
    "cvv",
    "cvc",
    "credit",
)
#: Short words, secret only as a whole word of the name.
SECRET_WORDS = frozenset(
    {"pw", "pass", "pin", "sig", "otp", "totp", "hotp", "mfa", "sid", "card", "ccv"}
)
#: Secret only as the whole name.
SECRET_NAMES = frozenset({"code", *(name.lower() for name in PARAMS_TO_REDACT)})

# Shapes of secrets. A pattern with a group named "secret" has only that group masked.
SECRET_VALUE_PATTERNS = (
    # JSON Web Tokens: a base64url JSON header ('{"' is "eyJ"), payload and signature.
    r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    # RFC 6750's token68 after "Bearer"; after "Basic", only text with a digit, "+/=" or
    # an upper case letter past its first character ("Basic configuration" is a word).
    r"(?i:\bbearer\s+)(?P<secret>[A-Za-z0-9._~+/-]+=*)",
    r"(?i:\bbasic\s+)(?P<secret>[\w.~+/=-](?=[\w.~+/=-]*[0-9A-Z+/=])[\w.~+/=-]{7,})",
    # A private key block, also one cut short by the body size limit.
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}",  # GitHub
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",  # Slack
    r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
    r"\bAIza[0-9A-Za-z_-]{35}",  # Google API keys
)

_SUBSTRING_RE = re.compile("|".join(SECRET_SUBSTRINGS), re.IGNORECASE)
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_LETTERS = re.compile(r"[a-z]+")
_HOST_HEADER_RE = re.compile(r"(?:^|[-_])host$", re.IGNORECASE)
# "scheme://" or "//", then an authority holding "@" (the last "@" ends the userinfo).
_USERINFO_RE = re.compile(r"((?:\b[A-Za-z][A-Za-z0-9+.\-]*:)?//)([^/?#@\s]*(?:@[^/?#@\s]*)*)@")
# "name=value" at the start or after "?", "&", "#" or ";" (query, fragment, matrix).
_PARAMETER_RE = re.compile(r"(^|[?&#;]\s*)([^=&?#;\s]*)=([^&#;\s]*)")
# 'name: "value"' (GraphQL arguments, JSON or YAML inside a string), the name maybe quoted.
_INLINE_ARGUMENT_RE = re.compile(
    r"(?<![\w$.-])(?P<name>[A-Za-z_][\w-]*)(?P<quote>[\"']?)\s*:\s*"
    r"(?P<value>\"\"\"[\s\S]*?\"\"\"|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s,;)}\]\"']+)"
)
_QUOTE_RE = re.compile(r'"""|"|\'')
_CARD_NUMBER_RE = re.compile(r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d])")
# Issuer prefixes: Visa, Mastercard, Amex, Diners, JCB, Discover, UnionPay, Maestro.
_CARD_PREFIX_RE = re.compile(r"4|5[0-8]|2[2-7]|3[0-9]|6")

Pairs = Union[Mapping[str, Any], Iterable[tuple[str, Any]]]


def _compile_value_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """The built-in shapes, then ``patterns`` (checked by Config when they are settings)."""
    return tuple(re.compile(pattern) for pattern in (*SECRET_VALUE_PATTERNS, *patterns))


_BUILTIN_VALUE_PATTERNS = _compile_value_patterns(())


class SecretMasker:
    """Decides which names hold secrets and masks their values."""

    def __init__(
        self,
        extra_keys: Iterable[str] = (),
        sanitize_patterns: Iterable[str] = (),
        value_patterns: Iterable[str] = (),
    ):
        words = [re.escape(key.lower()) for key in extra_keys if key]
        self._extra_re = re.compile("|".join(words), re.IGNORECASE) if words else None
        self._sanitize_re = _compile_sanitize_patterns(sanitize_patterns)
        value_patterns = list(value_patterns)
        self._value_patterns = (
            _compile_value_patterns(value_patterns) if value_patterns else _BUILTIN_VALUE_PATTERNS
        )

    @classmethod
    def from_env(
        cls, extra_keys: Iterable[str] = (), value_patterns: Iterable[str] = ()
    ) -> SecretMasker:
        """Also honour OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS."""
        patterns = get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)
        return cls(extra_keys, patterns, value_patterns)

    def is_secret(self, name: str) -> bool:
        """Whether values under ``name`` (a header, parameter or JSON key) must be hidden.

        Header names may be given as sent (``X-Api-Key``) or WSGI-style
        (``HTTP_X_API_KEY``); sanitize patterns are tried against both spellings.
        """
        if _SUBSTRING_RE.search(name):
            return True
        if self._extra_re is not None and self._extra_re.search(name):
            return True
        if name.lower() in SECRET_NAMES or not SECRET_WORDS.isdisjoint(_words_of(name)):
            return True
        if self._sanitize_re is not None:
            return any(self._sanitize_re.search(spelling) for spelling in _header_spellings(name))
        return False

    def mask_mapping(self, items: Pairs) -> list[tuple[str, Any]]:
        """Mask a headers/form/query mapping, keeping repeated keys and their order."""
        pairs = items.items() if isinstance(items, Mapping) else items
        return [(key, self._mask_item(key, value, depth=0)) for key, value in pairs]

    def mask_json(self, value: Any) -> Any:
        """Copy of a decoded JSON document with values under secret keys masked.

        Every string in it is looked into too (:meth:`mask_value`). Containers
        nested deeper than MAX_JSON_DEPTH are replaced by TOO_DEEP, which also
        keeps self-referencing structures from looping.
        """
        return self._mask_json(value, depth=0)

    def mask_query(self, query: str) -> str:
        """Mask the values of secret parameters in a raw query string; keep the rest as is."""
        return self.mask_value(query)

    def mask_url(self, url: str) -> str:
        """Hide the userinfo (``user:pass@`` -> ``[MASKED]@``) and secret query values.

        Fragments are masked too: they can carry tokens (OAuth implicit flow:
        ``#access_token=...``).
        """
        return self.mask_value(url)

    def mask_value(self, text: str) -> str:
        """``text`` with every secret found in it masked, whatever name it came under.

        See the module docstring for what is looked for.
        """
        return self._mask_value(text, 0)

    @staticmethod
    def mask_text(text: str, secrets: Iterable[str]) -> str:
        """Replace every literal occurrence of each known secret value in free text,
        and every secret shape (:data:`SECRET_VALUE_PATTERNS`: a ``Bearer`` credential
        of an ``Authorization`` header echoed in an error, a JWT, a key ...).

        Values shorter than MIN_SECRET_TEXT_LENGTH are skipped: masking every
        ``a`` or ``12`` would shred the text without protecting anything.
        """
        usable = {s for s in secrets if s and len(s) >= MIN_SECRET_TEXT_LENGTH}
        # Longest first, so a secret containing another one is masked whole.
        for secret in sorted(usable, key=len, reverse=True):
            text = text.replace(secret, MASK)
        for pattern in _BUILTIN_VALUE_PATTERNS:
            text = pattern.sub(_masked_match, text)
        return text

    def _mask_value(self, text: str, depth: int) -> str:
        masked = _USERINFO_RE.sub(_masked_userinfo, text)
        for pattern in self._value_patterns:
            masked = pattern.sub(_masked_match, masked)
        masked = _CARD_NUMBER_RE.sub(_masked_card_number, masked)
        masked = _INLINE_ARGUMENT_RE.sub(self._masked_argument, masked)
        masked = _PARAMETER_RE.sub(lambda match: self._masked_parameter(match, depth), masked)
        if "%" in masked and depth < MAX_NESTING:
            decoded = unquote(masked, errors="replace")
            if decoded != masked:
                decoded_masked = self._mask_value(decoded, depth + 1)
                if decoded_masked != decoded:
                    return decoded_masked  # a secret hid behind percent-encoding
        return masked

    def _masked_parameter(self, match: re.Match[str], depth: int) -> str:
        separator, raw_name, raw_value = match.groups()
        if not raw_value:
            return match.group()
        if self.is_secret(unquote_plus(raw_name, errors="replace")):
            return f"{separator}{raw_name}={MASK}"
        if "=" in raw_value and depth < MAX_NESTING:  # a value holding parameters itself
            return f"{separator}{raw_name}={self._mask_value(raw_value, depth + 1)}"
        return match.group()

    def _masked_argument(self, match: re.Match[str]) -> str:
        if not self.is_secret(match["name"]):
            return match.group()
        quote = _QUOTE_RE.match(match["value"])
        quotes = quote.group() if quote else ""
        return _with_group_replaced(match, "value", f"{quotes}{MASK}{quotes}")

    def _mask_item(self, key: Any, value: Any, depth: int) -> Any:
        if self.is_secret(str(key)):
            return MASK
        if isinstance(value, str) and "@" in value and _HOST_HEADER_RE.search(str(key)):
            # A Host header can carry userinfo on its own, without a scheme.
            value = f"{MASK}@{value.rpartition('@')[2]}"
        return self._mask_json(value, depth)

    def _mask_json(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self._mask_value(value, 0)
        if isinstance(value, int) and not isinstance(value, bool):
            return MASK if _is_card_number(str(value)) else value
        if not isinstance(value, (dict, list, tuple)):
            return value
        if depth >= MAX_JSON_DEPTH:
            return TOO_DEEP
        if isinstance(value, dict):
            return {key: self._mask_item(key, item, depth + 1) for key, item in value.items()}
        return [self._mask_json(item, depth + 1) for item in value]


def _words_of(name: str) -> list[str]:
    """``"newPin"`` -> ``["new", "pin"]``; ``"X_OTPCode"`` -> ``["x", "otp", "code"]``."""
    return _LETTERS.findall(_CAMEL_HUMP.sub("_", name).lower())


def _masked_userinfo(match: re.Match[str]) -> str:
    return f"{match[1]}{MASK}@"


def _masked_match(match: re.Match[str]) -> str:
    if "secret" not in match.re.groupindex or match["secret"] is None:
        return MASK
    return _with_group_replaced(match, "secret", MASK)


def _with_group_replaced(match: re.Match[str], group: str, replacement: str) -> str:
    start, end = match.span(group)
    offset = match.start()
    text = match.group()
    return f"{text[: start - offset]}{replacement}{text[end - offset :]}"


def _masked_card_number(match: re.Match[str]) -> str:
    return MASK if _is_card_number(match.group()) else match.group()


def _is_card_number(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX_RE.match(digits)) and _passes_luhn(digits)


def _passes_luhn(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _compile_sanitize_patterns(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex like OpenTelemetry builds; invalid patterns are skipped."""
    valid = []
    for pattern in patterns:
        pattern = pattern.strip()
        if not pattern:
            continue  # an empty alternative would match every name
        try:
            re.compile(pattern)
        except re.error as err:
            _log.warning("ignoring invalid sanitize pattern %r: %s", pattern, err)
            continue
        valid.append(f"(?:{pattern})")
    return re.compile("|".join(valid), re.IGNORECASE) if valid else None


def _header_spellings(name: str) -> tuple[str, ...]:
    dashed = name.replace("_", "-")
    if dashed.upper().startswith("HTTP-"):
        return (name, dashed, dashed[len("HTTP-") :])
    return (name, dashed)
