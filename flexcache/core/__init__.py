"""The bottom layer: errors, configuration and the small types every layer shares.

Layers import one way (README, "Architecture"; tests/test_layers.py checks it):
core <- kernels <- codec <- store <- engine <- integrations. Nothing in core
imports another FlexCache package.
"""

from flexcache.core.config import *  # noqa: F401,F403
from flexcache.core.config import __all__ as _config_names
from flexcache.core.errors import *  # noqa: F401,F403
from flexcache.core.errors import __all__ as _error_names
from flexcache.core.names import (
    BUDGET_MODES,
    CODECS,
    DEVICES,
    INDEX_BACKENDS,
    KERNEL_BACKENDS,
    LOOKUPS,
    LOSSLESS_ALGORITHMS,
    POLICIES,
    TIER_KINDS,
)
from flexcache.core.reference import config_reference
from flexcache.core.types import (
    KEY_PATTERN,
    SEED_LIMIT,
    TENANT_PATTERN,
    check_key,
    dtype_from_name,
    dtype_name,
    is_valid_seed,
    make_key,
    split_key,
)

__all__ = [
    *_config_names, *_error_names, "BUDGET_MODES", "CODECS", "DEVICES", "INDEX_BACKENDS", "KERNEL_BACKENDS",
    "LOOKUPS", "LOSSLESS_ALGORITHMS", "POLICIES", "TIER_KINDS", "config_reference", "KEY_PATTERN", "SEED_LIMIT", "TENANT_PATTERN", "check_key", "dtype_from_name",
    "dtype_name", "is_valid_seed", "make_key", "split_key",
]
