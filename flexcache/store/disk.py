"""Disk tier: one checksummed file per entry, committed by an atomic rename.

Layout under the tier's directory::

    lock                                        held (flock) by the one tier that owns the directory
    data/<tenant>/<digest>.fxc                  committed entries
    data/<tenant>/.<digest>.<pid>.<rand>.tmp    a write in flight (or a crash's leftover)
    quarantine/<tenant>.<digest>.<ns>.<rand>    entries that failed a check, kept for inspection

Entries live under ``data/`` so that a tenant called ``quarantine`` cannot
collide with the quarantine folder.

An entry file is ``header | key | meta | blob``. The 20-byte header is
little-endian ``magic "FXDK", version u16 (2), key length u16, meta length
u32, blob length u64`` (`diskfile`; docs/format.md, "Disk entry file"). The tier stores
meta and blob as it is given them: the integrity layer (`ChecksummedTier`,
which `build_tier` puts in front of every disk tier) frames each with its
CRC-32, so a damaged length shows up as a wrong file size or a failed frame.
A start-up scan trusts a file after reading only ``20 + key length`` bytes
and checking the file's size against the lengths.

Why the writes look the way they do (LMCache's users report read/write races
on its disk tier): a file is never modified after its name exists. A put
writes a temporary file in the same folder, fsyncs it, renames it over the
final name and fsyncs the folder, so a crash leaves the old file, the new file
or a stray temporary one, never a half-written entry; a reader holding the old
inode keeps reading the old complete bytes. The directory scan at start-up is
the source of truth: there is no manifest to get out of step with the files.

One tier owns a directory (``shared = False``): the start-up scan deletes
every stray temporary file it finds, and each owner keeps its own index and
byte count. So the tier holds an exclusive, non-blocking ``flock`` on
``<directory>/lock`` from before that scan until `close`; a second tier on the
same directory, in another process or in this one, gets `DirectoryInUseError`
(`disklock`). The kernel drops the lock when its holder exits, however it
exits, so the file a killed process leaves behind never blocks the next one.
Readers that change nothing (`store.readonly`, ``flexcache inspect --disk``)
take no lock.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from flexcache.core.blob import Blob, host_bytes
from flexcache.core.errors import (
    CapacityError,
    ConfigError,
    CorruptBlobError,
    TierUnavailableError,
)
from flexcache.core.types import KEY_PATTERN, TENANT_PATTERN, split_key
from flexcache.store.base import Tier, TierStats
from flexcache.store.disklock import DirectoryLock
from flexcache.store.diskfile import (
    HEADER_SIZE,
    blob_view,
    decode_header,
    encode_header,
    file_identity,
    read_body,
    read_exact,
    write_all,
)

logger = logging.getLogger(__name__)

ENTRY_SUFFIX = ".fxc"
TEMP_SUFFIX = ".tmp"
DATA_DIR = "data"
QUARANTINE_DIR = "quarantine"
_MAX_META = 2**32 - 1
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


@dataclass(frozen=True)
class _Entry:
    blob_len: int
    path: str


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class DiskTier(Tier):
    """A persistent tier on a local filesystem; thread-safe, one owning process.

    It stores what it is given: use it behind `ChecksummedTier` (as
    `build_tier` and `FlexCache` do) so damaged bytes are caught.

    Args:
        directory: folder for the entries; created if missing.
        capacity_bytes: blob bytes the tiered store may keep here (reported,
            not enforced: evictions belong to the store's policy).

    Raises:
        ConfigError: `capacity_bytes` is not a positive int.
        DirectoryInUseError: another disk tier (in this process or another)
            holds the directory; give each process its own path.
        TierUnavailableError: the directory cannot be created, locked, listed
            or written; the message names the path and the OS reason.

    Example:
        >>> import tempfile
        >>> from flexcache.store.integrity import ChecksummedTier
        >>> tier = ChecksummedTier(DiskTier(tempfile.mkdtemp(), capacity_bytes=1 << 20))
        >>> tier.put("tenant.00ff00ff", b"latent bytes", meta=b"{}")
        >>> bytes(tier.get("tenant.00ff00ff"))
        b'latent bytes'
        >>> tier.close()  # gives the directory up for the next owner
    """

    name = "disk"
    persistent = True
    shared = False

    def __init__(self, directory: str | os.PathLike[str], capacity_bytes: int) -> None:
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes <= 0:
            raise ConfigError(f"disk tier capacity_bytes must be a positive int; got {capacity_bytes!r}")
        super().__init__(capacity_bytes)
        self.directory = os.path.abspath(os.fspath(directory))
        self._data_dir = os.path.join(self.directory, DATA_DIR)
        self._quarantine_dir = os.path.join(self.directory, QUARANTINE_DIR)
        self._lock = threading.Lock()
        self._index: dict[str, _Entry] = {}
        self._bytes = 0
        self._tenant_dirs: set[str] = set()
        self._stats = TierStats(self.name, 0, 0, capacity_bytes)
        self._lock_file = self._claim_directory()
        try:
            self._open_directory()
            self._load()
        except BaseException:
            self.close()  # a tier that failed to start holds nothing
            raise

    # -- start-up ---------------------------------------------------------------------

    def _claim_directory(self) -> DirectoryLock:
        """Create the directory and take its lock, before the start-up scan deletes anything in it."""
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise TierUnavailableError(
                f"disk tier cannot create directory {self.directory!r}: {_reason(exc)}"
            ) from exc
        return DirectoryLock(self.directory)

    def _open_directory(self) -> None:
        for path in (self._data_dir, self._quarantine_dir):
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise TierUnavailableError(
                    f"disk tier cannot create directory {path!r}: {_reason(exc)}"
                ) from exc
        # Creating a folder says nothing about writing into it (read-only mounts,
        # permissions): prove it with a throw-away file, as a put would write it.
        probe = os.path.join(self._data_dir, f".probe.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
            try:
                write_all(fd, b"probe")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise TierUnavailableError(
                f"disk tier directory {self._data_dir!r} is not writable: {_reason(exc)}"
            ) from exc
        finally:
            try:
                os.unlink(probe)
            except OSError:
                pass

    def _load(self) -> None:
        """Rebuild the index from the committed files, reading only their headers."""
        started = time.perf_counter()
        temps = quarantined = 0
        try:
            tenants = sorted(os.listdir(self._data_dir))
        except OSError as exc:
            raise TierUnavailableError(f"disk tier cannot list {self._data_dir!r}: {_reason(exc)}") from exc
        for tenant in tenants:
            tenant_dir = os.path.join(self._data_dir, tenant)
            if tenant.startswith(".") and tenant.endswith(TEMP_SUFFIX):
                temps += self._unlink_quietly(tenant_dir)
                continue
            if TENANT_PATTERN.fullmatch(tenant) is None or not os.path.isdir(tenant_dir):
                continue  # not ours: leave it alone
            self._tenant_dirs.add(tenant)
            try:
                names = sorted(os.listdir(tenant_dir))
            except OSError as exc:
                raise TierUnavailableError(f"disk tier cannot list {tenant_dir!r}: {_reason(exc)}") from exc
            for name in names:
                path = os.path.join(tenant_dir, name)
                if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                    temps += self._unlink_quietly(path)
                    continue
                if not name.endswith(ENTRY_SUFFIX):
                    continue
                key = f"{tenant}.{name[:-len(ENTRY_SUFFIX)]}"
                if KEY_PATTERN.fullmatch(key) is None:
                    continue
                try:
                    blob_len = self._read_committed_header(path, key)
                except FileNotFoundError:
                    continue
                except (CorruptBlobError, OSError) as exc:
                    logger.warning("disk tier: quarantining %s found at start-up: %s", path, exc)
                    self._move_to_quarantine(path, key)
                    self._stats.corrupt += 1
                    quarantined += 1
                    continue
                self._index[key] = _Entry(blob_len, path)
                self._bytes += blob_len
        logger.info(
            "disk tier %s: %d entries, %d blob bytes; removed %d temporary files, quarantined %d (%.1f ms)",
            self.directory, len(self._index), self._bytes, temps, quarantined,
            (time.perf_counter() - started) * 1000,
        )

    def _read_committed_header(self, path: str, key: str) -> int:
        """Blob length of the entry file at `path`, after checking its header and size."""
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            key_bytes = key.encode("ascii")
            header = decode_header(read_exact(fd, HEADER_SIZE + len(key_bytes)), key_bytes)
        finally:
            os.close(fd)
        if size != header.file_size:
            raise CorruptBlobError(f"entry file is {size} bytes, its header says {header.file_size}")
        return header.blob_len

    # -- the Tier interface ---------------------------------------------------------

    def put(self, key: str, blob: Blob, meta: bytes = b"") -> None:
        """Store `blob` and `meta` under `key`, durably, replacing what was there.

        Raises:
            InvalidPlanError: `key` is not ``<tenant>.<hex digest>``.
            CapacityError: `meta` is 4 GiB or more.
            TierUnavailableError: the write failed (disk full, I/O or permission
                error); the temporary file is gone and any previous entry under
                `key` is still served.
        """
        tenant, digest = split_key(key)
        view = blob_view(host_bytes(blob))
        meta = bytes(meta)
        if len(meta) > _MAX_META:
            raise CapacityError(f"disk tier metadata is limited to {_MAX_META} bytes; got {len(meta)}")
        head = encode_header(key.encode("ascii"), meta, view)
        tenant_dir = os.path.join(self._data_dir, tenant)
        final = os.path.join(tenant_dir, digest + ENTRY_SUFFIX)
        temp = os.path.join(tenant_dir, f".{digest}.{os.getpid()}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        fd = -1
        committed = False
        try:
            self._ensure_tenant_dir(tenant, tenant_dir)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
            write_all(fd, head + meta)
            write_all(fd, view)
            os.fsync(fd)
            fd, written = -1, fd
            os.close(written)  # never closed twice, even if close itself fails
            with self._lock:
                # Rename and index change together, so the index always names the
                # file that is on disk, whatever other threads do to this key.
                os.replace(temp, final)
                committed = True
                old = self._index.get(key)
                self._index[key] = _Entry(len(view), final)
                self._bytes += len(view) - (old.blob_len if old is not None else 0)
                self._stats.puts += 1
        except OSError as exc:
            with self._lock:
                self._stats.errors += 1
            raise TierUnavailableError(
                f"disk tier {self.directory!r} could not write {key}: {_reason(exc)}"
            ) from exc
        finally:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if not committed:
                self._unlink_quietly(temp)
        # The rename is only durable once the folder is; the entry is complete and
        # already served either way, so a failure here is counted, not raised.
        self._fsync_dir(tenant_dir)

    def get(self, key: str, device: Any = None) -> bytes | None:
        """The blob under `key`, or None when absent or when it failed a check.

        A file whose header or lengths are wrong is moved to ``quarantine/``,
        counted in ``stats().corrupt`` and reported as a miss.

        Raises:
            TierUnavailableError: the file could not be read (I/O or permission error).
        """
        entry = self._lookup(key, count=True)
        if entry is None:
            return None
        return self._read_entry(key, entry, want_blob=True)

    def get_meta(self, key: str) -> bytes | None:
        """The metadata stored with `key`, reading only header and meta.

        Returns None when absent, or when the header or lengths failed a check
        (the file is then quarantined like in `get`).

        Raises:
            TierUnavailableError: the file could not be read.
        """
        entry = self._lookup(key, count=False)
        if entry is None:
            return None
        return self._read_entry(key, entry, want_blob=False)

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._index

    def remove(self, key: str) -> bool:
        """Delete the entry under `key`; True when it was present.

        Raises:
            TierUnavailableError: the file could not be deleted; the entry stays listed.
        """
        with self._lock:
            entry = self._index.pop(key, None)
            if entry is None:
                return False
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass  # removed behind our back: it is gone either way
            except OSError as exc:
                self._index[key] = entry
                self._stats.errors += 1
                raise TierUnavailableError(
                    f"disk tier {self.directory!r} could not remove {key}: {_reason(exc)}"
                ) from exc
            self._bytes -= entry.blob_len
            self._stats.removes += 1
            return True

    def keys(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._index))

    def quarantine(self, key: str, expected: bytes | bytearray | memoryview | None = None) -> None:
        """Move the file under `key` to ``quarantine/`` and stop listing it.

        Args:
            expected: the blob the caller found damaged. When given, the file
                is moved only if it still holds that blob: a put that replaced
                it meanwhile keeps its new file.

        Not counted as corrupt here: the caller that found the damage counts it.
        """
        if expected is not None:
            with self._lock:
                entry = self._index.get(key)
            if entry is None:
                return
            try:
                fd = os.open(entry.path, os.O_RDONLY | _O_CLOEXEC)
            except OSError:
                return  # removed or replaced meanwhile: nothing of what was read is left
            try:
                identity = file_identity(fd)
                try:
                    still_there = read_body(fd, key, want_blob=True) == bytes(expected)
                except CorruptBlobError:
                    still_there = True  # structurally damaged too: it goes either way
            except OSError:
                return  # unreadable now: the next read reports it
            finally:
                os.close(fd)
            if still_there:
                self._quarantine_corrupt(key, entry, identity, None, counted=False)
            return
        with self._lock:
            entry = self._index.pop(key, None)
            if entry is None:
                return
            self._bytes -= entry.blob_len
            self._move_to_quarantine(entry.path, key)

    def close(self) -> None:
        """Release the directory's lock, so another tier may own it; idempotent.

        The tier must not be used afterwards.
        """
        self._lock_file.release()

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def stats(self) -> TierStats:
        with self._lock:
            self._stats.entries = len(self._index)
            self._stats.bytes_used = self._bytes
            return TierStats(**vars(self._stats))

    # -- helpers ----------------------------------------------------------------------

    def _lookup(self, key: str, *, count: bool) -> _Entry | None:
        with self._lock:
            entry = self._index.get(key)
            if count:
                self._stats.gets += 1
                if entry is None:
                    self._stats.get_misses += 1
            return entry

    def _read_entry(self, key: str, entry: _Entry, *, want_blob: bool) -> bytes | None:
        """Blob (or meta) of `entry`, checked; outside the lock so other keys read in parallel."""
        try:
            fd = os.open(entry.path, os.O_RDONLY | _O_CLOEXEC)
        except FileNotFoundError:
            # Only a remove (ours, racing this read, or someone else's) unlinks a
            # committed name; a replace never leaves the name missing.
            self._forget_vanished(key, entry, counted=want_blob)
            return None
        except OSError as exc:
            self._read_failed(key, exc)
        identity = None
        try:
            identity = file_identity(fd)
            return read_body(fd, key, want_blob=want_blob)
        except CorruptBlobError as exc:
            self._quarantine_corrupt(key, entry, identity, exc, counted=want_blob)
            return None
        except OSError as exc:
            self._read_failed(key, exc)
        finally:
            os.close(fd)

    def _read_failed(self, key: str, exc: OSError) -> NoReturn:
        with self._lock:
            self._stats.errors += 1
        raise TierUnavailableError(f"disk tier {self.directory!r} could not read {key}: {_reason(exc)}") from exc

    def _forget_vanished(self, key: str, entry: _Entry, *, counted: bool) -> None:
        with self._lock:
            if counted:
                self._stats.get_misses += 1
            if self._index.get(key) is entry and not os.path.lexists(entry.path):
                del self._index[key]
                self._bytes -= entry.blob_len

    def _quarantine_corrupt(
        self, key: str, entry: _Entry, identity: tuple[int, int] | None, exc: CorruptBlobError | None, *,
        counted: bool,
    ) -> None:
        """Move `entry`'s file aside unless a put replaced it since it was read (`identity`).

        `exc` None: the damage was found (and is counted) by the caller, the integrity layer.
        """
        if exc is not None:
            logger.warning("disk tier: quarantining %s: %s", entry.path, exc)
        with self._lock:
            self._stats.corrupt += exc is not None
            if counted:
                self._stats.get_misses += 1
            try:
                current = os.stat(entry.path)
            except OSError:
                current = None
            if current is not None and (current.st_dev, current.st_ino) != identity:
                return  # a put replaced the damaged file while we read it: keep the new one
            if current is not None:
                self._move_to_quarantine(entry.path, key)
            listed = self._index.get(key)
            if listed is not None and listed.path == entry.path:
                del self._index[key]
                self._bytes -= listed.blob_len

    def _move_to_quarantine(self, path: str, key: str) -> None:
        """Move `path` aside (or, failing that, delete it); errors are counted, not raised."""
        target = os.path.join(self._quarantine_dir, f"{key}.{time.time_ns()}.{secrets.token_hex(4)}")
        try:
            os.replace(path, target)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.warning("disk tier: cannot move %s to quarantine (%s); deleting it", path, _reason(exc))
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._stats.errors += 1
            logger.error("disk tier: cannot delete damaged entry %s: %s", path, _reason(exc))

    def _ensure_tenant_dir(self, tenant: str, tenant_dir: str) -> None:
        if tenant in self._tenant_dirs:
            return
        try:
            os.mkdir(tenant_dir)
        except FileExistsError:
            pass
        else:
            self._fsync_dir(self._data_dir)
        with self._lock:
            self._tenant_dirs.add(tenant)

    def _fsync_dir(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return  # filesystems that cannot fsync a directory
            with self._lock:
                self._stats.errors += 1
            logger.warning("disk tier: fsync of directory %s failed: %s", path, _reason(exc))

    @staticmethod
    def _unlink_quietly(path: str) -> int:
        try:
            os.unlink(path)
            return 1
        except OSError:
            return 0
