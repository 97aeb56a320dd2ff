"""The interface every alert exporter implements.

Usage::

    class StdoutExporter(AlertExporter):
        name = "stdout"

        def export(self, alert: Alert) -> None:
            try:
                print(alert.route, alert.duration_seconds)
            except OSError as error:
                raise ExportError(f"stdout is closed: {error}", kind="io") from None

An exporter does its own retries; when it gives up it raises :class:`ExportError`,
whose message is safe to log (no secrets) and whose ``permanent`` flag says that
retrying later will not help until the configuration is fixed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..alerting.alert import Alert


class ExportError(Exception):
    """An alert could not be delivered.

    ``kind`` is a short, stable reason (``"auth"``, ``"timeout"``, ``"disk"``...)
    so callers can log each kind of failure once instead of once per alert.
    """

    def __init__(self, message: str, *, permanent: bool = False, kind: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.kind = kind

    def __repr__(self) -> str:
        return f"ExportError({self.message!r}, permanent={self.permanent}, kind={self.kind!r})"


class AlertExporter(ABC):
    """Delivers alerts somewhere: a file, a chat channel..."""

    name: str = "exporter"

    @abstractmethod
    def export(self, alert: Alert) -> None:
        """Deliver one alert, or raise :class:`ExportError` once retries are exhausted."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the exporter holds (connections, files)."""

    def reset_after_fork(self) -> None:  # noqa: B027 - optional hook
        """In a forked child: drop locks and connections inherited from the parent."""
