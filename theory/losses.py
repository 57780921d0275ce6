"""The losses of docs/method.md, section 7 (the psi of S11 and S12), per sequence, in float64 [derived: constants].

Every function takes the network's outputs ``f`` of shape ``(n, d_y)`` (many-to-one: the last step)
or ``(n, T, d_y)`` (many-to-many) and the matching targets, and returns one value per sequence
(the time average for ``(n, T, d_y)``), shape ``(n,)``. With ``lengths`` (right-padded many-to-many outputs), the time
average is over each sequence's real steps; targets past a length are not read (an ignore index there is fine).

* ``margin_ramp_loss``: ``min(1, max(0, 1 - margin/gamma))`` with ``margin = f_y - max_{i != y} f_i``;
  in ``[0, 1]``, ``sqrt(2)/gamma``-Lipschitz in ``f``, and at least the 0-1 loss.
* ``cross_entropy_loss``: ``logsumexp(f) - f_y``; ``sqrt(2)``-Lipschitz.
* ``squared_loss``: ``||y - f||^2``.
* ``zero_one_loss``: ``1[argmax f != y]`` (what the margin bound bounds).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy.special import logsumexp

from theory._validation import as_float64_array, check_positive_scalar
from theory.elman import step_mask

__all__ = ["margin_ramp_loss", "cross_entropy_loss", "squared_loss", "zero_one_loss", "LOSS_NAMES"]

LOSS_NAMES = ("margin", "cross_entropy", "squared")


def _step_mask(lengths, f: np.ndarray) -> Optional[np.ndarray]:
    if lengths is None:
        return None
    if f.ndim != 3:
        raise ValueError(f"lengths: given for outputs of shape {f.shape}; lengths need many-to-many outputs "
                         f"(n, T, d_y)")
    return step_mask(lengths, f.shape[0], f.shape[1]).numpy()


def _array(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)


def _outputs(outputs, name: str, lengths) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Float64 outputs (n, d_y) or (n, T, d_y) and the mask of real steps; padding becomes 0 (never read, and it
    keeps the arithmetic finite whatever the padding held)."""
    if lengths is None:
        f = as_float64_array(outputs, name)
        mask = None
    else:
        raw = _array(outputs)
        mask = _step_mask(lengths, raw)
        f = as_float64_array(np.where(mask[..., None], raw, 0), name)
    if f.ndim not in (2, 3) or f.shape[0] == 0:
        raise ValueError(f"{name}: expected shape (n, d_y) or (n, T, d_y) with n >= 1, got {f.shape}")
    return f, mask


def _logits_and_labels(outputs, labels, lengths=None) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    f, mask = _outputs(outputs, "outputs", lengths)
    if f.shape[-1] < 2:
        raise ValueError(f"outputs: classification needs d_y >= 2 classes, got {f.shape[-1]}")
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if mask is not None and y.shape == mask.shape:
        y = np.where(mask, y, 0)
    if y.shape != f.shape[:-1]:
        raise ValueError(f"labels: expected shape {f.shape[:-1]} to match outputs {f.shape}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels: expected integer class labels, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= f.shape[-1]):
        raise ValueError(f"labels: expected classes in [0, {f.shape[-1]}), got [{y.min()}, {y.max()}]")
    return f, y.astype(np.int64), mask


def _per_sequence(values: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    if values.ndim == 1:
        return values
    if mask is None:
        return values.mean(axis=1)
    return np.where(mask, values, 0.0).sum(axis=1) / mask.sum(axis=1)


def _margins(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    true = np.take_along_axis(f, y[..., None], axis=-1)[..., 0]
    others = f.copy()
    np.put_along_axis(others, y[..., None], -np.inf, axis=-1)
    return true - others.max(axis=-1)


def margin_ramp_loss(outputs, labels, gamma: float, lengths=None) -> np.ndarray:
    """Ramp loss of the margin at scale ``gamma`` (> 0), per sequence."""
    gamma = check_positive_scalar(gamma, "gamma")
    f, y, mask = _logits_and_labels(outputs, labels, lengths)
    return _per_sequence(np.clip(1.0 - _margins(f, y) / gamma, 0.0, 1.0), mask)


def zero_one_loss(outputs, labels, lengths=None) -> np.ndarray:
    """Misclassification indicator (ties count as errors, as a margin <= 0 does), per sequence."""
    f, y, mask = _logits_and_labels(outputs, labels, lengths)
    return _per_sequence((_margins(f, y) <= 0).astype(np.float64), mask)


def cross_entropy_loss(outputs, labels, lengths=None) -> np.ndarray:
    """Cross-entropy of softmax(outputs) against the labels, per sequence."""
    f, y, mask = _logits_and_labels(outputs, labels, lengths)
    true = np.take_along_axis(f, y[..., None], axis=-1)[..., 0]
    return _per_sequence(logsumexp(f, axis=-1) - true, mask)


def squared_loss(outputs, targets, lengths=None) -> np.ndarray:
    """Squared Euclidean error ``||y - f||^2``, per sequence."""
    f, mask = _outputs(outputs, "outputs", lengths)
    y = _array(targets)
    if y.shape != f.shape:
        raise ValueError(f"targets: expected shape {f.shape} to match outputs, got {y.shape}")
    y = as_float64_array(y if mask is None else np.where(mask[..., None], y, 0), "targets")
    return _per_sequence(np.sum((y - f) ** 2, axis=-1), mask)
