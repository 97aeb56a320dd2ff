"""``PerformanceMonitor``: otel-wpm in two lines, with or without OpenTelemetry set up.

Usage in a Flask app::

    from otel_wpm import Config, PerformanceMonitor

    monitor = PerformanceMonitor(Config(threshold_seconds=0.5))
    app.wsgi_app = monitor.create_middleware()(app.wsgi_app)

    @monitor.create_decorator()
    def build_invoice(order): ...

and in an ASGI app (FastAPI, Starlette, Django's ``get_asgi_application()``)::

    app = monitor.create_middleware()(app)     # an ASGI app is recognised
    app = monitor.create_asgi_middleware()(app)  # says so, for any ASGI 3 callable

    @monitor.create_decorator()
    async def load_cart(user): ...             # the span covers the await

Which ``TracerProvider`` is used:

* the global one, when it is an SDK provider (set up by the application or by
  ``opentelemetry-instrument``): our processor is added to it once and shared
  by every monitor; a monitor given a ``Config`` applies it to that processor;
* otherwise a private SDK provider, so that nothing is exported and a global
  provider set later by the application is not taken over.

The middleware makes the server span with OpenTelemetry's WSGI or ASGI
middleware (the ASGI one comes with ``pip install 'otel-wpm[asgi]'``), unless the
app is already instrumented (FlaskInstrumentor, FastAPIInstrumentor,
``opentelemetry-instrument``, an outer OpenTelemetry middleware): then it only
passes the request on, and the span of that instrumentation is profiled. The
ASGI middleware also keeps a copy of the body the app receives, for the report.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Iterable
from typing import Any, Callable, Optional, TypeVar, cast

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from .capture import attributes
from .capture.asgi import RecordingReceive, recording_receive
from .config import Config, ConfigError
from .install import install, installed_processor, new_provider
from .processor import ProfilingSpanProcessor

logger = logging.getLogger(__name__)

WSGIApp = Callable[..., Iterable[bytes]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])

_INSTRUMENTATION_PACKAGE = "opentelemetry.instrumentation"


def is_instrumented(app: Any) -> bool:
    """Whether ``app`` is already wrapped by an OpenTelemetry instrumentation.

    FastAPIInstrumentor and StarletteInstrumentor mark the apps they instrument.
    """
    if getattr(app, "_is_instrumented_by_opentelemetry", False) is True:
        return True
    module = getattr(app, "__module__", None) or type(app).__module__
    return str(module).startswith(_INSTRUMENTATION_PACKAGE)


def is_asgi_app(app: Any) -> bool:
    """Whether ``app`` is an ASGI 3 application: an ``async`` callable (function or object)."""
    return inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__)


def _asgi_tracing_middleware() -> Any:
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as traced
    except ImportError as exc:
        raise ConfigError(
            "otel-wpm: create_middleware() got an ASGI app, which needs "
            "opentelemetry-instrumentation-asgi: pip install 'otel-wpm[asgi]'"
        ) from exc
    return traced


class MonitorMiddleware:
    """WSGI middleware: a server span around each request, unless one is already current."""

    def __init__(self, app: WSGIApp, tracer_provider: TracerProvider) -> None:
        # Imported here: an app already instrumented never needs it (~40 ms).
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

        self.app = app
        self._traced = OpenTelemetryMiddleware(app, tracer_provider=tracer_provider)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if trace.get_current_span().get_span_context().is_valid:
            return self.app(environ, start_response)
        return self._traced(environ, start_response)


class AsgiMonitorMiddleware:
    """ASGI middleware: a server span around each HTTP request, unless the app makes one or
    one is already current; a copy of the request body the app receives, for the report."""

    def __init__(
        self, app: ASGIApp, tracer_provider: TracerProvider, processor: ProfilingSpanProcessor
    ) -> None:
        self.app = app
        self._processor = processor
        self._traced: Optional[ASGIApp] = None
        if not is_instrumented(app):
            self._traced = _asgi_tracing_middleware()(app, tracer_provider=tracer_provider)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.app
        if self._traced is not None and not trace.get_current_span().get_span_context().is_valid:
            app = self._traced
        settings = self._processor.settings
        if scope.get("type") != "http" or not settings.captures_body:
            await app(scope, receive, send)
            return
        recorder = RecordingReceive(receive, settings.config.capture_body_bytes)
        token = recording_receive.set(recorder)
        try:
            await app(scope, recorder, send)
        finally:
            recording_receive.reset(token)


class PerformanceMonitor:
    """Profiles slow requests and slow decorated functions; see the module docstring."""

    def __init__(self, config: Optional[Config] = None) -> None:
        self._lock = threading.Lock()
        provider = trace.get_tracer_provider()
        self._private = not isinstance(provider, TracerProvider)
        if self._private:
            provider = new_provider()
        assert isinstance(provider, TracerProvider)
        existing = installed_processor(provider)
        if existing is not None and config is not None:
            existing.update_config(config)
        self._provider = provider
        self._processor = install(provider, config or Config.from_env())
        self._tracer = provider.get_tracer(attributes.TRACER_NAME)

    @property
    def processor(self) -> ProfilingSpanProcessor:
        return self._processor

    @property
    def config(self) -> Config:
        return self._processor.config

    @property
    def tracer_provider(self) -> TracerProvider:
        return self._provider

    # --- wrapping the app and functions ----------------------------------------------

    def create_middleware(self) -> Callable[[Any], Any]:
        """Wraps a WSGI app (``app.wsgi_app = monitor.create_middleware()(app.wsgi_app)``) or
        an ASGI one (``app = monitor.create_middleware()(app)``), told apart by
        :func:`is_asgi_app`."""
        return self._wrap

    def create_asgi_middleware(self) -> Callable[[ASGIApp], ASGIApp]:
        """Wraps an ASGI 3 app, for callables that :func:`is_asgi_app` cannot recognise."""
        return self._wrap_asgi

    def _wrap(self, app: Any) -> Any:
        return self._wrap_asgi(app) if is_asgi_app(app) else self._wrap_wsgi(app)

    def _wrap_asgi(self, app: ASGIApp) -> ASGIApp:
        self._warn_if_instrumented_privately(app)
        return AsgiMonitorMiddleware(app, self._provider, self._processor)

    def _warn_if_instrumented_privately(self, app: Any) -> None:
        if is_instrumented(app) and self._private:
            logger.warning(
                "otel-wpm: the app is instrumented but no SDK TracerProvider is global; "
                "add ProfilingSpanProcessor to the provider of that instrumentation"
            )

    def _wrap_wsgi(self, app: WSGIApp) -> WSGIApp:
        if is_instrumented(app):
            self._warn_if_instrumented_privately(app)
            return app
        return MonitorMiddleware(app, self._provider)

    def create_decorator(self, name: Optional[str] = None) -> Callable[[F], F]:
        """Profile calls of the decorated function; report those slower than the threshold."""
        self._processor.watch_decorated_functions()

        def decorate(func: F) -> F:
            span_name = name or func.__qualname__
            span_attributes: dict[str, AttributeValue] = {
                attributes.PROFILE: True,
                "code.function": func.__qualname__,
                "code.namespace": func.__module__,
            }

            def span() -> Any:
                return self._tracer.start_as_current_span(
                    span_name, kind=SpanKind.INTERNAL, attributes=span_attributes
                )

            @functools.wraps(func)
            def profiled(*args: Any, **kwargs: Any) -> Any:
                with span():
                    return func(*args, **kwargs)

            @functools.wraps(func)
            async def profiled_coroutine(*args: Any, **kwargs: Any) -> Any:
                with span():
                    return await func(*args, **kwargs)

            if inspect.iscoroutinefunction(func):
                return cast(F, profiled_coroutine)
            return cast(F, profiled)

        return decorate

    # --- settings ----------------------------------------------------------------------

    def update_config(self, **changes: Any) -> Config:
        """Apply ``changes`` to requests that start from now on.

        Validated: a ``ConfigError`` leaves the old settings. Requests in flight end
        under the settings they started with.
        """
        with self._lock:
            new_config = self._processor.config.replace(**changes)
            self._processor.update_config(new_config)
        return new_config

    # The black-list is the processor's: config.url_filter is the processor's UrlFilter, and
    # patterns added or removed here stay so across update_config.

    def add_blacklist_url(self, pattern: str) -> bool:
        """Stop profiling URLs matching the regex ``pattern``; False if it is no regex."""
        return self.config.add_blacklist_url(pattern)

    def remove_blacklist_url(self, pattern: str) -> bool:
        """Profile URLs matching ``pattern`` again; False if it was not in the black-list."""
        return self.config.remove_blacklist_url(pattern)

    def is_url_blacklisted(self, url: str) -> bool:
        """Whether requests to ``url`` (a full URL or a path) are left alone."""
        return self.config.is_url_blacklisted(url)

    # --- stats, alerts, lifecycle ------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        return self._processor.get_stats()

    def reset_stats(self) -> None:
        self._processor.reset_stats()

    def test_alert_system(self) -> dict[str, Any]:
        """Send a test alert through every enabled exporter; says which worked."""
        return self._processor.test_alert_system()

    def flush(self, timeout_seconds: float = 30.0) -> bool:
        """Wait until pending reports are written and alerts delivered."""
        return self._processor.force_flush(int(timeout_seconds * 1000))

    def shutdown(self) -> None:
        """Finish pending work and stop profiling.

        A private provider is shut down. A shared one belongs to the application,
        which shuts it down; here the processor is only flushed and disabled.
        """
        if self._private:
            self._provider.shutdown()
            return
        self._processor.force_flush()
        with self._lock:
            self._processor.update_config(self._processor.config.replace(enabled=False))
