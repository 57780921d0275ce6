"""Information losses and the reconstruction matrix (S1-S3; docs/method.md, section 3).

For a kept unit set J with regularisation tau (one value per kept unit):

* ``R(J) = Sigma - Sigma_{F,J} (Sigma_{J,J} + diag tau)^{-1} Sigma_{J,F}`` (residual covariance),
* S1: input information loss ``L_A(J) = Tr R(J)``,
* S2: output information loss ``L_B(J; Z) = Tr Z R(J) Z^T``,
* S3: selection objective ``L_theta(J) = L_A(J) + theta L_B(J; Z) = Tr M R(J)``, ``M = I + theta Z^T Z``,
* reconstruction matrix ``A_J = Sigma_{F,J} (Sigma_{J,J} + diag tau)^{-1}`` (m x k), the minimiser of both.

Everything is float64 and uses Cholesky solves (never an explicit inverse).
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Sequence

import numpy as np
import scipy.linalg

from theory._validation import Real, as_covariance_matrix, as_float64_array, as_real_scalar

__all__ = [
    "information_loss",
    "information_losses",
    "DownstreamWeight",
    "reconstruction_matrix",
    "residual_covariance",
    "selection_objective",
    "as_units",
    "as_tau",
    "THETA",
]

#: The weight of the output information loss in the S3 objective.
THETA = Real(0.0, None)


def as_units(J: Sequence[int], m: int, name: str = "J", *, allow_empty: bool = True) -> np.ndarray:
    """Validate a unit set: distinct integers in ``0..m-1``; returned in the given order."""
    arr = np.asarray(J.detach().cpu() if hasattr(J, "detach") else J)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of unit indices, got shape {arr.shape}")
    if arr.size == 0:
        if not allow_empty:
            raise ValueError(f"{name}: expected at least one unit, got an empty set")
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name}: expected integer unit indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= m:
        raise ValueError(f"{name}: unit indices must lie in 0..{m - 1}, got min {arr.min()}, max {arr.max()}")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name}: unit indices must be distinct")
    return arr


def as_tau(lam, k: int, name: str = "lam") -> np.ndarray:
    """Regularisation as a vector over the k kept units: a scalar ``lambda`` or a vector ``tau``, all > 0."""
    if np.ndim(lam) == 0:
        v = as_real_scalar(lam, name)
        if not (np.isfinite(v) and v > 0):  # checked even when no unit is kept (k = 0)
            raise ValueError(f"{name}: regularisation must be finite and > 0, got {lam!r}")
        return np.full(k, v)
    tau = as_float64_array(lam, name).ravel()
    if tau.size != k:
        raise ValueError(f"{name}: expected a scalar or a vector of length |J| = {k}, got length {tau.size}")
    if np.any(tau <= 0):
        raise ValueError(f"{name}: regularisation must be finite and > 0, got {lam!r}")
    return tau


def _gram_solve(sigma: np.ndarray, J: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``(Sigma_JJ + diag tau)^{-1} Sigma_{J,F}`` by Cholesky (k x m)."""
    G = sigma[np.ix_(J, J)] + np.diag(tau)
    rhs = sigma[J, :]
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(G, lower=True, check_finite=False), rhs,
                                      check_finite=False)
    except np.linalg.LinAlgError:
        # Mathematically positive definite (tau > 0); Cholesky fails only when tau is far below the
        # round-off of Sigma_JJ. A symmetric LDL^T solve still gives the answer to working precision.
        warnings.warn("lam is below the round-off level of Sigma_JJ; using a symmetric indefinite solve",
                      RuntimeWarning, stacklevel=3)
        return scipy.linalg.solve(G, rhs, assume_a="sym", check_finite=False)


def _prepare(sigma, J, lam):
    s = as_covariance_matrix(sigma, "sigma")
    units = as_units(J, s.shape[0])
    tau = as_tau(lam, units.size)
    return s, units, tau


def residual_covariance(sigma, J, lam) -> np.ndarray:
    """``R(J) = Sigma - Sigma_{F,J} (Sigma_{J,J} + diag tau)^{-1} Sigma_{J,F}`` (m x m, S1/S3).

    ``R(J)`` is the regularised covariance of the reconstruction residual ``h - A_J h_J``; it is PSD.
    """
    s, units, tau = _prepare(sigma, J, lam)
    return _residual(s, units, tau)


def _residual(s: np.ndarray, units: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``R(J)`` for already validated inputs (``s`` exactly symmetric, as :func:`as_covariance_matrix` makes it).

    With ``Sigma_JJ + diag tau = L L^T`` and ``W = L^{-1} Sigma_{J,F}`` (k x m), ``R(J) = Sigma - W^T W``: NumPy
    forms ``W^T W`` by a symmetric rank-k product, exactly symmetric and half the work of the general product
    ``Sigma_{F,J} (Sigma_JJ + diag tau)^{-1} Sigma_{J,F}`` that a second triangular solve would need (0.50 s
    against 0.68 s at m = 4096, k = 1024, including the factorisation)."""
    if units.size == 0:
        return s.copy()
    G = s[np.ix_(units, units)] + np.diag(tau)
    try:
        L = scipy.linalg.cholesky(G, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        R = s - s[:, units] @ _gram_solve(s, units, tau)  # warns, and solves by LDL^T
        return 0.5 * (R + R.T)
    W = scipy.linalg.solve_triangular(L, s[units, :], lower=True, check_finite=False)
    return s - W.T @ W


def _as_downstream(Z, m: int) -> np.ndarray:
    # a DownstreamWeight's array was validated when it was made: only its width is checked again
    z = Z.z if isinstance(Z, DownstreamWeight) else as_float64_array(Z, "Z")
    if z.ndim != 2 or z.shape[1] != m:
        raise ValueError(f"Z: expected a downstream weight of shape (r, m) with m = {m}, got shape {z.shape}")
    return z


class DownstreamWeight:
    """A downstream weight ``Z`` (r x m) whose Gram matrix ``Z^T Z`` is formed at most once and shared.

    Both S4's greedy order (:class:`pruning.selection.GreedyOrder`, which forms ``Z^T Z`` for a long order) and
    the S2 loss ``Tr Z R(J) Z^T = sum((Z^T Z) * R(J))`` can use it; given the same object, the loss reads the Gram
    the selection formed instead of a product of ``Z`` with ``R(J)`` (1.1 s at m = 4096 with ``Z = W_hh``).

    Parameters
    ----------
    Z : array-like of shape (r, m)
        The downstream weight; copied to float64 once.
    m : int
        The number of units (columns expected).
    """

    def __init__(self, Z, m: int):
        self.z = _as_downstream(Z, m)
        self._gram: np.ndarray | None = None

    @property
    def has_gram(self) -> bool:
        """Whether ``Z^T Z`` has been formed."""
        return self._gram is not None

    def gram(self) -> np.ndarray:
        """``Z^T Z`` (m x m), formed on the first call by NumPy's symmetric rank-k product."""
        if self._gram is None:
            self._gram = self.z.T @ self.z
        return self._gram


def _weighted_trace(z, R: np.ndarray) -> float:
    """``Tr Z R Z^T`` as the sum of ``(Z R) * Z``: one BLAS product. (A three-operand ``einsum`` without
    ``optimize`` runs a plain triple loop: 2.5 s at m = 2048 with ``Z = W_hh``, against about 0.1 s.) For a Z of more
    than 2m rows (an LSTM's or GRU's recurrent weight, 4m or 3m x m) it is ``sum((Z^T Z) * R)``: NumPy forms
    ``Z^T Z`` by a symmetric product, half the work of ``Z R`` (2.6 s against 4.9 s at m = 4096 with 4m rows; at m
    rows the two cost about the same). A :class:`DownstreamWeight` whose Gram is already formed costs only that
    sum, an elementwise O(m^2) pass."""
    if isinstance(z, DownstreamWeight):
        if z.has_gram or z.z.shape[0] > 2 * z.z.shape[1]:
            return float(np.einsum("ij,ij->", z.gram(), R))
        z = z.z
    if z.shape[0] > 2 * z.shape[1]:
        return float(np.einsum("ij,ij->", z.T @ z, R))
    return float(np.einsum("ij,ij->", z @ R, z))


def information_loss(sigma, J, lam, Z=None) -> float:
    """Input (S1) or output (S2) information loss of keeping the units ``J``.

    Parameters
    ----------
    sigma : array-like (m, m) or CovarianceStats
        Time-mean covariance of the hidden states (section 2).
    J : sequence of int
        Kept units (0-based, distinct).
    lam : float or array-like of shape (|J|,)
        ``lambda > 0`` (``tau_j = lambda`` for every kept unit) or the vector ``tau``.
    Z : array-like (r, m), optional
        Downstream weight. ``None`` gives S1, ``L_A(J) = Tr R(J)``; otherwise S2,
        ``L_B(J; Z) = Tr Z R(J) Z^T``.

    Returns
    -------
    float
        The regularised least-squares loss: the minimum over A of the reconstruction error plus
        ``sum_j tau_j ||A_{:,j}||^2`` (S1/S2 closed forms).
    """
    R = residual_covariance(sigma, J, lam)
    if Z is None:
        return float(np.trace(R))
    return _weighted_trace(_downstream(Z, R.shape[0]), R)


def _downstream(Z, m: int):
    """A validated downstream weight: a :class:`DownstreamWeight` of m columns as it is, anything else as an array."""
    z = _as_downstream(Z, m)
    return Z if isinstance(Z, DownstreamWeight) else z


def information_losses(sigma, J, lam, downstream: Dict[str, Any]) -> Dict[str, float]:
    """S1 and several S2 losses of one unit set from one residual: ``{"input": Tr R(J)}`` and, for each
    ``name: Z`` of ``downstream``, ``Tr Z R(J) Z^T``, each equal to :func:`information_loss` with that ``Z``
    (forming ``R(J)``, an O(m^2 |J|) product, once instead of once per loss). A ``Z`` given as a
    :class:`DownstreamWeight` whose Gram ``Z^T Z`` a selection has already formed is read through that Gram."""
    R = residual_covariance(sigma, J, lam)
    losses = {"input": float(np.trace(R))}
    for name, Z in downstream.items():
        losses[name] = _weighted_trace(_downstream(Z, R.shape[0]), R)
    return losses


def selection_objective(sigma, J, lam, *, theta: float = 0.0, Z=None) -> float:
    """S3 objective ``L_theta(J) = L_A(J) + theta L_B(J; Z)``; ``theta = 0`` or ``Z = None`` gives ``L_A``."""
    theta = THETA.check(theta, "theta")
    R = residual_covariance(sigma, J, lam)
    value = float(np.trace(R))
    if theta and Z is not None:
        value += theta * _weighted_trace(_downstream(Z, R.shape[0]), R)
    return value


def reconstruction_matrix(sigma, J, lam) -> np.ndarray:
    """Reconstruction matrix ``A_J = Sigma_{F,J} (Sigma_{J,J} + diag tau)^{-1}`` (S1), shape (m, k).

    It minimises both S1 and S2 (``B = Z A_J``). With ``J = F`` and ``tau -> 0`` it tends to the
    identity (S6).
    """
    s, units, tau = _prepare(sigma, J, lam)
    if units.size == 0:
        raise ValueError("J: expected at least one kept unit")
    return _gram_solve(s, units, tau).T
