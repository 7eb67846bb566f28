"""FlexCache: an approximate latent cache for text-to-video diffusion serving.

Public API: `FlexCache`, `CacheConfig`, `GenerationSignature`, `Plan`,
`enable_flexcache` / `disable_flexcache` / `get_flexcache`, `last_call_report`, `calibrate` and
`load_rules` (calibrated rules files), and the errors in `flexcache.errors`.
Importing this package never initialises CUDA and never imports Triton,
nvCOMP, FAISS or diffusers; those load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flexcache.core.config import CacheConfig
from flexcache.core.errors import *  # noqa: F401,F403
from flexcache.core.errors import __all__ as _error_names

__version__ = "0.1.0"

_LAZY = {
    "FlexCache": ("flexcache.engine.cache", "FlexCache"),
    "GenerationSignature": ("flexcache.engine.records", "GenerationSignature"),
    "Plan": ("flexcache.engine.planner", "Plan"),
    "enable_flexcache": ("flexcache.integrations.diffusers", "enable_flexcache"),
    "disable_flexcache": ("flexcache.integrations.diffusers", "disable_flexcache"),
    "last_call_report": ("flexcache.integrations.diffusers", "last_call_report"),
    "get_flexcache": ("flexcache.integrations.diffusers", "get_flexcache"),
    "run_pending_audits": ("flexcache.integrations.diffusers", "run_pending_audits"),
    # Calibration (`flexcache calibrate`): fit the planner's depths on your model; read a rules file.
    "calibrate": ("flexcache.quality.calibrate", "calibrate"),
    "load_rules": ("flexcache.quality.rules", "load_rules"),
}

if TYPE_CHECKING:
    from flexcache.engine.cache import FlexCache
    from flexcache.engine.planner import Plan
    from flexcache.engine.records import GenerationSignature
    from flexcache.integrations.diffusers import (
        disable_flexcache,
        enable_flexcache,
        get_flexcache,
        last_call_report,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flexcache' has no attribute {name!r}")


__all__ = ["CacheConfig", "__version__", *_LAZY, *_error_names]
