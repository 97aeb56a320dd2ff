"""Gunicorn hooks for the benchmark app: install the watching stack in each worker.

The stack (tracer provider, span processors, any profiler threads) is built in
``post_fork``, i.e. in the worker after fork, never in the master; don't combine
this file with ``--preload``. ``BENCH_APP`` names the app's module (default
``bench.app``; ``bench.shop_app`` for the second app). Usage::

    BENCH_CONFIG=otel gunicorn -c bench/gunicorn_conf.py --chdir . \\
        -w 1 -k gthread --threads 4 -b 127.0.0.1:8000 bench.app:app
    BENCH_APP=bench.shop_app BENCH_CONFIG=wpm gunicorn -c bench/gunicorn_conf.py --chdir . \\
        -w 1 -k gthread --threads 4 -b 127.0.0.1:8000 bench.shop_app:app
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

preload_app = False
graceful_timeout = 5
#: gunicorn >= 25 opens a control socket in ~/.gunicorn by default; benchmark servers
#: run side by side with others, so keep them off it (older versions ignore this name).
control_socket_disable = True


def post_fork(server: Any, worker: Any) -> None:
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    # A frozen copy of the package under test (bench/run.py sets this) wins over the
    # working tree, so edits made while a run is going on don't mix versions.
    src = os.environ.get("BENCH_SRC")
    if src:
        sys.path.insert(0, src)
    from bench import app as bench_app

    module = importlib.import_module(os.environ.get("BENCH_APP") or "bench.app")
    bench_app.install_from_env(module.app, getattr(module, "WPM_OPTIONS", None))
    worker.log.info("bench: installed %s in pid %s", bench_app._state["config"], os.getpid())


def worker_exit(server: Any, worker: Any) -> None:
    from bench import app as bench_app

    bench_app.shutdown()
