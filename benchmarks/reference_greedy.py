"""The greedy selection (S4) that the factored implementation replaced, kept as the reference it is tested and
benchmarked against. NumPy only; nothing from ``pruning``."""

import numpy as np

__all__ = ["greedy_dense_rank_one"]


def greedy_dense_rank_one(sigma, k, tau, theta=0.0, Z=None):
    """S4 greedy with the full m x m rank-one updates of R and P = R M R (the project's implementation before the
    factored one): O(m^2) memory traffic in three outer products per step. Reference for the factored greedy."""
    m = sigma.shape[0]
    R = np.array(sigma, dtype=np.float64, copy=True)
    extra = None if Z is None or theta == 0.0 else theta * (np.asarray(Z).T @ np.asarray(Z))
    P = R @ R if extra is None else R @ R + R @ extra @ R
    selected, available = [], np.ones(m, dtype=bool)
    for _ in range(k):
        gain = np.where(available, np.diag(P) / (np.diag(R) + tau), -np.inf)
        j = int(np.argmax(gain))
        selected.append(j)
        available[j] = False
        r, p, s = R[:, j].copy(), P[:, j].copy(), R[j, j] + tau
        P -= (np.outer(p, r) + np.outer(r, p)) / s
        P += (p[j] / (s * s)) * np.outer(r, r)
        R -= np.outer(r, r) / s
    return selected
