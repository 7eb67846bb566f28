"""Settings for every pytest run here: the tests under tests/ and the docstring examples under flexcache/."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged embedder loads from site-packages
if not torch.cuda.is_available():
    # Triton kernels run through its interpreter on CPU; it is read when a kernel is defined.
    os.environ.setdefault("TRITON_INTERPRET", "1")
