"""Where a decoded latent may go: `check_device` turns a ``device=`` argument into a usable torch.device.

A hit is fetched onto the device the caller names. A name this machine cannot
serve (a typo, ``"cuda"`` without CUDA, ``"cuda:3"`` on a one-GPU machine) is
the caller's mistake, not damage in the entry: it is refused with
`InvalidDeviceError` before any store or codec work, so no entry is read,
counted corrupt or removed because of it.
"""

from __future__ import annotations

import torch

from flexcache.core.errors import InvalidDeviceError

_HINT = "pass None (the blob's own device), 'cpu', or a device this machine has such as 'cuda:0'"


def check_device(device: torch.device | str | None) -> torch.device | None:
    """`device` as a torch.device this machine has (None stays None).

    Never initialises CUDA: ``torch.cuda.is_available`` and ``device_count``
    ask the driver without creating a context.

    Args:
        device: None, a torch.device or a device string (``"cpu"``, ``"cuda"``,
            ``"cuda:1"``).

    Returns:
        The parsed device, or None when `device` is None.

    Raises:
        InvalidDeviceError: a malformed device, a CUDA device on a machine
            without CUDA (or an index past its last GPU), or another device
            type that torch reports unavailable.

    Example:
        >>> check_device("cpu"), check_device(None)
        (device(type='cpu'), None)
        >>> try:
        ...     check_device("cdua")
        ... except InvalidDeviceError as exc:
        ...     print(type(exc).__name__)
        InvalidDeviceError
    """
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise InvalidDeviceError(f"device must be a torch.device or a string; got {type(device).__name__}; {_HINT}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidDeviceError(f"device {device!r} is not a device name torch knows; {_HINT}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidDeviceError(f"device {str(parsed)!r} was asked for, but CUDA is not available on this "
                                     f"machine (torch {torch.__version__}); {_HINT}")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise InvalidDeviceError(f"device {str(parsed)!r} was asked for, but this machine has {count} CUDA "
                                     f"device(s); {_HINT}")
        return parsed
    backend = getattr(torch, parsed.type, None)  # torch.mps, torch.xpu, ...: each says whether it is usable
    is_available = getattr(backend, "is_available", None)
    if not callable(is_available) or not is_available():
        raise InvalidDeviceError(f"device {str(parsed)!r} is not available on this machine; {_HINT}")
    return parsed
