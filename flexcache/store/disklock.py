"""One owner per disk tier directory: an exclusive, non-blocking ``flock`` on ``<directory>/lock``.

The disk tier's start-up scan deletes stray temporary files and each owner
keeps its own index and byte count, so two owners of one directory would
delete each other's writes in flight and each account for part of it. The
lock is a BSD ``flock``: it belongs to the open file, so a second tier object
in the same process is refused like another process, and the kernel drops it
when its holder exits however it exits (a SIGKILLed server leaves the file,
never the lock). Readers that change nothing (`store.readonly`) take no lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import weakref

from flexcache.core.errors import DirectoryInUseError, TierUnavailableError

LOCK_FILE = "lock"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class DirectoryLock:
    """Holds ``<directory>/lock`` exclusively until `release` (or until the object is dropped).

    Args:
        directory: an existing directory.

    Raises:
        DirectoryInUseError: another holder has it, in this process or another.
        TierUnavailableError: the lock file cannot be opened, or the
            filesystem refuses ``flock``.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> lock = DirectoryLock(folder)
        >>> try:
        ...     DirectoryLock(folder)
        ... except DirectoryInUseError:
        ...     print("refused")
        refused
        >>> lock.release()
        >>> DirectoryLock(folder).release()  # free again
    """

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LOCK_FILE)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o644)
        except OSError as exc:
            raise TierUnavailableError(f"disk tier cannot open its lock file {self.path!r}: "
                                       f"{exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DirectoryInUseError(
                    f"disk tier directory {directory!r} is in use by another disk tier ({holder}): a directory "
                    "belongs to one process and one cache. Give each its own store.tiers[disk].path, share "
                    "entries between processes through a redis tier, or close the other cache first"
                ) from None
            raise TierUnavailableError(f"disk tier cannot lock {self.path!r}: {exc.strerror or exc} "
                                       "(its filesystem must support flock)") from exc
        try:  # who holds it, for the next one's message; the lock itself is the flock, not this text
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._release = weakref.finalize(self, _close, fd)  # a dropped, unclosed tier frees it too

    def release(self) -> None:
        """Give the directory up; idempotent."""
        self._release()


def _close(fd: int) -> None:
    try:
        os.close(fd)  # closing the only descriptor of the open file releases its flock
    except OSError:
        pass


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"held by {text}" if text else "its holder did not say who it is"
