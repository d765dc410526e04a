"""One writer per run directory: an advisory lock on ``RUN/.lock``.

Every command that writes into a run directory holds the lock for as long as it runs. The lock
is an `fcntl.flock` on the file, so the kernel drops it the moment its process ends, however it
ends: a run killed with SIGKILL or lost to a crash leaves the file behind but never a lock, and
the next run simply takes it over. The file's text (pid, host, start time) only serves the
message a second, refused run prints.

Limitation: flock needs a POSIX system and a file system that supports it (local disks do, most
NFS set-ups emulate it); on Windows or without lock support the lock cannot be taken and the
command stops with a message saying so.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

from .errors import OutputError, RunDirInUse

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunLock:
    """The lock of one run directory; use as a context manager.

    Examples
    --------
    >>> with RunLock(run_dir):  # doctest: +SKIP
    ...     write_results(run_dir / "results.json", results)
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunDirInUse naming the process that holds it."""
        if fcntl is None:
            raise OutputError(f"{self.path}: cannot lock the run directory on this system "
                              f"(no fcntl); run stitchlab on Linux or macOS")
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _describe(_read(fd))
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunDirInUse(
                        f"{self.run_dir}: in use by another stitchlab process ({holder}); "
                        f"wait for it to finish or stop it, then run the command again"
                    ) from None
                raise OutputError(
                    f"{self.path}: cannot lock the run directory ({exc.strerror}); "
                    f"put the run on a local disk"
                ) from None
            # A holder that was just releasing may have unlinked the file between our open and
            # our flock; then we hold a lock on a file nobody else can see, so try again.
            if self._still_linked(fd):
                break
            os.close(fd)

        previous = _read(fd)
        if previous:
            log.info("taking over %s left by %s, which is no longer running",
                     self.path, _describe(previous))
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:
            pass  # the text is only for messages; the flock is what counts
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up and remove the file (no-op when not held)."""
        if self._fd is None:
            return
        try:
            # Unlink while still holding the lock, so nobody can lock the old file after us.
            os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(
                f"{self.path}: cannot create the lock file ({exc.strerror}); "
                f"make the run directory writable or choose another --out"
            ) from None

    def _still_linked(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        own = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        info = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {"unreadable": True}
    return info if isinstance(info, dict) else {"unreadable": True}


def _describe(info: dict) -> str:
    if not info or "pid" not in info:
        return "process unknown"
    return f"pid {info['pid']} on host {info.get('host', '?')}, started {info.get('started', '?')}"
