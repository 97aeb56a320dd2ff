"""Watching requests while they run.

Runs on the **request thread** (``ProfilingSpanProcessor.on_start`` /
``on_end``: :mod:`.inflight`, :mod:`.trace_spans`, :mod:`.request`,
:mod:`.semconv`, :mod:`.precise`) and on the **sampler thread** (:mod:`.sampler`,
one a process; :mod:`.route` reads the framework's route template there while
the request runs).

Hands to :mod:`otel_wpm.reporting`: an ended slow request's
:class:`~.inflight.InFlightRequest` (its samples or pyinstrument session, its
WSGI environ, route template and recorded body), read through :mod:`.semconv`
and :mod:`.route`, and the spans of its trace that ended while it ran
(:class:`~.trace_spans.KeptSpans`).
"""
