"""Real multivariate sequence data sets that ship inside aeon (the optional extra ``uea``; no download at run time).

Loaded through aeon's own ``load_classification`` with the train/test split the UEA/UCR archive defines:

| task | aeon name | train / test | channels | length | classes |
|---|---|---|---|---|---|
| ``japanese-vowels`` | JapaneseVowels_eq (equal length) | 270 / 370 | 12 | 25 | 9 |
| ``basic-motions`` | BasicMotions | 40 / 40 | 6 | 100 | 4 |
| ``gun-point`` | GunPoint | 50 / 150 | 1 | 150 | 2 |

Arrays come as ``(n, channels, T)`` and become this project's ``(n, T, d_x)``; every channel is standardised with the
training split's mean and standard deviation (the test split never enters them); class labels are numbered in sorted
order. :func:`japanese_vowels_sequences` gives the original variable-length JapaneseVowels (lengths 7-29) as lists of
``(T_i, 12)`` tensors, which spectral pruning's variable-length support takes directly.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch

from benchmarks.data import SequenceData

__all__ = ["UEA_TASKS", "uea_task", "japanese_vowels_sequences"]

UEA_TASKS = {"japanese-vowels": "JapaneseVowels_eq", "basic-motions": "BasicMotions", "gun-point": "GunPoint"}


def _load(name: str, split: str):
    try:
        from aeon.datasets import load_classification
    except ImportError:
        raise ImportError("the UEA/UCR tasks read the data sets aeon ships: pip install -e '.[uea]' (dev includes "
                          "it)") from None
    return load_classification(name, split=split)


def _labels(y_train, y_test) -> Tuple[torch.Tensor, torch.Tensor, int]:
    classes = sorted(set(y_train.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    missing = set(y_test.tolist()) - set(classes)
    if missing:
        raise ValueError(f"task: test labels {sorted(missing)} do not occur in training")
    to = lambda y: torch.tensor([index[c] for c in y.tolist()], dtype=torch.int64)
    return to(y_train), to(y_test), len(classes)


def _standardiser(train: np.ndarray):
    # train: (N steps, d) of every training step; the statistics of the training split only
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return lambda a: ((a - mean) / std).astype(np.float32)


def uea_task(task: str) -> SequenceData:
    """The equal-length task ``task`` (a key of :data:`UEA_TASKS`) as a :class:`SequenceData`."""
    if task not in UEA_TASKS:
        raise ValueError(f"task: expected one of {tuple(UEA_TASKS)}, got {task!r}")
    X_train, y_train = _load(UEA_TASKS[task], "train")
    X_test, y_test = _load(UEA_TASKS[task], "test")
    x_train = np.transpose(np.asarray(X_train, dtype=np.float64), (0, 2, 1))  # (n, T, d)
    x_test = np.transpose(np.asarray(X_test, dtype=np.float64), (0, 2, 1))
    scale = _standardiser(x_train.reshape(-1, x_train.shape[-1]))
    ytr, yte, n_classes = _labels(y_train, y_test)
    return SequenceData(name=task, x_train=torch.from_numpy(scale(x_train)), y_train=ytr,
                        x_test=torch.from_numpy(scale(x_test)), y_test=yte, n_classes=n_classes)


def japanese_vowels_sequences() -> Tuple[List[torch.Tensor], torch.Tensor, List[torch.Tensor], torch.Tensor]:
    """Variable-length JapaneseVowels: ``(train sequences, train labels, test sequences, test labels)``, each
    sequence a float32 ``(T_i, 12)`` tensor, standardised with the training steps' statistics."""
    X_train, y_train = _load("JapaneseVowels", "train")
    X_test, y_test = _load("JapaneseVowels", "test")
    train = [np.asarray(x, dtype=np.float64).T for x in X_train]
    test = [np.asarray(x, dtype=np.float64).T for x in X_test]
    scale = _standardiser(np.concatenate(train))
    ytr, yte, _ = _labels(y_train, y_test)
    return ([torch.from_numpy(scale(x)) for x in train], ytr, [torch.from_numpy(scale(x)) for x in test], yte)
