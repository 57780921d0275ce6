"""Run bookkeeping: configuration keys, atomic writes and cached checkpoints."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping

from pruning.fileio import atomic_write_text, save_atomic

__all__ = ["config_key", "atomic_write_text", "write_csv_atomic", "read_csv", "read_results", "save_state_atomic",
           "train_or_load"]


#: Field metadata of a configuration field added after results were keyed: at its default value it is left out of
#: the hash, so every key computed before the field existed stays valid (``field(default=..., metadata=ADDED)``).
ADDED = {"omit_default_from_key": True}


def config_key(config) -> str:
    """Stable 12-hex-digit hash of a frozen dataclass (its fields as sorted JSON; fields marked :data:`ADDED` are
    left out while they hold their default, also inside nested configurations)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config: expected a dataclass instance, got {type(config).__name__}")
    blob = json.dumps({"type": type(config).__name__, **_key_fields(config)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _key_fields(config) -> Dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("omit_default_from_key") and f.default is not dataclasses.MISSING and value == f.default:
            continue
        out[f.name] = _key_fields(value) if dataclasses.is_dataclass(value) else _plain(value)
    return out


def _plain(value):
    """What ``dataclasses.asdict`` makes of a field value (tuples become lists in JSON either way)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


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


#: Columns of a results table that stay text (a hash such as "12e45678..." would otherwise parse as a number).
TEXT_COLUMNS = frozenset({"row_key", "model_key", "task", "method", "Z", "variant", "cell"})


def read_results(path: Path) -> List[Dict]:
    """The rows of a results table (numbers parsed back), or [] if there is none yet."""
    rows = read_csv(path)
    for r in rows:
        for key, value in r.items():
            if key in TEXT_COLUMNS:
                continue
            try:
                r[key] = int(value)
            except ValueError:
                try:
                    r[key] = float(value)
                except ValueError:
                    pass
    return rows


def save_state_atomic(path, state) -> None:
    """``torch.save`` atomically."""
    save_atomic(path, state)


def train_or_load(model, path, train: Callable[[], Any], *, map_location=None):
    """Load ``model``'s weights from the checkpoint ``path`` if it exists, else call ``train()`` (which trains
    ``model`` in place) and save the weights atomically. Returns ``(model, loaded)``; the model is in eval mode."""
    import torch

    path = Path(path)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
        loaded = True
    else:
        train()
        save_state_atomic(path, model.state_dict())
        loaded = False
    model.eval()
    return model, loaded
