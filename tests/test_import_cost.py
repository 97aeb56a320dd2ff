"""What each way in imports: the heavy parts wait until they are needed.

Each case runs in a fresh interpreter and reads ``sys.modules`` afterwards. Import
*time* is measured in ``bench/import_time.py``; here only what gets imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from apps.helpers import clean_env

# Loaded on the report and alert threads, or by the facade's middleware, when first needed.
DEFERRED = (
    "requests",
    "pyinstrument.renderers",
    "sqlite3",
    "opentelemetry.instrumentation.wsgi",
)


def modules_loaded_by(statement: str, cwd: Path, **env: str) -> set[str]:
    script = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))\n"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=clean_env(WPM_LOCAL_OUTPUT_DIR=str(cwd / "reports"), **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "from otel_wpm import ProfilingSpanProcessor",
        "from otel_wpm.processor import ProfilingSpanProcessor; ProfilingSpanProcessor()",
        "from otel_wpm.install import post_instrument; post_instrument()",
    ],
    ids=["import", "construct", "opentelemetry-instrument hook"],
)
def test_the_processor_path_defers_reporting_alerting_and_wsgi(
    statement: str, tmp_path: Path
) -> None:
    loaded = modules_loaded_by(statement, tmp_path)
    assert "otel_wpm.processor" in loaded
    assert sorted(loaded & set(DEFERRED)) == []


def test_the_facade_defers_reporting_and_alerting_until_a_request(tmp_path: Path) -> None:
    loaded = modules_loaded_by("from otel_wpm import PerformanceMonitor", tmp_path)
    assert "otel_wpm.monitor" in loaded
    assert sorted(loaded & set(DEFERRED)) == []


def test_the_mattermost_exporter_still_imports_from_the_exporters_package(
    tmp_path: Path,
) -> None:
    loaded = modules_loaded_by("from otel_wpm.exporters import MattermostExporter", tmp_path)
    assert {"otel_wpm.exporters.mattermost", "requests"} <= loaded
