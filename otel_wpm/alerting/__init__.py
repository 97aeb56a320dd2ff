"""Telling people about a slow request, once per route and window.

Runs on the **alert threads**, one per exporter in each process (:mod:`.lane`):
each claims its window in :mod:`.dedup` (SQLite or Redis), delivers through its
exporter of :mod:`otel_wpm.exporters`, and gives the window back when that
failed. The report thread only queues an :class:`~.alert.Alert`
(:mod:`.dispatch`); it never waits for delivery.
"""
