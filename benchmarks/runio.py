"""Run bookkeeping: configuration keys, atomic writes and cached checkpoints."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import torch

__all__ = ["config_key", "atomic_write_text", "write_csv_atomic", "save_state_atomic"]


def config_key(config) -> str:
    """Stable 12-hex-digit hash of a frozen dataclass (its fields as sorted JSON)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config: expected a dataclass instance, got {type(config).__name__}")
    blob = json.dumps({"type": type(config).__name__, **dataclasses.asdict(config)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # readers see the old file or the complete new one, never a partial one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    """Write a text file atomically."""
    _atomic(Path(path), lambda fh: fh.write(text.encode()))


def write_csv_atomic(path, rows: Iterable[Mapping], fieldnames=None) -> None:
    """Write rows (dicts) as CSV atomically."""
    rows = list(rows)
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def save_state_atomic(path, state) -> None:
    """``torch.save`` atomically."""
    _atomic(Path(path), lambda fh: torch.save(state, fh))
