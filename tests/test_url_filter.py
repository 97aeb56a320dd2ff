"""UrlFilter: the black-list the processor matches requests against, edited at runtime."""

from __future__ import annotations

import logging

import pytest

from otel_wpm.capture.url_filter import UrlFilter, pattern_error


def test_matches_the_full_url_or_its_path() -> None:
    url_filter = UrlFilter([r"^/health$", r"static\.example\.com"])
    assert url_filter.matches("http://app/health")
    assert url_filter.matches("http://static.example.com/logo.png")
    assert url_filter.matches("http://app/x", path="/health")
    assert not url_filter.matches("http://app/healthy")


def test_add_and_remove() -> None:
    url_filter = UrlFilter()
    assert url_filter.add("^/export")
    assert url_filter.matches("http://app/export/1")
    assert url_filter.remove("^/export")
    assert not url_filter.remove("^/export")
    assert not url_filter.matches("http://app/export/1")
    assert url_filter.patterns == ()


def test_disabled_matches_nothing_and_keeps_its_patterns() -> None:
    url_filter = UrlFilter(["^/health"], enabled=False)
    url_filter.add("^/metrics")
    assert not url_filter.matches("http://app/health")
    assert not url_filter.matches("http://app/metrics")
    assert url_filter.patterns == ("^/health", "^/metrics")


def test_invalid_pattern_is_refused_by_add_and_skipped_when_configured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_wpm"):
        url_filter = UrlFilter(["(unclosed-filter", "^/ok"])
        assert not url_filter.add("[bad-filter")
    assert "(unclosed-filter" in caplog.text and "[bad-filter" in caplog.text
    assert url_filter.patterns == ("(unclosed-filter", "^/ok")
    assert url_filter.matches("http://app/ok")
    assert pattern_error("(x") is not None and pattern_error("^/ok") is None


def test_follow_takes_a_new_configuration_and_keeps_runtime_changes() -> None:
    running = UrlFilter(["^/a", "^/b"])
    running.add("^/runtime")
    running.remove("^/a")
    running.follow(UrlFilter(["^/a", "^/c"]))
    # ^/a stays removed, ^/runtime stays added, ^/b left the configuration, ^/c joined it.
    assert running.patterns == ("^/c", "^/runtime")
    running.follow(UrlFilter(["^/c"], enabled=False))
    assert not running.enabled
    assert not running.matches("http://app/runtime")


def test_follow_after_no_change_is_a_no_op() -> None:
    running = UrlFilter(["^/a"])
    running.add("^/b")
    running.follow(running)
    running.follow(UrlFilter(["^/a"]))
    assert running.patterns == ("^/a", "^/b")
