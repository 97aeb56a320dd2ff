"""The in-process overhead harness runs and measures every configuration it is given.

Timing is not asserted here (that is what the harness is for); only that it works.
"""

from __future__ import annotations

import subprocess
import sys

from apps.helpers import REPO_DIR, clean_env


def test_inprocess_harness_reports_each_configuration_against_otel(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_DIR / "bench" / "inprocess.py"),
            "--configs",
            "wpm,wpm_precise,bare",
            "--rounds",
            "1",
            "--calls",
            "20",
        ],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    measured = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert measured == ["otel", "wpm", "wpm_precise", "bare"]
    assert "us/request" in result.stdout


def test_inprocess_harness_rejects_an_unknown_configuration(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_DIR / "bench" / "inprocess.py"), "--configs", "nope"],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown config 'nope'" in result.stderr
