"""Where reports are kept: one owner-only HTML file per slow request in the output directory.

Usage::

    from otel_wpm.reporting.store import ReportStore
    from otel_wpm.reporting.retention import RetentionLimits

    store = ReportStore("performance_reports", limits=RetentionLimits(max_files=1000))
    store = ReportStore.from_config(config)      # directory and limits from a Config
    path = store.write(file_name, html_bytes)   # atomic; prunes old reports when due

With limits, writes keep the directory within them (see :mod:`otel_wpm.reporting.retention`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .report_format import temporary_name
from .retention import Retention, RetentionLimits

if TYPE_CHECKING:
    from ..config import Config

_DIRECTORY_MODE = 0o700
_FILE_MODE = 0o600


class ReportStore:
    """Writes report files atomically; several processes may share the directory."""

    def __init__(
        self, directory: str | os.PathLike[str], limits: Optional[RetentionLimits] = None
    ) -> None:
        self.directory = Path(directory).expanduser().absolute()
        self.retention = Retention(self.directory, limits or RetentionLimits())

    @classmethod
    def from_config(cls, config: Config) -> ReportStore:
        return cls(config.local_output_dir, RetentionLimits.from_config(config))

    def path_of(self, file_name: str) -> Path:
        if (
            os.sep in file_name
            or (os.altsep and os.altsep in file_name)
            or file_name in ("", ".", "..")
        ):
            raise ValueError(f"not a plain file name: {file_name!r}")
        return self.directory / file_name

    def ensure_directory(self) -> None:
        self.directory.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)

    def write(self, file_name: str, content: bytes) -> Path:
        """Write ``content`` as ``file_name``; readers never see a half-written file."""
        self.ensure_directory()
        target = self.path_of(file_name)
        temporary = target.with_name(temporary_name(file_name, os.getpid()))
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(content)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self.retention.after_write(len(content))
        return target
