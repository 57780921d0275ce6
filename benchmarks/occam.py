"""A non-vacuous test-error bound for a pruned RNN on real data (``python -m benchmarks occam``).

The Occam bound O1 (``theory.occam``, derived here, not the paper's) applied to spectrally pruned, fine-tuned and
quantized Elman RNNs on scikit-learn's handwritten digits read one image row per step (T = 8, d_x = 8, 10
classes), beside the paper's own bounds for the same networks (S11 for the full network, S12 for the pruned one,
both on their margin-ramp risk) and a dense network of width k trained from scratch and quantized the same way.

The split is uniformly random (not stratified: a uniformly chosen subset of an i.i.d. sample is an i.i.d. sample,
which O1 needs): S, 75% of the 1,797 images, is the bound's sample and the only data any network is trained,
pruned, fine-tuned, quantized or selected on; the other 25% is the test set, touched only to measure the test error
of the network each bound is about (with a 99% Clopper-Pearson interval). Every choice made after seeing S (k, L,
the checkpoint) is part of the code word, so O1 pays for it; the constant classifier's error (one minus the
largest class frequency in S) is the level to beat.

``DIR/occam.csv`` (rows keyed by their configuration; checkpoints cached; atomic writes) and ``DIR/occam.md``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from benchmarks.models import RNNClassifier
from benchmarks.nonvacuous import clopper_pearson
from benchmarks.runio import atomic_write_text, config_key, read_results, train_or_load, write_csv_atomic
from benchmarks.training import RECIPE, TrainConfig, torch_threads, train_model

__all__ = ["OccamConfig", "digit_rows_split", "run_occam", "occam_table"]


@dataclass(frozen=True)
class OccamConfig:
    """The study: a full network of width m, the kept widths and quantization levels tried, and the training."""

    m: int = 64
    ks: Tuple[int, ...] = (6, 8, 10)
    levels: Tuple[int, ...] = (2, 3)
    seed: int = 0
    split_seed: int = 0
    bound_fraction: float = 0.75
    train: TrainConfig = replace(RECIPE, epochs=60)
    finetune: TrainConfig = replace(RECIPE, epochs=60)
    qat_epochs: int = 80
    penalty: float = 0.3
    delta: float = 0.05
    confidence: float = 0.99


def digit_rows_split(config: OccamConfig):
    """``(x_S, y_S, x_test, y_test)``: the digits row by row, split uniformly at random (``split_seed``)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy((digits.data / 16.0).astype(np.float32).reshape(-1, 8, 8))
    y = torch.from_numpy(digits.target.astype(np.int64))
    perm = torch.from_numpy(np.random.default_rng(config.split_seed).permutation(len(y)))
    n_s = int(round(config.bound_fraction * len(y)))
    s, t = perm[:n_s], perm[n_s:]
    return x[s], y[s], x[t], y[t]


def _train(model, x, y, config: TrainConfig, seed: int, path: Path):
    return train_or_load(model, path, lambda: train_model(model, x, y, config, seed=seed, progress=False))[0]


def _test_error(net, x, y) -> int:
    with torch.no_grad():
        return int((net(x).argmax(-1) != y).sum())


def _row_key(config: OccamConfig, method: str, k: int, L: int) -> str:
    return config_key(replace(config, ks=(k,), levels=(L,))) + f"-{method}"


def _row(config, method, k, L, quantized, x_t, y_t, **extra) -> Dict:
    wrong = _test_error(quantized, x_t, y_t)
    lo, hi = clopper_pearson(wrong, len(y_t), config.confidence)
    b = quantized.bound
    return dict(row_key=_row_key(config, method, k, L), method=method,
                m=config.m, k=k, levels=L, seed=config.seed, n=b.n, bits=b.bits,
                bits_integers=quantized.bits["integers"], bits_scales=quantized.bits["scales"],
                train_error=b.train_error, occam_bound=b.bound, pinsker_bound=b.pinsker, trivial=b.trivial,
                test_error=wrong / len(y_t), test_error_lo=lo, test_error_hi=hi, n_test=len(y_t), **extra)


def run_occam(out, config: OccamConfig = OccamConfig(), *, log: Callable[[str], None] = print) -> List[Dict]:
    """Train, prune, fine-tune, quantize and bound (every row not yet in ``DIR/occam.csv``); write the report."""
    from pruning import spectral_prune
    from pruning.quantize import quantize_elman
    from theory import s11_bound, s12_bound

    out = Path(out)
    ck = out / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    path = out / "occam.csv"
    rows = read_results(path)
    have = {r["row_key"] for r in rows}
    x, y, x_t, y_t = digit_rows_split(config)
    trivial = 1.0 - float(np.bincount(y.numpy()).max()) / len(y)
    bound_args = dict(loss="margin", input_bound=math.sqrt(8.0), delta=config.delta)
    t0 = time.perf_counter()

    def add(row):
        nonlocal rows
        rows = [r for r in rows if r["row_key"] != row["row_key"]] + [row]
        write_csv_atomic(path, rows)
        log(f"{row['method']} k={row['k']} L={row['levels']}: {row['bits']:.0f} bits, S error "
            f"{row['train_error']:.3f}, O1 {row['occam_bound']:.3f}, test error {row['test_error']:.3f} "
            f"({time.perf_counter() - t0:.0f} s)")

    with torch_threads(config.train.threads):
        torch.manual_seed(config.seed)
        full = RNNClassifier(8, config.m, 10, nonlinearity="tanh", irnn=False, orthogonal=True)
        _train(full, x, y, config.train, config.seed, ck / f"occam-full-{config_key(config.train)}-{config.m}-"
                                                           f"{config.seed}-{config.split_seed}.pt")
        s11 = s11_bound(full.rnn, full.readout, x, y, **bound_args)
        full_test = _test_error(full, x_t, y_t) / len(y_t)
        stats = None
        for k in config.ks:
            # one covariance pass serves every k
            pruned = spectral_prune(full, None if stats is not None else x, k=k, covariance=stats)
            stats = pruned.covariance
            s12 = s12_bound(full.rnn, full.readout, pruned.units, pruned.A, x, y, with_full=False, **bound_args)
            pruned_test = _test_error(pruned.model, x_t, y_t) / len(y_t)
            tuned = pruned.model
            _train(tuned, x, y, config.finetune, config.seed, ck / f"occam-tuned-{config_key(config)}-{k}.pt")
            torch.manual_seed(config.seed)
            dense = RNNClassifier(8, k, 10, nonlinearity="tanh", irnn=False, orthogonal=True)
            _train(dense, x, y, replace(config.train, epochs=config.train.epochs + config.finetune.epochs),
                   config.seed, ck / f"occam-dense-{config_key(config)}-{k}.pt")
            for L in config.levels:
                for method, net in (("spectral + fine-tune", tuned), ("dense from scratch", dense)):
                    if _row_key(config, method, k, L) in have:
                        continue
                    qz = quantize_elman(net.rnn, net.readout, x, y, levels=L, epochs=config.qat_epochs,
                                        penalty=config.penalty, delta=config.delta, trivial=trivial,
                                        seed=config.seed)
                    add(_row(config, method, k, L, qz, x_t, y_t, full_s11_bound=s11.bound,
                             full_test_error=full_test, s12_bound=s12.bound, pruned_test_error=pruned_test,
                             float_test_error=_test_error(net, x_t, y_t) / len(y_t)))
    atomic_write_text(out / "occam.md", occam_table(rows, config))
    return rows


def occam_table(rows, config: OccamConfig) -> str:
    """The report section: every quantized network's O1 bound and measured test error, the best per method."""
    lines = ["# A non-vacuous bound for a pruned RNN on real data (O1, derived here, not the paper's)", "",
             f"Digits row by row (T = 8, d_x = 8, 10 classes); S = {rows[0]['n'] if rows else '?'} images chosen "
             f"uniformly at random (the bound's sample and all the training data), {rows[0]['n_test'] if rows else '?'} "
             f"test images. Full tanh RNN m = {config.m}, pruned by spectral pruning to k, fine-tuned "
             f"{config.finetune.epochs} epochs, quantized to 2L + 1 levels per tensor with "
             f"{config.qat_epochs} + {config.qat_epochs // 4} epochs of quantization-aware training; 'dense from "
             f"scratch' is a width-k network trained {config.train.epochs + config.finetune.epochs} epochs and "
             f"quantized the same way. O1 at delta = {config.delta:g}; test errors with "
             f"{config.confidence:.0%} Clopper-Pearson intervals. S11 / S12: the paper's bounds (on the margin-ramp "
             f"risk at their best gamma) of the full network and of the pruned network before fine-tuning.", "",
             "| method | k | L | bits | S error | O1 bound | test error (quantized) | constant classifier | "
             "S12 (pruned) | S11 (full) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["k"], r["levels"])):
        # S12 is about the spectrally pruned network; a dense network trained from scratch has none
        s12 = f"{r['s12_bound']:.3g}" if r["method"].startswith("spectral") else "-"
        lines.append(f"| {r['method']} | {r['k']} | {r['levels']} | {r['bits']:.0f} | {r['train_error']:.3f} | "
                     f"**{r['occam_bound']:.3f}** | {r['test_error']:.3f} [{r['test_error_lo']:.3f}, "
                     f"{r['test_error_hi']:.3f}] | {r['trivial']:.3f} | {s12} | {r['full_s11_bound']:.3g} |")
    lines.append("")
    for method in dict.fromkeys(r["method"] for r in rows):
        best = min((r for r in rows if r["method"] == method), key=lambda r: r["occam_bound"])
        verdict = "below 0.5 and below the constant classifier" if best["occam_bound"] < min(0.5, best["trivial"]) \
            else ("below the constant classifier but not below 0.5" if best["occam_bound"] < best["trivial"]
                  else "vacuous")
        lines.append(f"- {method}: best O1 bound {best['occam_bound']:.3f} (k = {best['k']}, L = {best['levels']}, "
                     f"{best['bits']:.0f} bits), {verdict}; its measured test error {best['test_error']:.3f}. "
                     f"The full network's S11 bound: {best['full_s11_bound']:.3g}; full network's test error "
                     f"{best['full_test_error']:.3f}.")
    return "\n".join(lines) + "\n"
