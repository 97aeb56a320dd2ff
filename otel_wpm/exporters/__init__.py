"""Where alerts go: a local JSON-lines file, a Mattermost channel, or your own exporter.

Usage::

    from otel_wpm.exporters import LocalFileExporter, MattermostExporter

    exporters = [LocalFileExporter(output_dir)]
    if config.mattermost_server_url:
        exporters.append(MattermostExporter(
            config.mattermost_server_url, config.mattermost_token,
            config.mattermost_channel_id, timeout_seconds=config.mattermost_timeout_seconds,
        ))
"""

from typing import TYPE_CHECKING, Any

from .base import AlertExporter, ExportError
from .local_file import LocalFileExporter
from .mattermost_message import format_markdown

if TYPE_CHECKING:
    from .mattermost import MattermostExporter

__all__ = [
    "AlertExporter",
    "ExportError",
    "LocalFileExporter",
    "MattermostExporter",
    "format_markdown",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: the Mattermost client loads requests (~50 ms).
    if name == "MattermostExporter":
        from .mattermost import MattermostExporter

        return MattermostExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
