"""Database statements with their literals masked: what stays, what goes, and no secret shown."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_wpm.reporting.statement import mask_statement


@pytest.mark.parametrize(
    ("statement", "masked"),
    [
        (
            "SELECT * FROM users WHERE email = 'ann@example.com' AND id > 42",
            "SELECT * FROM users WHERE email = ? AND id > ?",
        ),
        ("select 'it''s', t1.x from t1", "select ?, t1.x from t1"),
        (
            "WHERE a = -5.5e3 AND b IN (1, 2, 0x1F) AND c = .5",
            "WHERE a = -? AND b IN (?, ?, ?) AND c = ?",
        ),
        # placeholders and identifiers with digits stay
        ("WHERE c = $1 AND d = :name AND e = %s AND f = ? AND g = @p1", None),
        ('SELECT "Password" FROM `my table`', "SELECT ? FROM `my table`"),
        ("SELECT $$hunter2$$, $t$hunter2$t$ FROM x", "SELECT ?, ? FROM x"),
        ("SELECT X'DEADBEEF', N'name'", "SELECT X?, N?"),
        # comments go: sqlcommenter tags and forgotten notes alike
        (
            "SELECT 1 /* password=hunter2 */ FROM t -- token hunter2\nWHERE x",
            "SELECT ? FROM t WHERE x",
        ),
        # a backslash inside a literal: escaped in some databases, not in others
        (r"SELECT 'C:\' , 'hunter2' FROM t", "SELECT ?"),
        ("SELECT * FROM t WHERE p = 'hunter2", "SELECT * FROM t WHERE p = ?"),
        ("  SELECT\n\t1  ", "SELECT ?"),
    ],
)
def test_literals_are_masked_and_the_rest_stays(statement: str, masked: str | None) -> None:
    assert mask_statement(statement) == (masked if masked is not None else statement)


SQL_TEXT = st.text(
    alphabet=st.sampled_from(list("SELECTFROMWHEREand or=<>(),.*;_- \n\t\\$/#%?:@0123456789xyz")),
    max_size=40,
)
SECRET = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).map(
    lambda text: f"S3cr3t{text}"
)


@given(before=SQL_TEXT, secret=SECRET, after=SQL_TEXT, quote=st.sampled_from(["'", '"']))
def test_a_secret_in_a_literal_never_shows(
    before: str, secret: str, after: str, quote: str
) -> None:
    escaped = secret.replace(quote, quote * 2)  # as SQL writes a quote inside a literal
    statement = f"{before} {quote}{escaped}{quote} {after}"
    assert "S3cr3t" not in mask_statement(statement)


@given(before=SQL_TEXT, secret=SECRET, after=SQL_TEXT, tag=st.sampled_from(["", "x", "body"]))
def test_a_secret_in_a_dollar_quoted_literal_never_shows(
    before: str, secret: str, after: str, tag: str
) -> None:
    statement = f"{before} ${tag}${secret.replace('$', '')}${tag}$ {after}"
    assert "S3cr3t" not in mask_statement(statement)
