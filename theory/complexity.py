"""Norm-based complexity measures of an Elman network, the rival predictors of the generalization gap that the
generalization-measures protocol ranks beside the S11/S12 bounds (``docs/theory.md``, "Complexity measures").

None of these is the paper's; they transcribe the feed-forward measures of the generalization-measures literature
to the recurrence ``h_t = sigma(W h_{t-1} + U x_t + b)``, ``f = V h_T + c`` (defined here):

* :func:`spectral_product`: ``log(||U||_2 ||W||_2 ||V||_2)``, each weight matrix counted once; with
  ``unrolled=True`` the recurrent matrix is counted ``T - 1`` times, as along the longest path ``x_1 -> f_T`` of
  the unrolled network (the factor ``||W||^{T-1}`` of the Lipschitz constant in S11's class);
* :func:`frobenius_product`: ``log(||U||_F ||W||_F ||V||_F)``;
* :func:`path_norm`: the l2 path norm of the unrolled network: the square root of the sum, over every path from an
  input coordinate at any step (or from a bias) to an output, of the product of the squared weights along it,
  computed as one forward pass of the linear recurrence with squared weights on all-ones inputs;
* :func:`spectral_complexity`: Bartlett, Foster and Telgarsky's (2017) ``prod_i ||A_i||_2 (sum_i
  (||A_i^T||_{2,1} / ||A_i||_2)^{2/3})^{3/2} / gamma`` over the chain ``U, W (T - 1 times), V`` of the longest
  path, normalised by a margin ``gamma`` (:func:`margin_percentile`); returned as its logarithm.

Every function takes :class:`theory.elman.ElmanWeights` (float64) and returns a float.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from theory._validation import Integer, Real
from theory.elman import ElmanWeights

__all__ = ["spectral_product", "frobenius_product", "path_norm", "spectral_complexity", "margin_percentile",
           "margins"]

_T = Integer(1, None, what="a sequence length >= 1")


def _op(a: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(a, ord=2)) if a.numel() else 0.0


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


def spectral_product(w: ElmanWeights, T: int = 1, *, unrolled: bool = False) -> float:
    """``log ||U||_2 + r log ||W||_2 + log ||V||_2`` with ``r = T - 1`` when ``unrolled`` else 1."""
    T = _T.check(T, "T")
    r = (T - 1) if unrolled else 1
    return _log(_op(w.U)) + (r * _log(_op(w.W)) if r else 0.0) + _log(_op(w.V))


def frobenius_product(w: ElmanWeights) -> float:
    """``log ||U||_F + log ||W||_F + log ||V||_F``."""
    return sum(_log(float(torch.linalg.matrix_norm(a))) for a in (w.U, w.W, w.V))


def path_norm(w: ElmanWeights, T: int) -> float:
    """The l2 path norm of the network unrolled over ``T`` steps (biases are paths from a constant input).

    ``g_t = (W o W) g_{t-1} + (U o U) 1 + b o b`` from ``g_0 = 0``; the squared path norm is
    ``sum((V o V) g_T + c o c)``: every path's product of squared weights appears exactly once in it.
    """
    T = _T.check(T, "T")
    W2, U2, V2 = w.W ** 2, w.U ** 2, w.V ** 2
    drive = U2.sum(dim=1) + w.b ** 2
    g = torch.zeros(w.width, dtype=torch.float64)
    for _ in range(T):
        g = W2 @ g + drive
    return math.sqrt(float((V2 @ g).sum() + (w.c ** 2).sum()))


def margins(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``f_y - max_{j != y} f_j`` per sequence, for outputs ``f`` (n, d_y) and labels ``y`` (n,)."""
    f = np.asarray(f, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    if f.ndim != 2 or y.shape != (f.shape[0],) or f.shape[1] < 2:
        raise ValueError(f"f, y: expected outputs (n, d_y >= 2) and n labels, got {f.shape} and {y.shape}")
    own = f[np.arange(y.size), y]
    other = f.copy()
    other[np.arange(y.size), y] = -np.inf
    return own - other.max(axis=1)


def margin_percentile(f: np.ndarray, y: np.ndarray, q: float = 10.0) -> float:
    """The ``q``-th percentile of the margins of the correctly classified sequences (positive by construction;
    the generalization-measures literature takes q = 10); nan when none is correct."""
    q = Real(0.0, 100.0).check(q, "q")
    mg = margins(f, y)
    mg = mg[mg > 0]
    return float(np.percentile(mg, q)) if mg.size else math.nan


def spectral_complexity(w: ElmanWeights, T: int, gamma: float) -> float:
    """``log`` of the margin-normalised spectral complexity over the chain ``U, W^(T-1), V`` (see the module)."""
    T = _T.check(T, "T")
    if not (isinstance(gamma, (int, float)) and gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma: expected a finite margin > 0, got {gamma!r}")
    chain = [(w.U, 1), (w.W, T - 1), (w.V, 1)]
    log_prod, ratio_sum = 0.0, 0.0
    for a, times in chain:
        if not times:
            continue
        op = _op(a)
        if op == 0:
            return -math.inf
        l21 = float(torch.linalg.vector_norm(a, dim=1).sum())  # ||A^T||_{2,1}: the l2 norms of A's rows, summed
        log_prod += times * math.log(op)
        ratio_sum += times * (l21 / op) ** (2.0 / 3.0)
    return log_prod + 1.5 * math.log(ratio_sum) - math.log(gamma)
