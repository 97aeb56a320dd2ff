"""Make pyinstrument's page load nothing from the network.

Usage::

    page = offline(HTMLRenderer().render(session))

A report is opened from a file, from a chat attachment or from the report
server, and must contact no one. pyinstrument's viewer adds a stylesheet link
to Google Fonts: every quoted address of a font service in the page is emptied
(a link with an empty ``href`` fetches nothing) and ``@import`` rules naming one
are dropped; the viewer then falls back on the system fonts its CSS names. A
Content-Security-Policy in the page's ``<head>`` forbids loading anything else
from anywhere, so whatever a later pyinstrument adds is not fetched either.
"""

from __future__ import annotations

import re

_FONT_SERVICE = r"(?:https?:)?//fonts\.(?:googleapis|gstatic)\.com"
_FONT_IMPORT = re.compile(r"@import\s+(?:url\(\s*)?['\"]?" + _FONT_SERVICE + r"[^;]*;")
_FONT_ADDRESS = re.compile(r"(['\"])" + _FONT_SERVICE + r"[^'\"]*\1")

#: Inline scripts and styles (the viewer's) and data: images (its icon); nothing to fetch.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)
_POLICY_ELEMENT = f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
_HEAD = re.compile(r"<head>", re.IGNORECASE)


def offline(page: str) -> str:
    """``page`` without addresses of font services, and forbidden to load anything."""
    page = _FONT_IMPORT.sub("", page)
    page = _FONT_ADDRESS.sub(r"\1\1", page)
    return _HEAD.sub(lambda head: head.group() + _POLICY_ELEMENT, page, count=1)
