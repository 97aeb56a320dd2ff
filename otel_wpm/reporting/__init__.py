"""Turning a slow request into an HTML report on disk.

Runs on the **report thread** (one a process, a ``BackgroundWorker``), except
:class:`~.slow_request.SlowRequest`, which the request thread fills in before it
queues the request. Nothing here ever runs on a request's time.

Hands to :mod:`otel_wpm.alerting`: the written report (path and bytes) and the
``SlowRequest`` it was made from.

:mod:`.report_format` (file names, the embedded metadata) is the one part the
report server (:mod:`otel_wpm.server`, its own process) shares: it reads what
the report thread writes.
"""
