"""Run bookkeeping: configuration keys, atomic writes and cached checkpoints."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Dict, Iterable, List, Mapping

from pruning.fileio import atomic_write_text, save_atomic

__all__ = ["config_key", "atomic_write_text", "write_csv_atomic", "read_csv", "save_state_atomic"]


def config_key(config) -> str:
    """Stable 12-hex-digit hash of a frozen dataclass (its fields as sorted JSON)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config: expected a dataclass instance, got {type(config).__name__}")
    blob = json.dumps({"type": type(config).__name__, **dataclasses.asdict(config)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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


def read_csv(path) -> List[Dict[str, str]]:
    """The rows of a CSV table as dicts of strings, or [] when the file does not exist yet."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def save_state_atomic(path, state) -> None:
    """``torch.save`` atomically."""
    save_atomic(path, state)
