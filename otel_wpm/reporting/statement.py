"""A database statement with its literals masked, as OpenTelemetry's DB sanitisers do.

Usage::

    from otel_wpm.reporting.statement import mask_statement

    mask_statement("SELECT * FROM users WHERE email = 'ann@example.com' AND id > 42")
    # "SELECT * FROM users WHERE email = ? AND id > ?"

String literals (``'...'``, ``"..."``, ``$tag$...$tag$``, ``X'...'`` keeps its
``X``) and numbers become ``?``; comments are dropped; identifiers (also in
backticks), keywords, operators and placeholders (``?``, ``%s``, ``$1``,
``:name``) stay. Double
quotes may delimit identifiers or strings depending on the database, so they
are masked too. Where a literal cannot be delimited for certain (a backslash
inside it, which some databases read as an escape and others not, or no closing
quote), everything from its opening quote on is masked: a secret in a literal
never shows, at the cost of some of the statement.
"""

from __future__ import annotations

import re

MASK = "?"

_STATEMENT_TOKENS = re.compile(
    r"""
      (?P<comment> --[^\n]* | /\*.*?(?:\*/|\Z) )
    | (?P<name> `[^`]*` )
    | (?P<dollar> \$\$ .*? (?:\$\$|\Z) | \$(?P<tag>[A-Za-z_]\w*)\$ .*? (?:\$(?P=tag)\$|\Z) )
    | (?P<single> '(?:[^'\\]|'')*' (?!') )
    | (?P<double> "(?:[^"\\]|"")*" (?!") )
    | (?P<unsure> ['"] .* )
    | (?P<number> (?<![\w$.:@]) (?: 0[xX][0-9a-fA-F]+ | (?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)? ) )
    """,
    re.VERBOSE | re.DOTALL,
)


def _masked(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "comment":
        return " "
    return match.group() if kind == "name" else MASK


def mask_statement(statement: str) -> str:
    """``statement`` with every literal replaced by ``?`` and its whitespace collapsed."""
    return " ".join(_STATEMENT_TOKENS.sub(_masked, statement).split())
