"""Reading a disk tier's directory without changing it (`flexcache inspect`).

The disk tier's own start-up scan removes stray temporary files and
quarantines damaged entries: right for the owner, wrong for an inspector.
`read_disk_entries` opens every committed entry file read-only and reports
what it finds, damage included.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from flexcache.core.errors import CorruptBlobError
from flexcache.core.types import KEY_PATTERN, TENANT_PATTERN
from flexcache.store.diskfile import read_body

ENTRY_SUFFIX = ".fxc"


@dataclass
class RawEntry:
    """One entry as a tier holds it: integrity-framed metadata and blob (None: unreadable)."""

    key: str
    meta: bytes | None
    blob: bytes | None
    nbytes: int
    modified: float | None = None  # Unix time of the entry's last write, where the tier knows it
    problem: str | None = None  # why the entry could not be read


def read_disk_entries(directory: str, *, blobs: bool = True) -> Iterator[RawEntry]:
    """Every committed entry under a disk tier's `directory` (``data/<tenant>/<digest>.fxc``), read-only."""
    data = os.path.join(directory, "data")
    if not os.path.isdir(data):
        raise FileNotFoundError(f"{directory!r} holds no disk tier (no data/ folder)")
    for tenant in sorted(os.listdir(data)):
        folder = os.path.join(data, tenant)
        if TENANT_PATTERN.fullmatch(tenant) is None or not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.endswith(ENTRY_SUFFIX) or name.startswith("."):
                continue
            key = f"{tenant}.{name[:-len(ENTRY_SUFFIX)]}"
            if KEY_PATTERN.fullmatch(key) is None:
                continue
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
                meta = _read(path, key, want_blob=False)
                blob = _read(path, key, want_blob=True) if blobs else None
            except (CorruptBlobError, OSError) as exc:
                yield RawEntry(key, None, None, 0, None, f"{type(exc).__name__}: {exc}")
                continue
            yield RawEntry(key, meta, blob, stat.st_size, stat.st_mtime)


def _read(path: str, key: str, *, want_blob: bool) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return read_body(fd, key, want_blob=want_blob)
    finally:
        os.close(fd)
