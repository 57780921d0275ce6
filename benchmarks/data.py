"""Data sets of the benchmark runs. Nothing is downloaded: the embedded default is scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np
import torch

from theory._validation import Integer, Real

__all__ = ["SequenceData", "pixel_digits", "regroup_steps", "subsample_train", "validation_split", "stratified_holdout"]


@dataclass(frozen=True)
class SequenceData:
    """A sequence-classification data set with a fixed train/test split, and optionally a validation split
    carved from the training data (:func:`validation_split`).

    ``x_*`` are float32 tensors (n, T, d_x); ``y_*`` int64 class labels (n,).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    x_val: Optional[torch.Tensor] = None
    y_val: Optional[torch.Tensor] = None

    @property
    def val(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(x_val, y_val)``, or None without a validation split."""
        return None if self.x_val is None else (self.x_val, self.y_val)

    @property
    def seq_len(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.x_train.shape[2])


def pixel_digits(*, permuted: bool = False, test_fraction: float = 0.3, split_seed: int = 0,
                 permutation_seed: int = 1) -> SequenceData:
    """Pixel-by-pixel digits: scikit-learn's 1,797 8x8 digits read one pixel per step (T = 64, d_x = 1).

    The CPU-sized analogue of Pixel-MNIST. Pixels are scaled to [0, 1]. The split is fixed by
    ``split_seed`` (stratified by class); ``permuted=True`` applies one fixed pixel permutation
    (``permutation_seed``) to every image, the permuted-pixel variant.
    """
    from sklearn.datasets import load_digits

    Real(0.0, 1.0, closed="neither").check(test_fraction, "test_fraction")
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # (1797, 64)
    y = digits.target.astype(np.int64)
    if permuted:
        x = x[:, np.random.default_rng(permutation_seed).permutation(x.shape[1])]
    test_mask = stratified_holdout(y, test_fraction, split_seed)
    to_x = lambda a: torch.from_numpy(np.ascontiguousarray(a[:, :, None]))
    return SequenceData(
        name="pixel-digits-permuted" if permuted else "pixel-digits",
        x_train=to_x(x[~test_mask]), y_train=torch.from_numpy(y[~test_mask]),
        x_test=to_x(x[test_mask]), y_test=torch.from_numpy(y[test_mask]),
        n_classes=10,
    )


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a held-out part: ``round(fraction * n_c)`` sequences of every class c, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):  # stratified: the same fraction of every class
        idx = np.flatnonzero(y == c)
        held.extend(rng.choice(idx, size=int(round(fraction * idx.size)), replace=False))
    mask = np.zeros(y.size, dtype=bool)
    mask[np.asarray(held, dtype=np.int64)] = True
    return mask


def validation_split(data: SequenceData, fraction: float, seed: int = 0) -> SequenceData:
    """Move a stratified ``fraction`` of the training sequences into the validation split (``x_val``, ``y_val``).

    The split depends on ``seed`` only, not on the seed of a network, so every network of a sweep trains on the
    same sequences and is selected on the same validation set; the test set is untouched. ``fraction = 0``
    returns the data as it is.
    """
    fraction = Real(0.0, 1.0, closed="left").check(fraction, "fraction")
    if fraction == 0:
        return data
    if data.x_val is not None:
        raise ValueError("data: already has a validation split")
    held = stratified_holdout(data.y_train.numpy(), fraction, seed)
    if held.all() or not held.any():
        raise ValueError(f"fraction: {fraction:g} of {held.size} training sequences leaves no training or no "
                         f"validation sequence")
    keep = torch.from_numpy(np.flatnonzero(~held))
    out = torch.from_numpy(np.flatnonzero(held))
    return replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep], x_val=data.x_train[out],
                   y_val=data.y_train[out])


def regroup_steps(data: SequenceData, T: int) -> SequenceData:
    """The same sequences read ``T0 / T`` consecutive steps at a time: (n, T0, d_x) -> (n, T, d_x T0 / T).

    Pixel-by-pixel digits (T0 = 64) become T = 32 with two pixels per step, T = 8 with one image row per
    step, and so on: the sequence-length axis of a sweep without changing the information in the input.
    """
    T0 = data.seq_len
    T = Integer(1, T0, what=f"a divisor of the sequence length {T0}").check(T, "T")
    if T0 % T:
        raise ValueError(f"T: expected a divisor of the sequence length {T0}, got {T!r}")
    if T == T0:
        return data
    group = lambda x: x.reshape(x.shape[0], int(T), -1)
    return replace(data, name=f"{data.name} (T={T})", x_train=group(data.x_train), x_test=group(data.x_test),
                   x_val=None if data.x_val is None else group(data.x_val))


def subsample_train(data: SequenceData, n: int, seed: int = 0) -> SequenceData:
    """Keep ``n`` training sequences, drawn without replacement with ``seed`` (the validation and test sets are
    unchanged)."""
    n_all = data.x_train.shape[0]
    n = Integer(1, n_all, what=f"a number of training sequences in 1..{n_all}").check(n, "n")
    if n == n_all:
        return data
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n_all, size=int(n), replace=False)))
    return replace(data, name=f"{data.name} (n={n})", x_train=data.x_train[idx], y_train=data.y_train[idx])
