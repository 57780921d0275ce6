"""Spectrum of the time-mean covariance: degrees of freedom and leverage scores.

Implements section 5 of ``docs/method.md``:

* ``N(lambda) = Tr[Sigma (Sigma + lambda I)^{-1}] = sum_j mu_j / (mu_j + lambda)``  (the paper's
  degrees of freedom; the facts of S7 are derived in ``docs/theory.md``);
* leverage scores ``q_j = [Sigma (Sigma + lambda I)^{-1}]_jj / N(lambda)`` used by S8's sampling;
* the S8 sample-size condition ``5 N log(16 N / delta)`` (constants from Bach 2017, Prop. 1).

All computations are in float64.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from theory._validation import PROBABILITY, as_covariance_matrix, as_real_scalar, check_positive_scalar

__all__ = [
    "eigenvalues",
    "degrees_of_freedom",
    "lambda_for_dof",
    "leverage_scores",
    "dof_sample_size",
]


def eigenvalues(sigma) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix in decreasing order, clipped at 0.

    Parameters
    ----------
    sigma : array-like of shape (m, m) or CovarianceStats
        Time-mean covariance (section 2).

    Returns
    -------
    numpy.ndarray of shape (m,)
        ``mu_1 >= ... >= mu_m >= 0``. Eigenvalues below the usual numerical-rank tolerance
        ``m * eps * mu_1`` are round-off of zero eigenvalues and are returned as exactly 0, so
        that N(lambda) stays below the numerical rank (S7) even for tiny lambda.
    """
    s = as_covariance_matrix(sigma, "sigma")
    mu = scipy.linalg.eigvalsh(s)[::-1]
    tol = mu.size * np.finfo(np.float64).eps * max(float(mu[0]), 0.0)
    return np.where(mu > tol, mu, 0.0)


def _spectrum(sigma_or_eigenvalues) -> np.ndarray:
    arr = sigma_or_eigenvalues
    if hasattr(arr, "mean") and hasattr(arr, "count"):  # CovarianceStats
        return eigenvalues(arr)
    a = np.asarray(arr.detach().cpu() if hasattr(arr, "detach") else arr, dtype=np.float64)
    if a.ndim == 1:
        if a.size == 0:
            raise ValueError("sigma_or_eigenvalues: expected at least one eigenvalue, got none")
        if not np.all(np.isfinite(a)):
            raise ValueError("sigma_or_eigenvalues: eigenvalues contain NaN or inf")
        if np.any(a < -1e-12 * max(1.0, float(np.max(np.abs(a))))):
            raise ValueError("sigma_or_eigenvalues: eigenvalues of a covariance must be >= 0")
        return np.clip(a, 0.0, None)
    return eigenvalues(a)


def degrees_of_freedom(sigma_or_eigenvalues, lam: float) -> float:
    """Degrees of freedom ``N(lambda) = sum_j mu_j / (mu_j + lambda)`` (section 5, S7).

    Parameters
    ----------
    sigma_or_eigenvalues : array-like
        Either the covariance matrix (m, m) or its eigenvalues (m,).
    lam : float
        Regularisation ``lambda > 0``.

    Returns
    -------
    float
        ``N(lambda)`` in ``(0, rank(Sigma))``; it is 0 only for ``Sigma = 0``.
    """
    lam = check_positive_scalar(lam, "lam")
    mu = _spectrum(sigma_or_eigenvalues)
    return float(np.sum(mu / (mu + lam)))


def lambda_for_dof(sigma_or_eigenvalues, target: float, *, rtol: float = 1e-10, name: str = "target") -> float:
    """The ``lambda`` with ``N(lambda) = target``, by bisection on ``log lambda`` (S7).

    S7: N is continuous and strictly decreasing from ``rank(Sigma)`` (lambda -> 0) to 0
    (lambda -> inf), so the solution exists and is unique for ``0 < target < rank``.

    Parameters
    ----------
    sigma_or_eigenvalues : array-like
        Covariance matrix (m, m) or its eigenvalues (m,).
    target : float
        Desired degrees of freedom, strictly between 0 and ``rank(Sigma)``.
    rtol : float
        Relative tolerance on lambda.

    Raises
    ------
    ValueError
        If ``target`` is not in ``(0, rank(Sigma))``.
    """
    mu = _spectrum(sigma_or_eigenvalues)
    rank = int(np.count_nonzero(mu))  # numerical rank: eigenvalues() zeroes round-off
    target = as_real_scalar(target, name)
    if not math.isfinite(target) or not 0.0 < target < rank:
        raise ValueError(f"{name}: degrees of freedom must lie in (0, rank(Sigma)) = (0, {rank}); got {target}")
    pos = mu[mu > 0]

    def n_of(log_lam: float) -> float:
        lam = math.exp(log_lam)
        return float(np.sum(pos / (pos + lam)))

    # N(min(mu) * 1e-12 ... ) is close to rank; N(max(mu)*1e12) close to 0: widen until bracketed.
    lo, hi = math.log(pos.min()) - 30.0, math.log(pos.max()) + 30.0
    while n_of(lo) < target:
        lo -= 30.0
    while n_of(hi) > target:
        hi += 30.0
    while hi - lo > rtol:
        mid = 0.5 * (lo + hi)
        if n_of(mid) > target:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def leverage_scores(sigma, lam: float) -> np.ndarray:
    """Ridge leverage scores ``q_j = [Sigma (Sigma + lambda I)^{-1}]_jj / N(lambda)`` (section 5).

    They are non-negative and sum to one; S8 samples units with these probabilities.

    Parameters
    ----------
    sigma : array-like of shape (m, m)
    lam : float
        ``lambda > 0``.

    Returns
    -------
    numpy.ndarray of shape (m,)

    Raises
    ------
    ValueError
        If ``Sigma = 0`` (no unit carries any signal, so the scores are undefined).
    """
    s = as_covariance_matrix(sigma, "sigma")
    lam = check_positive_scalar(lam, "lam")
    m = s.shape[0]
    # Sigma (Sigma + lam I)^{-1} = I - lam (Sigma + lam I)^{-1}; its diagonal through a Cholesky solve.
    chol = scipy.linalg.cho_factor(s + lam * np.eye(m), lower=True)
    inv_diag = np.diag(scipy.linalg.cho_solve(chol, np.eye(m)))
    d = np.clip(1.0 - lam * inv_diag, 0.0, None)
    total = d.sum()
    if not total > 0:
        raise ValueError("sigma: the covariance is zero, leverage scores are undefined")
    return d / total


def dof_sample_size(n_dof: float, delta: float) -> float:
    """S8's sufficient number of draws ``5 N log(16 N / delta)``.

    Parameters
    ----------
    n_dof : float
        Degrees of freedom ``N(lambda) > 0``.
    delta : float
        Failure probability in ``(0, 1)``.
    """
    n_dof = check_positive_scalar(n_dof, "n_dof")
    delta = PROBABILITY.check(delta, "delta")
    return 5.0 * n_dof * math.log(16.0 * n_dof / delta)
