"""Which files in the output directory are reports, and listing them.

Usage::

    from otel_wpm.reporting.files import is_report_file, scan

    is_report_file("20240501T120000Z_GET_users-id_<trace_id>_<span_id>.html")   # True
    for report in scan("performance_reports"):
        print(report.name, report.size, report.mtime)

The pattern matches exactly what :func:`otel_wpm.report.report_file_name`
produces. Retention deletes only files it matches (and the temporary files a
writer killed mid-write left behind) and the report server serves only those,
so alerts, de-duplication stores and anything else in the directory are never
touched or exposed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

REPORT_FILE_PATTERN = re.compile(
    r"\A(?P<stamp>\d{8}T\d{6}Z)_(?P<method>[A-Za-z0-9-]{1,10})_(?P<route>[A-Za-z0-9-]{1,60})"
    r"_(?P<trace_id>[0-9a-f]{32})_(?P<span_id>[0-9a-f]{16})(?P<running>_running)?\.html\Z"
)

_TEMPORARY_FILE_PATTERN = re.compile(r"\A\.(?P<report>.+)\.\d+\.tmp\Z")


@dataclass(frozen=True)
class ReportFile:
    """One report file as seen by ``os.scandir``."""

    name: str
    path: Path
    mtime: float
    size: int


def is_report_file(name: str) -> bool:
    return REPORT_FILE_PATTERN.match(name) is not None


def temporary_name(report_name: str, pid: int) -> str:
    """Where a process writes a report before renaming it into place."""
    return f".{report_name}.{pid}.tmp"


def is_temporary_file(name: str) -> bool:
    match = _TEMPORARY_FILE_PATTERN.match(name)
    return match is not None and is_report_file(match["report"])


def trace_id_of(name: str) -> Optional[str]:
    match = REPORT_FILE_PATTERN.match(name)
    return match["trace_id"] if match else None


def scan(
    directory: str | os.PathLike[str], matches: Callable[[str], bool] = is_report_file
) -> list[ReportFile]:
    """The report files (or other ``matches``) directly in ``directory``, if it exists."""
    reports = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not matches(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        reports.append(ReportFile(entry.name, Path(entry.path), stat.st_mtime, stat.st_size))
    return reports
