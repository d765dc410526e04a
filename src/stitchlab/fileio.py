"""Atomic file writing: a temporary file in the same folder, flush, fsync, rename.

A reader (or a run interrupted at any instant) sees either the old file or the new one, never a
half-written one. The temporary name starts with a dot and ends in ``.tmp`` so that a crash in
the middle leaves only such a file, which `remove_stale_temporaries` cleans up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from pathlib import Path

from .errors import OutputError

TMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically and durably; returns the path.

    Raises
    ------
    OutputError
        when the folder cannot be created or the file cannot be written (disk full, read-only
        file system, no permission); `path` then still holds its old bytes, if it had any, and
        no temporary file is left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise
    _fsync_dir(path.parent)
    return path


def write_error(path: Path, exc: OSError) -> OutputError:
    """A one-line OutputError for a failed write of `path`, with what to do about it."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space and run the same command again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "make the folder writable or choose another --out"
    else:
        hint = "check the folder and run the same command again"
    return OutputError(f"{path}: cannot write ({reason}); {hint}")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _clean(obj):
    """Replace non-finite floats by None so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """Write `obj` as indented standard JSON (NaN and inf become null), atomically."""
    return atomic_write_text(path, json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by an interrupted atomic write under `folder`.

    Returns the files removed; one that cannot be removed (gone already, read-only) is skipped,
    since this runs on the way out of failures that must not be hidden by another.
    """
    removed = []
    for p in Path(folder).rglob(f".*{TMP_SUFFIX}"):
        try:
            if p.is_file():
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed
