"""Small value types every layer shares: seeds, latent dtype names and store keys.

Nothing here imports anything but torch and the standard library, so the
kernels, the codec, the store and the engine can all use it.
"""

from __future__ import annotations

import re

import torch

from flexcache.core.errors import InvalidLatentError, InvalidPlanError

# -- seeds ---------------------------------------------------------------------------------

SEED_LIMIT = 2**64  # seeds are unsigned 64-bit, as torch.Generator.initial_seed() returns them


def is_valid_seed(seed: object) -> bool:
    """Whether `seed` is an int a run's noise can be drawn from (0 .. 2**64-1).

    Example:
        >>> is_valid_seed(2**64 - 1), is_valid_seed(-1), is_valid_seed(True)
        (True, False, False)
    """
    return isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < SEED_LIMIT


# -- latent dtypes -------------------------------------------------------------------------

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
}
_DTYPES_BY_NAME = {name: dtype for dtype, name in _DTYPE_NAMES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """Stable name of a floating latent dtype (``torch.float32`` -> ``"float32"``).

    Raises:
        InvalidLatentError: a dtype latents cannot have.
    """
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise InvalidLatentError(
            f"latent dtype {dtype} is not supported; use one of {', '.join(_DTYPE_NAMES.values())}"
        ) from None


def dtype_from_name(name: str) -> torch.dtype:
    """Inverse of `dtype_name`."""
    try:
        return _DTYPES_BY_NAME[name]
    except KeyError:
        raise InvalidLatentError(
            f"latent dtype {name!r} is not supported; use one of {', '.join(_DTYPES_BY_NAME)}"
        ) from None


# -- store keys ----------------------------------------------------------------------------

# Keys are ``<tenant>.<hex digest>``: short ASCII that every tier can use as a file name or key suffix.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}\.[0-9a-f]{8,64}")
TENANT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_key(key: str) -> str:
    """`key` itself when it is a valid store key.

    Raises:
        InvalidPlanError: anything else.
    """
    if not isinstance(key, str) or KEY_PATTERN.fullmatch(key) is None:
        raise InvalidPlanError(
            f"store keys are '<tenant>.<hex digest>' with tenant of [A-Za-z0-9_-]; got {key!r}"
        )
    return key


def make_key(tenant: str, digest: str) -> str:
    """The store key of an entry: ``<tenant>.<hex digest>`` (stable across processes).

    Example:
        >>> make_key("acme", "00c0ffee")
        'acme.00c0ffee'
    """
    return check_key(f"{tenant}.{digest}")


def split_key(key: str) -> tuple[str, str]:
    """``(tenant, digest)`` of a store key, so a tier can lay keys out per tenant."""
    tenant, digest = check_key(key).rsplit(".", 1)
    return tenant, digest
