"""Turning a slow request into an HTML report on disk.

Runs on the **report thread** (one a process, a ``BackgroundWorker`` owned by
:class:`~.reporter.Reporter`). The request thread (or the sampler thread, for a
request still running) only names the report and copies what it needs into a
:class:`~.slow_request.SlowRequest` before queueing it; rendering and writing
never run on a request's time.

Hands to :mod:`otel_wpm.alerting`: an :class:`~otel_wpm.alerting.alert.Alert`
made from the ``SlowRequest`` and its written report (path and bytes).

:mod:`.report_format` (file names, the embedded metadata) is the one part the
report server (:mod:`otel_wpm.server`, its own process) shares: it reads what
the report thread writes.
"""
