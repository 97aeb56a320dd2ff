"""Whether an optional dependency is installed, without importing it.

Usage::

    from otel_wpm._runtime.installed import is_installed

    is_installed("mattermostdriver")   # False when the extra is not installed
    is_installed("zope.event")         # False, not an error, when zope itself is missing
"""

from __future__ import annotations

import importlib.util


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        # ImportError: a dotted name whose parent package is missing (find_spec imports it);
        # ValueError: a module in sys.modules without a spec
        return False
