"""The settings in force: what a :class:`~otel_wpm.config.Config` means to a running processor.

Usage::

    settings = ActiveSettings.from_config(config)
    settings = ActiveSettings.from_config(new_config, previous=settings)  # on update_config

A ``Config`` is what was asked for. ``ActiveSettings`` adds what the processor
derives from it once (thresholds in nanoseconds, the secret masker, the report
store, the precise engine's overhead budget), so the request path only reads
fields.
It is frozen: ``update_config`` swaps the whole object, and each request keeps a
reference to the one it started under, so that it ends under it too.

Parts whose settings did not change are taken over from ``previous``: the budget
is not measured again unless the engine changes, and the store keeps its
retention state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from .capture.precise import OverheadBudget, measure_slowdown
from .config import Config
from .masking import SecretMasker
from .reporting.store import ReportStore, store_from_config

_STORE_SETTINGS = (
    "enable_local_file",
    "local_output_dir",
    "report_store",
    "report_store_endpoint_url",
    "report_spool_max_bytes",
    "dedup_redis_url",
    "report_max_files",
    "report_max_bytes",
    "report_max_age_days",
)


@dataclass(frozen=True, eq=False)
class ActiveSettings:
    """A ``Config`` and what is derived from it; see the module docstring.

    Compared by identity: each ``update_config`` makes a new one.
    """

    config: Config
    enabled: bool
    threshold_ns: int
    sample_after_ns: int
    hung_after_ns: Optional[int]  # None: requests are not reported while they run
    captures_request: bool  # headers or a body are shown in reports
    captures_body: bool
    masker: SecretMasker
    store: Optional[ReportStore]  # None: no reports kept
    budget: Optional[OverheadBudget]  # the precise engine's; None under the sampling engine

    @classmethod
    def from_config(
        cls, config: Config, previous: Optional[ActiveSettings] = None
    ) -> ActiveSettings:
        threshold = config.threshold_seconds
        factor = config.hung_request_factor
        return cls(
            config=config,
            enabled=config.enabled,
            threshold_ns=_nanoseconds(threshold),
            sample_after_ns=_nanoseconds(threshold * config.sample_after_fraction),
            hung_after_ns=_nanoseconds(threshold * factor) if factor else None,
            captures_request=config.capture_headers or config.capture_body_bytes > 0,
            captures_body=config.capture_body_bytes > 0,
            masker=_masker(config, previous),
            store=_store(config, previous),
            budget=_budget(config, previous),
        )


def changed(old: Config, new: Config, names: Iterable[str]) -> bool:
    """Whether any of the settings ``names`` differs between ``old`` and ``new``."""
    return any(getattr(old, name) != getattr(new, name) for name in names)


def _nanoseconds(seconds: float) -> int:
    return int(seconds * 1e9)


def _masker(config: Config, previous: Optional[ActiveSettings]) -> SecretMasker:
    if previous is not None and not changed(
        previous.config, config, ["mask_keys", "mask_value_patterns"]
    ):
        return previous.masker
    return SecretMasker.from_env(config.mask_keys, config.mask_value_patterns)


def _store(config: Config, previous: Optional[ActiveSettings]) -> Optional[ReportStore]:
    if previous is not None and not changed(previous.config, config, _STORE_SETTINGS):
        return previous.store
    return store_from_config(config)


def _budget(config: Config, previous: Optional[ActiveSettings]) -> Optional[OverheadBudget]:
    if config.engine != "pyinstrument":
        return None
    budget = previous.budget if previous is not None else None
    if budget is None:
        return OverheadBudget(config.max_performance_overhead, measure_slowdown())
    if budget.max_overhead != config.max_performance_overhead:
        return OverheadBudget(config.max_performance_overhead, budget.slowdown)
    return budget
