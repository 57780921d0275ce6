"""Which covariance should a stacked network's upper layers be pruned with? A measurement.

``spectral_prune(..., covariance_mode=...)`` offers two answers for layer l > 0 of a stack:
``"original"`` (the covariance of layer l's states in the uncompressed network, one pass for all layers)
and ``"sequential"`` (layer l's states when the layers below are already compressed, one pass per layer).
This study trains stacked LSTM and GRU classifiers on pixel-digits (steps regrouped to length T for CPU
speed), prunes every layer to the same k with both modes, and records the test accuracy and the relative
error of the logits against the full network on the test set. Resumable: trained models are cached by
configuration hash, finished rows are skipped, files are written atomically.

``python -m benchmarks layer-modes --out DIR`` writes ``DIR/layer_modes.csv`` and ``DIR/layer_modes.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from benchmarks.data import pixel_digits, regroup_steps
from benchmarks.models import RNNClassifier
from benchmarks.runio import atomic_write_text, config_key, read_csv, train_or_load, write_csv_atomic
from benchmarks.training import TrainConfig, accuracy, train_classifier
from pruning import spectral_prune

__all__ = ["LayerModeConfig", "run_layer_modes", "layer_modes_table"]

MODES = ("sequential", "original")


@dataclass(frozen=True)
class LayerModeConfig:
    """One trained stacked classifier of the study (its hash keys the checkpoint)."""

    cell: str = "LSTM"
    hidden: int = 64
    num_layers: int = 2
    bidirectional: bool = False
    seq_len: int = 16
    seed: int = 0
    train: TrainConfig = TrainConfig(epochs=25, lr=3e-3)


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _trained(config: LayerModeConfig, data, ckpt_dir: Path, progress: bool) -> RNNClassifier:
    torch.manual_seed(config.seed)
    model = RNNClassifier(data.x_train.shape[-1], config.hidden, data.n_classes, cell=config.cell,
                          num_layers=config.num_layers, bidirectional=config.bidirectional)
    path = ckpt_dir / f"{config.cell.lower()}-{config_key(config)}.pt"
    return train_or_load(model, path, lambda: train_classifier(model, data.x_train, data.y_train, config.train,
                                                               seed=config.seed, progress=progress))[0]


def run_layer_modes(out, *, cells: Sequence[str] = ("LSTM", "GRU"), ks: Sequence[int] = (8, 16, 32),
                    seeds: Sequence[int] = (0, 1, 2), hidden: int = 64, num_layers: int = 2,
                    bidirectional: bool = False, seq_len: int = 16, epochs: int = 25, progress: bool = True,
                    log: Callable[[str], None] = print) -> List[Dict]:
    """Run (or resume) the study; returns its rows (one per cell, seed, k and mode)."""
    out = Path(out)
    table = out / "layer_modes.csv"
    rows: List[Dict] = read_csv(table)
    done = {(r["model_key"], int(r["k"]), r["mode"]) for r in rows}
    data = regroup_steps(pixel_digits(), seq_len)
    for cell in cells:
        for seed in seeds:
            config = LayerModeConfig(cell=cell, hidden=hidden, num_layers=num_layers, bidirectional=bidirectional,
                                     seq_len=seq_len, seed=seed, train=TrainConfig(epochs=epochs, lr=3e-3))
            key = config_key(config)
            todo = [(k, mode) for k in ks for mode in MODES if (key, k, mode) not in done]
            if not todo:
                continue
            model = _trained(config, data, out / "checkpoints", progress)
            full_logits = _logits(model, data.x_test)
            full_acc = accuracy(model, data.x_test, data.y_test)
            for k, mode in todo:
                t0 = time.perf_counter()
                res = spectral_prune(model, data.x_train, k=k, covariance_mode=mode)
                seconds = time.perf_counter() - t0
                logits = _logits(res.model, data.x_test)
                rel_err = float(((logits - full_logits) ** 2).sum() / (full_logits ** 2).sum())
                rows.append(dict(model_key=key, cell=cell, seed=seed, hidden=hidden, num_layers=num_layers,
                                 bidirectional=bidirectional, seq_len=seq_len, k=k, mode=mode,
                                 test_accuracy=accuracy(res.model, data.x_test, data.y_test),
                                 full_accuracy=full_acc, relative_logit_error=rel_err, seconds=seconds,
                                 covariance_seconds=res.timings["covariance"]))
                log(f"{cell} seed={seed} k={k} {mode}: accuracy {rows[-1]['test_accuracy']:.3f} "
                    f"(full {full_acc:.3f}), relative logit error {rel_err:.3g}")
                write_csv_atomic(table, rows)
    atomic_write_text(out / "layer_modes.md", layer_modes_table(rows))
    return rows


def layer_modes_table(rows: Sequence[Dict]) -> str:
    """Markdown: per cell and k, median (min-max) over seeds of accuracy and logit error for each mode,
    how many seeds each mode wins on logit error, and the paired accuracy difference."""
    def med(values):
        v = np.asarray(values, dtype=float)
        return float(np.median(v)), float(v.min()), float(v.max())

    groups: Dict[Tuple[str, int], Dict[str, List[Dict]]] = {}
    for r in rows:
        groups.setdefault((r["cell"], int(r["k"])), {}).setdefault(r["mode"], []).append(r)
    lines = ["| cell | k | full accuracy | accuracy, sequential | accuracy, original | logit error, sequential | "
             "logit error, original | seeds where sequential has the smaller error | accuracy difference "
             "(sequential - original), mean +- s.e. |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (cell, k), by_mode in sorted(groups.items()):
        if set(by_mode) != set(MODES):
            continue
        seq = {str(r["seed"]): r for r in by_mode["sequential"]}
        ori = {str(r["seed"]): r for r in by_mode["original"]}
        seeds = sorted(set(seq) & set(ori))
        wins = sum(float(seq[s]["relative_logit_error"]) < float(ori[s]["relative_logit_error"]) for s in seeds)
        full = med([seq[s]["full_accuracy"] for s in seeds])
        cells = [f"{cell}", f"{k}", "%.3f" % full[0]]
        for field, fmt in (("test_accuracy", "%.3f"), ("relative_logit_error", "%.3g")):
            for d in (seq, ori):
                m, lo, hi = med([d[s][field] for s in seeds])
                cells.append(f"{fmt % m} ({fmt % lo}-{fmt % hi})")
        cells.append(f"{wins} of {len(seeds)}")
        diff = np.array([float(seq[s]["test_accuracy"]) - float(ori[s]["test_accuracy"]) for s in seeds])
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        cells.append(f"{diff.mean():+.3f} +- {se:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
