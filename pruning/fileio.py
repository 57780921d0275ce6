"""Atomic file writes: a reader (or a re-run after a crash) sees the old file or the complete new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

__all__ = ["atomic_write", "atomic_write_text", "save_atomic", "remove_stale_temporaries", "existing_file"]


def existing_file(path, name: str) -> Path:
    """``path`` as a Path, after checking that it is a file to read: FileNotFoundError when nothing is there,
    ValueError for a directory; both name the argument ``name``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: {str(path)!r} is a directory; expected a file")
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file {str(path)!r}")
    return path


def atomic_write(path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            # mkstemp creates the file with mode 0600; give it what open() would: 0666 less the process umask
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # rename is atomic within one file system
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    atomic_write(path, lambda fh: fh.write(text.encode()))


def save_atomic(path, obj: Any) -> None:
    """``torch.save(obj, path)`` atomically."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def remove_stale_temporaries(directory) -> int:
    """Delete the temporary files :func:`atomic_write` leaves in ``directory`` when its process is killed
    mid-write (``.NAME.*.tmp``); returns how many. Call it when a single-writer run starts."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.glob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
