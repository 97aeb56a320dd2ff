"""Where reports are kept: one owner-only HTML file per slow request in the output directory."""

from __future__ import annotations

import os
from pathlib import Path

_DIRECTORY_MODE = 0o700
_FILE_MODE = 0o600


class ReportStore:
    """Writes report files atomically; several processes may share the directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser().absolute()

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
        temporary = target.with_name(f".{file_name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(content)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return target
