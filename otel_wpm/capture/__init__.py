"""Watching requests while they run.

Runs on the **request thread** (``ProfilingSpanProcessor.on_start`` /
``on_end``: :mod:`.inflight`, :mod:`.trace_spans`, :mod:`.request`,
:mod:`.asgi`, :mod:`.body`, :mod:`.semconv`, :mod:`.precise`; for an asyncio
request, the event loop's thread) and on the **sampler thread** (:mod:`.sampler`,
one a process; :mod:`.route` reads the framework's route template there while
the request runs; :mod:`.frames`; :mod:`.loops` for requests that asyncio tasks
serve, and the thread pools they wait for; :mod:`.greenlets` for gevent's).

Hands to :mod:`otel_wpm.reporting`: an ended slow request's
:class:`~.inflight.InFlightRequest` (its samples or pyinstrument session, its
WSGI environ or ASGI scope, route template and recorded body, who held its
event loop), read through :mod:`.semconv` and :mod:`.route`, and the spans of
its trace that ended while it ran (:class:`~.trace_spans.KeptSpans`).
"""
