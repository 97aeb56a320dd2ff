"""Telling people about a slow request, once per route and window.

Runs on the **alert thread** (one a process): de-duplication against
:mod:`.dedup` (SQLite or Redis), then every exporter of :mod:`otel_wpm.exporters`.
The report thread only queues an :class:`~.alert.Alert`; it never waits for
delivery.
"""
