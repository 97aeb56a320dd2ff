"""Hide secrets before anything taken from a request is written anywhere.

Usage::

    from otel_wpm.masking import MASK, SecretMasker

    masker = SecretMasker.from_env(extra_keys=["ssn"])
    masker.is_secret("X-Api-Key")                        # True
    masker.mask_mapping({"Authorization": "Bearer abc", "Accept": "*/*"})
    # [("Authorization", "[MASKED]"), ("Accept", "*/*")]
    masker.mask_json({"user": {"name": "ann", "password": "hunter2"}})
    # {"user": {"name": "ann", "password": "[MASKED]"}}
    masker.mask_url("https://bob:pw@example.com/a?token=abc&page=2")
    # "https://[MASKED]@example.com/a?token=[MASKED]&page=2"
    masker.mask_text("login failed for token abcd1234", ["abcd1234"])
    # "login failed for token [MASKED]"
    masker.mask_text("echoed header: Authorization: Bearer abc.def", [])
    # "echoed header: Authorization: Bearer [MASKED]"

A name is secret when it *contains* one of the built-in words (``password``,
``token``, ``auth``, ``key``, ``cookie``, ``session`` ...) or one of the extra
keys, case-insensitively, or when one of the OpenTelemetry sanitize patterns
matches it. Substring matching deliberately over-masks: ``monkey`` and
``author`` count as secret too, because showing a secret costs more than hiding
a harmless value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Union
from urllib.parse import unquote_plus

from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
    get_custom_headers,
)

__all__ = ["MASK", "TOO_DEEP", "MAX_JSON_DEPTH", "SecretMasker"]

_log = logging.getLogger(__name__)

MASK = "[MASKED]"
TOO_DEEP = "[TOO DEEP]"
MAX_JSON_DEPTH = 64
MIN_SECRET_TEXT_LENGTH = 4

BUILTIN_SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "token",
    "auth",
    "key",
    "secret",
    "credential",
    "cookie",
    "session",
    "csrf",
    "signature",
    "bearer",
)

_BUILTIN_SECRET_RE = re.compile("|".join(BUILTIN_SECRET_WORDS), re.IGNORECASE)
_URL_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_HOST_HEADER_RE = re.compile(r"(?:^|[-_])host$", re.IGNORECASE)
#: ``Bearer`` and its token (RFC 6750's token68 characters).
_BEARER_CREDENTIALS_RE = re.compile(r"(bearer\s+)[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)

Pairs = Union[Mapping[str, Any], Iterable[tuple[str, Any]]]


class SecretMasker:
    """Decides which names hold secrets and masks their values."""

    def __init__(self, extra_keys: Iterable[str] = (), sanitize_patterns: Iterable[str] = ()):
        words = [re.escape(key.lower()) for key in extra_keys if key]
        self._extra_re = re.compile("|".join(words), re.IGNORECASE) if words else None
        self._sanitize_re = _compile_sanitize_patterns(sanitize_patterns)

    @classmethod
    def from_env(cls, extra_keys: Iterable[str] = ()) -> SecretMasker:
        """Also honour OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS."""
        patterns = get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)
        return cls(extra_keys=extra_keys, sanitize_patterns=patterns)

    def is_secret(self, name: str) -> bool:
        """Whether values under ``name`` (a header, parameter or JSON key) must be hidden.

        Header names may be given as sent (``X-Api-Key``) or WSGI-style
        (``HTTP_X_API_KEY``); sanitize patterns are tried against both spellings.
        """
        if _BUILTIN_SECRET_RE.search(name):
            return True
        if self._extra_re is not None and self._extra_re.search(name):
            return True
        if self._sanitize_re is not None:
            return any(self._sanitize_re.search(spelling) for spelling in _header_spellings(name))
        return False

    def mask_mapping(self, items: Pairs) -> list[tuple[str, Any]]:
        """Mask a headers/form/query mapping, keeping repeated keys and their order."""
        pairs = items.items() if isinstance(items, Mapping) else items
        return [(key, self._mask_value(key, value, depth=0)) for key, value in pairs]

    def mask_json(self, value: Any) -> Any:
        """Copy of a decoded JSON document with values under secret keys masked.

        Containers nested deeper than MAX_JSON_DEPTH are replaced by TOO_DEEP, which
        also keeps self-referencing structures from looping.
        """
        return self._mask_json(value, depth=0)

    def mask_query(self, query: str) -> str:
        """Mask the values of secret parameters in a raw query string; keep the rest as is."""
        if not query:
            return query
        return "&".join(self._mask_query_part(part) for part in query.split("&"))

    def mask_url(self, url: str) -> str:
        """Hide the userinfo (``user:pass@`` -> ``[MASKED]@``) and secret query values."""
        authority_start = _authority_start(url)
        if authority_start is not None:
            url = _mask_userinfo(url, authority_start)
        rest, hash_sign, fragment = url.partition("#")
        base, question_mark, query = rest.partition("?")
        masked = base + question_mark + self.mask_query(query)
        if hash_sign:
            # Fragments can carry tokens too (OAuth implicit flow: #access_token=...).
            masked += hash_sign + (self.mask_query(fragment) if "=" in fragment else fragment)
        return masked

    @staticmethod
    def mask_text(text: str, secrets: Iterable[str]) -> str:
        """Replace every literal occurrence of each known secret value in free text,
        and whatever follows ``Bearer`` (an ``Authorization`` header echoed in an error).

        Values shorter than MIN_SECRET_TEXT_LENGTH are skipped: masking every
        ``a`` or ``12`` would shred the text without protecting anything.
        """
        usable = {s for s in secrets if s and len(s) >= MIN_SECRET_TEXT_LENGTH}
        # Longest first, so a secret containing another one is masked whole.
        for secret in sorted(usable, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return _BEARER_CREDENTIALS_RE.sub(rf"\g<1>{MASK}", text)

    def _mask_value(self, key: Any, value: Any, depth: int) -> Any:
        if self.is_secret(str(key)):
            return MASK
        if isinstance(value, str):
            # A URL anywhere (Referer, ?next=, a JSON field) can carry user:pass@ and
            # secret query values; a Host header can carry userinfo on its own.
            if _URL_SCHEME_RE.match(value):
                return self.mask_url(value)
            if "@" in value and _HOST_HEADER_RE.search(str(key)):
                return f"{MASK}@{value.rpartition('@')[2]}"
        return self._mask_json(value, depth)

    def _mask_json(self, value: Any, depth: int) -> Any:
        if not isinstance(value, (dict, list, tuple)):
            return value
        if depth >= MAX_JSON_DEPTH:
            return TOO_DEEP
        if isinstance(value, dict):
            return {key: self._mask_value(key, item, depth + 1) for key, item in value.items()}
        return [self._mask_json(item, depth + 1) for item in value]

    def _mask_query_part(self, part: str) -> str:
        raw_name, equals, raw_value = part.partition("=")
        if not equals or not raw_value:
            return part
        name = unquote_plus(raw_name, errors="replace")
        return f"{raw_name}={MASK}" if self.is_secret(name) else part


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


def _authority_start(url: str) -> int | None:
    if url.startswith("//"):
        return 2
    scheme = _URL_SCHEME_RE.match(url)
    return scheme.end() if scheme else None


def _mask_userinfo(url: str, authority_start: int) -> str:
    end = len(url)
    for delimiter in "/?#":
        found = url.find(delimiter, authority_start)
        if found != -1:
            end = min(end, found)
    authority = url[authority_start:end]
    if "@" not in authority:
        return url
    # rpartition: an unescaped "@" inside the password must not leak its tail.
    host = authority.rpartition("@")[2]
    return f"{url[:authority_start]}{MASK}@{host}{url[end:]}"
