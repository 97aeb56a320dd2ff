"""Request parameters for a report: query, form fields and JSON body, secrets masked."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Optional
from urllib.parse import parse_qsl

from ..capture.request import RawRequest
from ..masking import SecretMasker

_NO_JSON = object()


@dataclass(frozen=True)
class RequestParams:
    query: list[tuple[str, Any]] = field(default_factory=list)
    form: list[tuple[str, Any]] = field(default_factory=list)
    json_body: Any = None
    has_json: bool = False
    headers: list[tuple[str, Any]] = field(default_factory=list)
    body_note: str = ""


def _parse_pairs(text: str) -> list[tuple[str, str]]:
    return parse_qsl(text, keep_blank_values=True, errors="replace")


def _multipart_fields(content_type: str, body: bytes) -> list[tuple[str, str]]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace") + body
    )
    fields = []
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition") or "?"
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        if filename is not None:
            fields.append((str(name), f"<file {filename!r}, {len(payload)} bytes>"))
        else:
            fields.append((str(name), payload.decode("utf-8", "replace")))
    return fields


def _body_params(raw: RawRequest, masker: SecretMasker) -> tuple[list[tuple[str, Any]], Any]:
    media_type = raw.content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        return masker.mask_mapping(_parse_pairs(raw.body.decode("latin-1"))), _NO_JSON
    if media_type == "multipart/form-data":
        return masker.mask_mapping(_multipart_fields(raw.content_type, raw.body)), _NO_JSON
    if media_type == "application/json" or media_type.endswith("+json"):
        return [], masker.mask_json(json.loads(raw.body.decode("utf-8")))
    return [], _NO_JSON


def _body_note(raw: RawRequest, parsed: bool, error: Optional[str]) -> str:
    if raw.body_bytes_read == 0:
        return "The application read no request body."
    note = f"The application read {raw.body_bytes_read} bytes of body"
    if raw.body_truncated:
        note += f"; the first {len(raw.body)} were kept"
    if error:
        return f"{note}; it could not be parsed ({error})."
    if not parsed:
        return f"{note} ({raw.content_type or 'no content type'}), not shown."
    return note + "."


def request_params(raw: RawRequest, masker: SecretMasker) -> RequestParams:
    """Everything the report shows of a request, masked."""
    form: list[tuple[str, Any]] = []
    json_body: Any = _NO_JSON
    error = None
    if raw.body:
        try:
            form, json_body = _body_params(raw, masker)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            error = type(exc).__name__
    return RequestParams(
        query=masker.mask_mapping(_parse_pairs(raw.query)),
        form=form,
        json_body=None if json_body is _NO_JSON else json_body,
        has_json=json_body is not _NO_JSON,
        headers=masker.mask_mapping(raw.headers),
        body_note=_body_note(raw, bool(form) or json_body is not _NO_JSON, error),
    )
