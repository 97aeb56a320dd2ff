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

from .base import AlertExporter, ExportError
from .local_file import LocalFileExporter
from .mattermost import MattermostExporter
from .mattermost_message import format_markdown

__all__ = [
    "AlertExporter",
    "ExportError",
    "LocalFileExporter",
    "MattermostExporter",
    "format_markdown",
]
