"""Watching for gevent costs nothing and breaks nothing where gevent is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_processor_starts_where_zope_is_not_installed(tmp_path) -> None:
    """gevent brings zope.event; a plain app has neither, and must still be watched."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["zope"] = None  # as if not installed: importing it raises ImportError
        from otel_wpm import Config, ProfilingSpanProcessor
        processor = ProfilingSpanProcessor(Config(local_output_dir={str(tmp_path)!r}))
        processor.shutdown()
        print("started")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"
