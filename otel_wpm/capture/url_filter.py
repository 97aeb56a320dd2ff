"""The URL black-list: requests whose URL matches are neither profiled nor reported.

Usage::

    from otel_wpm.capture.url_filter import UrlFilter

    url_filter = UrlFilter(["^/health$"])
    url_filter.add(r"^/static/")
    url_filter.matches("http://app/static/logo.png")   # True
    url_filter.remove(r"^/static/")
    url_filter.patterns                                 # ("^/health$",)

A pattern is a regex searched (``re.search``) in the full URL and in its path.
An invalid one given at construction is logged once and ignored; ``add``
refuses it.

``matches`` runs on the request thread and the sampler thread; it reads one
tuple, replaced whole by ``add``, ``remove`` and ``follow`` (any thread), so
matching never waits for an edit.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Optional
from urllib.parse import urlsplit

from .._runtime import forksafe

logger = logging.getLogger(__name__)

_reported_invalid: set[str] = set()


def pattern_error(pattern: str) -> Optional[str]:
    """Why ``pattern`` is not a usable regex, or None when it is one."""
    try:
        re.compile(pattern)
    except (re.error, TypeError) as err:
        return str(err)
    return None


class UrlFilter:
    """A black-list of URL regexes that can change while requests are matched against it.

    It remembers the patterns it was configured with, so that ``follow`` can
    take a new configuration and keep what was added or removed at runtime.
    """

    def __init__(self, patterns: Iterable[str] = (), enabled: bool = True) -> None:
        self._lock = threading.Lock()
        self._enabled = enabled
        self._configured = tuple(patterns)
        self._set(self._configured)
        forksafe.register(self)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    @property
    def patterns(self) -> tuple[str, ...]:
        """The patterns in force, valid or not, in the order they were given."""
        return self._patterns

    @property
    def enabled(self) -> bool:
        return self._enabled

    def matches(self, url: str, path: Optional[str] = None) -> bool:
        """Whether a pattern is found in ``url`` or in ``path`` (by default, the URL's path)."""
        compiled = self._compiled
        if not (self._enabled and compiled):
            return False
        if path is None:
            path = _path_of(url)
        return any(regex.search(url) or regex.search(path) for regex in compiled)

    def add(self, pattern: str) -> bool:
        """Start ignoring URLs matching ``pattern``; False (and a warning) if it is no regex."""
        error = pattern_error(pattern)
        if error is not None:
            logger.warning("ignoring invalid url_blacklist pattern %r: %s", pattern, error)
            return False
        with self._lock:
            if pattern not in self._patterns:
                self._set((*self._patterns, pattern))
        return True

    def remove(self, pattern: str) -> bool:
        """Stop ignoring ``pattern``; False if it was not in the black-list."""
        with self._lock:
            if pattern not in self._patterns:
                return False
            self._set(tuple(p for p in self._patterns if p != pattern))
        return True

    def follow(self, other: UrlFilter) -> None:
        """Take ``other``'s patterns and switch, keeping the changes made here at runtime.

        A pattern added here since configuration stays added, one removed here
        stays removed, whatever ``other`` lists.
        """
        with self._lock:
            added = [p for p in self._patterns if p not in self._configured]
            removed = {p for p in self._configured if p not in self._patterns}
            kept = [p for p in other.patterns if p not in removed]
            self._configured = other._configured
            self._enabled = other.enabled
            self._set((*kept, *(p for p in added if p not in kept)))

    def _set(self, patterns: tuple[str, ...]) -> None:
        compiled = [_compiled_or_reported(pattern) for pattern in patterns]
        self._patterns = patterns
        self._compiled = tuple(regex for regex in compiled if regex is not None)


def _compiled_or_reported(pattern: str) -> Optional[re.Pattern[str]]:
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as err:
        if pattern not in _reported_invalid:
            _reported_invalid.add(pattern)
            logger.warning("ignoring invalid url_blacklist pattern %r: %s", pattern, err)
        return None


def _path_of(url: str) -> str:
    try:
        return urlsplit(url).path
    except ValueError:
        return url
