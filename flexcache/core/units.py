"""Byte sizes as people write them in configs: ``1048576``, ``"512MiB"``, ``"4GB"``."""

from __future__ import annotations

import re

from flexcache.core.errors import ConfigError

_BYTE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_bytes(value: int | str) -> int:
    """Turn ``1048576``, ``"1MiB"`` or ``"1.5 GB"`` into a byte count.

    Example:
        >>> parse_bytes("1.5 GB"), parse_bytes("1MiB")
        (1500000000, 1048576)

    Raises:
        ConfigError: when the value is not a non-negative size.
    """
    if isinstance(value, bool):
        raise ConfigError(f"expected a byte size, got {value!r}")
    size: int | None = None
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        if match and match.group(2).lower() in _BYTE_UNITS:
            size = int(float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()])
    if size is not None and size >= 0:
        return size
    raise ConfigError(
        f"expected a byte size such as 1073741824, '512MiB' or '4GB', got {value!r}"
    )
