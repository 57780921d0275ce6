"""Input validation shared by ``theory`` and ``pruning``: turn user input into float64 arrays or fail clearly."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["as_float64_array", "as_covariance_matrix", "check_positive_scalar"]


def as_float64_array(x: Any, name: str) -> np.ndarray:
    """Convert a NumPy array, torch tensor or nested sequence to a finite float64 array."""
    if hasattr(x, "detach"):  # torch.Tensor, any device / dtype
        x = x.detach().to("cpu").double().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__}") from exc
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def as_covariance_matrix(sigma: Any, name: str = "sigma") -> np.ndarray:
    """Validate a covariance: square, finite, symmetric (up to round-off), PSD diagonal.

    Accepts a ``CovarianceStats`` (its mean is taken), a torch tensor or an array. The result is
    symmetrised exactly, so later Cholesky factorisations see a symmetric matrix.
    """
    if hasattr(sigma, "mean") and hasattr(sigma, "count") and callable(sigma.mean):
        sigma = sigma.mean()
    s = as_float64_array(sigma, name)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"{name}: expected a square (m, m) matrix, got shape {s.shape}")
    if s.shape[0] == 0:
        raise ValueError(f"{name}: expected m >= 1 hidden units, got an empty matrix")
    scale = max(float(np.max(np.abs(s))), np.finfo(np.float64).tiny)
    if float(np.max(np.abs(s - s.T))) > 1e-8 * scale:
        raise ValueError(f"{name}: expected a symmetric matrix (a covariance)")
    if np.any(np.diag(s) < -1e-12 * scale):
        raise ValueError(f"{name}: a covariance has a non-negative diagonal; got a negative entry")
    return 0.5 * (s + s.T)


def as_real_scalar(value: Any, name: str) -> float:
    """``float(value)`` for a real number (bools, strings and None refused with a TypeError naming the
    argument); finiteness is left to the caller."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a real number, got {value!r}") from exc


def check_positive_scalar(value: Any, name: str) -> float:
    """A finite float > 0, or a ValueError naming the argument."""
    v = as_real_scalar(value, name)
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return v
