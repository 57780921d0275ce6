"""Choosing which hidden units to keep (docs/method.md, sections 3 and 5: S3, S4, S8) and the baselines.

``select_units`` is the single entry point. Spectral methods minimise the S3 objective
``L_theta(J) = Tr[(I + theta Z^T Z) R(J)]``:

* ``"greedy"``: forward selection with the rank-one updates of S4 in factored form, O(m^2) work per step;
* ``"greedy_naive"``: the same greedy rule, re-solving the regularised problem for every
  candidate (the reference implementation S4 is tested against);
* ``"exhaustive"``: the exact minimiser over all C(m, k) subsets (tiny problems only);
* ``"leverage"``: ridge-leverage sampling (S8).

Baselines: ``"random"``, ``"magnitude"`` (largest L2 norm of each unit's outgoing weights) and
``"energy"`` (largest ``Sigma_jj``, i.e. mean squared activation).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from theory._validation import Integer, Options, as_covariance_matrix, as_float64_array, check_positive_scalar
from theory.information import THETA, DownstreamWeight, _as_downstream, _residual, as_tau
from theory.spectrum import leverage_scores

__all__ = ["select_units", "select_checked", "leverage_sample", "LeverageSample", "METHODS", "EXHAUSTIVE_LIMIT",
           "kept_width", "METHOD", "GreedyOrder"]

METHODS = ("greedy", "greedy_naive", "exhaustive", "leverage", "random", "magnitude", "energy")
#: ``"exhaustive"`` refuses problems with more subsets than this.
EXHAUSTIVE_LIMIT = 200_000


def kept_width(m: int) -> Integer:
    """The constraint on a kept width k for a layer of m units."""
    return Integer(1, m, what=f"1 <= k <= m = {m}")


METHOD = Options(METHODS)


def _weight_matrix(sigma: np.ndarray, theta: float, Z) -> np.ndarray | None:
    """``M - I = theta Z^T Z`` or None when the output term is off."""
    if Z is None or theta == 0.0:
        return None
    z = _as_downstream(Z, sigma.shape[0])
    return theta * (z.T @ z)


def _greedy(sigma: np.ndarray, k: int, tau: float, theta: float, Z, progress: str = "") -> list[int]:
    """S4: greedy forward selection of k units (:class:`GreedyOrder` run to k steps); ``progress``, if given, is the
    label of a bar over the steps (on a terminal)."""
    order = GreedyOrder(sigma, tau, theta, Z, capacity=k)
    if progress:
        from pruning.covariance import progress_bar

        for t in progress_bar(range(1, k + 1), True, desc=progress, unit="unit"):
            order.units(t)  # one step each: the order continues where it stopped
    return order.units(k)


class GreedyOrder:
    """S4's greedy order, computed as far as it is asked for and extended on demand.

    Greedy selection is nested: its first k units are the greedy selection of k units, so one order serves every
    k, and a search over k (:func:`pruning.prune_to_target`) needs it only as far as the largest k it tries.
    :meth:`units` returns the first k units, running further steps from the state where the last call stopped; the
    steps are the same computation whether they run in one call or several.

    After t steps ``R = Sigma - F^T F`` with ``F`` holding the rows ``u_i = r_i / sqrt(s_i)`` (t x m). The gain of a
    candidate j is ``(R M R)_jj / (R_jj + tau)``, so only two diagonals are kept: ``e = diag R + tau`` and
    ``q = diag(R M R)``. Adding unit j with column ``r = R_{:,j} = Sigma_{:,j} - F^T F_{:,j}``, ``s = e_j`` and
    ``p = R M r = Sigma (M r) - F^T (F M r)`` changes them, with ``u = r / sqrt(s)`` and ``c = u^T M u``, by

        e <- e - u * u,        q <- q - u * (2 p / sqrt(s) - c u)

    (the diagonals of ``R - r r^T / s`` and of its ``R M R``). Each step costs one product with Sigma and three with
    F, O(m^2 + m t), plus ``O(m r)`` for ``M r = r + theta Z^T (Z r)``; memory is Sigma, F and O(m) vectors. The
    elementwise updates write into preallocated vectors: at m = 1024 a step's dozen vector operations cost about as
    much as its product with Sigma, so each saved temporary counts.

    ``M r`` through ``Z`` reads ``Z`` twice per step, 2 r m numbers. Where ``Z`` has at least m rows (the default
    ``Z = W_hh``, m x m for an Elman RNN and 4m x m for an LSTM) that is two to eight times the product with Sigma.
    So once the order is ``precompute_after`` steps long, ``Sigma M = Sigma + theta Sigma Z^T Z`` is formed (m x m:
    one symmetric product for ``Z^T Z``, kept in a shared :class:`theory.information.DownstreamWeight` for the S2
    loss, and one general product), and the rows ``v_i = M u_i`` (t x m) are kept beside ``F``. Then

        M r = M Sigma_{:,j} - (M F^T) F_{:,j} = (Sigma M)_{j,:} - V^T F_{:,j}

    (Sigma and M are symmetric) costs a product with V, O(m t), and no product with an m x m matrix but Sigma's:
    at m = 4096 a step took 2.1-2.6 ms against 6.6 ms through Z. (Forming ``G = theta Z^T Z`` and computing
    ``r + G r``, as before, still read a second m x m matrix per step: 6.8 s for 1024 steps against 4.4 s.) Forming
    ``Sigma M`` costs 2.1 s at m = 4096 (0.9 s for ``Z^T Z``, 1.2 s for the product), so an order extended on demand
    forms it after ``m // 8`` steps, about where that pays back; an order known to reach ``capacity >= m // 16``
    steps (what :func:`select_units` passes) forms it at the first step, where it also gives the starting diagonal
    ``diag(Sigma M Sigma)`` in O(m^2) from its rows instead of through ``Z Sigma`` (1.2 s, r x m). The ways of
    computing ``M r`` differ by round-off only, so they select the same units up to ties at working precision
    (tested); a short order, as an error-target search at small k runs, never forms ``Sigma M``.
    """

    def __init__(self, sigma: np.ndarray, tau: float, theta: float, Z, capacity: int = 0,
                 precompute_after: Optional[int] = None):
        m = sigma.shape[0]
        self.sigma = np.ascontiguousarray(sigma, dtype=np.float64)
        self.tau, self.theta = tau, theta
        # a DownstreamWeight shares the Gram this order forms with the S2 loss computed after the selection
        self.weight = None if Z is None or theta == 0.0 else (
            Z if isinstance(Z, DownstreamWeight) else DownstreamWeight(Z, m))
        self.z = None if self.weight is None else _as_downstream(self.weight, m)
        self.sigma_m: np.ndarray | None = None  # Sigma M = Sigma + theta Sigma Z^T Z, once formed
        if precompute_after is None and self.z is not None and self.z.shape[0] >= m:
            # an order known to be long (select_units passes k as capacity) forms Sigma M at once; an order extended
            # on demand (the error-target search) only once it has grown that long
            precompute_after = 0 if capacity >= max(1, m // 16) else max(1, m // 8)
        self.precompute_after = precompute_after
        self.e = np.diag(self.sigma) + tau
        if self.z is not None and self.precompute_after == 0:
            # q = diag(Sigma M Sigma), row by row from Sigma M (Sigma is symmetric): m^2 work once Sigma M is formed,
            # instead of r m^2 and an r x m temporary (4m x m for an LSTM) through Z Sigma
            self._form_sigma_m()
            self.q = np.einsum("ij,ij->i", self.sigma_m, self.sigma)
        else:
            # q = diag(Sigma M Sigma) = squared column norms of Sigma, plus theta times those of Z Sigma
            self.q = np.einsum("ij,ij->j", self.sigma, self.sigma)
            if self.z is not None:
                zs = self.z @ self.sigma
                self.q += theta * np.einsum("ij,ij->j", zs, zs)
                del zs
        # the factors stored by rows: every product below reads contiguous memory
        rows = min(max(capacity, 1), m)
        self.F = np.empty((rows, m))
        self.V = None if self.z is None else np.empty((rows, m))  # the rows v_i = M u_i
        self.gain, self.p, self.w = np.empty(m), np.empty(m), np.empty(m)
        self.taken = np.zeros(m, dtype=bool)
        self.selected: list[int] = []

    def _form_sigma_m(self) -> None:
        gram = self.weight.gram()  # NumPy forms Z^T Z by a symmetric rank-k product (half the work)
        sigma_m = self.sigma @ gram
        sigma_m *= self.theta
        sigma_m += self.sigma
        self.sigma_m = sigma_m

    @property
    def width(self) -> int:
        """Number of units m."""
        return self.sigma.shape[0]

    def units(self, k: int) -> list[int]:
        """The first k units of the greedy order (1 <= k <= m)."""
        if not 0 <= k <= self.width:
            raise ValueError(f"k: expected 0 <= k <= m = {self.width}, got {k}")
        if k > self.F.shape[0]:  # grow the factors geometrically, so extending one step at a time stays O(m k)
            rows, t = min(max(k, 2 * self.F.shape[0]), self.width), len(self.selected)
            self.F = _grown(self.F, rows, t)
            self.V = None if self.V is None else _grown(self.V, rows, t)
        for t in range(len(self.selected), k):
            self._step(t)
        return self.selected[:k]

    def _step(self, t: int) -> None:
        sigma, z, theta, F = self.sigma, self.z, self.theta, self.F
        e, q, gain, p, w, taken = self.e, self.q, self.gain, self.p, self.w, self.taken
        np.divide(q, e, out=gain)
        np.putmask(gain, taken, -np.inf)  # explicit: round-off may leave a selected unit's e_j <= 0
        j = int(np.argmax(gain))  # the first of equal gains
        self.selected.append(j)
        taken[j] = True
        Ft, Fj = F[:t], F[:t, j]
        r = sigma[j] - Ft.T @ Fj  # column j of R, read as row j (Sigma and R are symmetric)
        root = float(np.sqrt(e[j]))  # NaN, as before, if round-off left e_j < 0
        if z is not None and self.sigma_m is None and self.precompute_after is not None and t >= self.precompute_after:
            self._form_sigma_m()
        if z is None:
            Mr = r
        elif self.sigma_m is not None:
            # M r = (M Sigma)_{:,j} - (M F^T) F_j: row j of Sigma M less V^T F_j, no product with an m x m matrix
            Mr = self.sigma_m[j] - self.V[:t].T @ Fj
        else:
            Mr = r + theta * (z.T @ (z @ r))
        np.dot(sigma, Mr, out=p)  # (BLAS symv reads half of Sigma but ran 3-7 times slower here from m = 1536 on)
        if t:
            p -= Ft.T @ (Ft @ Mr)
        u = F[t]
        np.multiply(r, 1.0 / root, out=u)
        if self.V is not None:
            np.multiply(Mr, 1.0 / root, out=self.V[t])
        np.multiply(u, float(u @ Mr) / root, out=w)  # c u, with c = u^T M u = (u^T M r) / sqrt(s)
        p *= 2.0 / root
        p -= w
        p *= u
        q -= p
        np.multiply(u, u, out=w)
        e -= w


def _grown(rows: np.ndarray, n: int, filled: int) -> np.ndarray:
    """``rows`` in a new array of ``n`` rows, its first ``filled`` rows copied."""
    out = np.empty((n, rows.shape[1]))
    out[:filled] = rows[:filled]
    return out


def _objective(sigma: np.ndarray, J: list[int], tau: float, extra: np.ndarray | None) -> float:
    """S3 ``Tr[M R(J)]`` with ``M = I + extra``, from a fresh regularised solve."""
    R = _residual(sigma, np.asarray(J, dtype=np.int64), np.full(len(J), tau))
    value = float(np.trace(R))
    if extra is not None:
        value += float(np.sum(extra * R))
    return value


def _greedy_naive(sigma: np.ndarray, k: int, tau: float, theta: float, Z) -> list[int]:
    """The greedy rule by brute force: the S3 objective re-solved for every candidate."""
    m = sigma.shape[0]
    extra = _weight_matrix(sigma, theta, Z)
    selected: list[int] = []
    for _ in range(k):
        best, best_val = -1, math.inf
        for j in range(m):
            if j in selected:
                continue
            val = _objective(sigma, selected + [j], tau, extra)
            if val < best_val:
                best, best_val = j, val
        selected.append(best)
    return selected


def _exhaustive(sigma: np.ndarray, k: int, tau: float, theta: float, Z) -> list[int]:
    m = sigma.shape[0]
    n_subsets = math.comb(m, k)
    if n_subsets > EXHAUSTIVE_LIMIT:
        raise ValueError(
            f"method='exhaustive': C(m={m}, k={k}) = {n_subsets} subsets exceeds the limit "
            f"{EXHAUSTIVE_LIMIT}; use method='greedy' for problems of this size"
        )
    extra = _weight_matrix(sigma, theta, Z)
    best, best_val = None, math.inf
    for J in itertools.combinations(range(m), k):
        val = _objective(sigma, list(J), tau, extra)
        if val < best_val:
            best, best_val = list(J), val
    return best


@dataclass(frozen=True)
class LeverageSample:
    """Result of ridge-leverage sampling (S8).

    Attributes
    ----------
    units : list[int]
        Distinct sampled units, in order of first draw.
    counts : numpy.ndarray
        ``c_j``: how often each unit in ``units`` was drawn.
    draws : int
        Number of draws.
    tau : numpy.ndarray
        Per-unit regularisation ``tau_j = draws * lambda * q_j / c_j`` (S8).
    scores : numpy.ndarray
        The leverage scores ``q`` over all m units.
    """

    units: list
    counts: np.ndarray
    draws: int
    tau: np.ndarray
    scores: np.ndarray


def _rng(seed) -> np.random.Generator:
    """A generator from ``seed`` (None, an int >= 0 or a Generator), refusing anything else by name."""
    if seed is None or isinstance(seed, np.random.Generator):
        return np.random.default_rng(seed)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed: expected None, a non-negative int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def leverage_sample(sigma, k: int, lam: float, *, seed=None, distinct: bool = False) -> LeverageSample:
    """Ridge-leverage sampling of units (S8).

    Parameters
    ----------
    sigma : array-like (m, m)
        Time-mean covariance.
    k : int
        Number of draws (``distinct=False``) or of distinct units (``distinct=True``).
    lam : float
        ``lambda > 0`` of the leverage scores.
    seed : int or numpy.random.Generator, optional
    distinct : bool
        ``False`` is S8 exactly: k i.i.d. draws with probabilities q, so at most k distinct units.
        ``True`` draws k distinct units without replacement, each with probability proportional
        to q among those not yet drawn (for comparing methods at a fixed width k); every count is
        then 1 and ``tau_j = k lambda q_j``. If fewer than k units have non-zero leverage (dead
        units), the rest of J is drawn uniformly among the zero-leverage units, with ``tau_j = lambda``.
        S8's guarantee is stated for the i.i.d. scheme only.
    """
    s = as_covariance_matrix(sigma, "sigma")
    m = s.shape[0]
    k = kept_width(m).check(k, "k") if distinct else Integer(1, None, what="at least one draw").check(k, "k")
    lam = check_positive_scalar(lam, "lam")
    q = leverage_scores(s, lam)
    rng = _rng(seed)
    if distinct:
        support = np.flatnonzero(q > 0)
        n_lev = min(k, support.size)
        units = [int(j) for j in rng.choice(m, size=n_lev, replace=False, p=q)]
        if n_lev < k:
            # Units with zero leverage never fire on the data (dead units): any of them completes J
            # without changing the losses; their column of A_J is zero.
            rest = np.setdiff1d(np.arange(m), support)
            units += [int(j) for j in rng.choice(rest, size=k - n_lev, replace=False)]
        counts = np.ones(k, dtype=np.int64)
    else:
        draws = rng.choice(m, size=k, replace=True, p=q)
        units, first = np.unique(draws, return_index=True)
        order = np.argsort(first)
        units = [int(u) for u in units[order]]
        counts = np.array([int(np.sum(draws == u)) for u in units], dtype=np.int64)
    tau = k * lam * q[units] / counts
    tau[tau <= 0] = lam  # zero-leverage fill-in units (distinct=True only); their tau does not matter
    return LeverageSample(units=units, counts=counts, draws=k, tau=tau, scores=q)


def select_units(
    sigma,
    k: int,
    lam: float,
    *,
    theta: float = 0.0,
    Z=None,
    method: str = "greedy",
    seed=None,
    outgoing=None,
) -> list[int]:
    """Select ``k`` hidden units to keep.

    Parameters
    ----------
    sigma : array-like (m, m) or CovarianceStats
        Time-mean covariance of the hidden states (section 2).
    k : int
        Number of units to keep, ``1 <= k <= m``.
    lam : float
        Regularisation ``lambda > 0`` (``tau_j = lambda``), also the leverage-score lambda.
    theta : float
        Weight of the output information loss in the S3 objective (``theta >= 0``).
    Z : array-like (r, m) or theory.information.DownstreamWeight, optional
        Downstream weight of the output loss (S2), e.g. the recurrent weight W, the read-out V,
        or both stacked. Required when ``theta > 0``. A ``DownstreamWeight`` keeps the Gram ``Z^T Z`` that a long
        greedy order forms, for a later :func:`theory.information.information_losses` to reuse.
    method : str
        One of ``"greedy"`` (S4, default), ``"greedy_naive"``, ``"exhaustive"``, ``"leverage"``
        (S8, k distinct units), ``"random"``, ``"magnitude"``, ``"energy"``.
    seed : int or numpy.random.Generator, optional
        Randomness of ``"leverage"`` and ``"random"``.
    outgoing : array-like (r, m), optional
        Outgoing weights per unit (columns) for ``"magnitude"``; defaults to ``Z``.

    Returns
    -------
    list[int]
        Kept units in the order selected (greedy order; ascending for ``"exhaustive"``; decreasing
        score for ``"magnitude"``/``"energy"``; draw order for the random methods).
    """
    s = as_covariance_matrix(sigma, "sigma")
    m = s.shape[0]
    k = kept_width(m).check(k, "k")
    method = METHOD.check(method, "method")
    theta = THETA.check(theta, "theta")
    if theta > 0 and Z is None and method in ("greedy", "greedy_naive", "exhaustive"):
        raise ValueError("Z: theta > 0 needs the downstream weight Z of the output information loss (S2)")
    tau = float(as_tau(lam, 1)[0])  # validated for every method, though the baselines do not use it
    return select_checked(s, k, tau, theta=theta, Z=Z, method=method, seed=seed, outgoing=outgoing)


def select_checked(s: np.ndarray, k: int, tau: float, *, theta: float, Z, method: str, seed=None,
                   outgoing=None, progress: str = "") -> list[int]:
    """:func:`select_units` for arguments already validated (a symmetric float64 covariance, 1 <= k <= m, tau > 0,
    a known method, theta >= 0): the one dispatch on the method. ``progress``: the label of a bar over the greedy
    steps (empty: none)."""
    m = s.shape[0]
    if method == "greedy":
        return _greedy(s, k, tau, theta, Z, progress)
    if method == "greedy_naive":
        return _greedy_naive(s, k, tau, theta, Z)
    if method == "exhaustive":
        return _exhaustive(s, k, tau, theta, Z)
    if method == "leverage":
        return leverage_sample(s, k, tau, seed=seed, distinct=True).units
    if method == "random":
        rng = _rng(seed)
        return [int(j) for j in rng.choice(m, size=k, replace=False)]
    if method == "energy":
        # stable sort: ties keep the lower index first
        return [int(j) for j in np.argsort(-np.diag(s), kind="stable")[:k]]
    # magnitude
    w = outgoing if outgoing is not None else Z
    if isinstance(w, DownstreamWeight):
        w = w.z
    if w is None:
        raise ValueError("outgoing: method='magnitude' needs the outgoing weights (r, m) of the units")
    w = as_float64_array(w, "outgoing")
    if w.ndim != 2 or w.shape[1] != m:
        raise ValueError(f"outgoing: expected shape (r, m) with m = {m}, got {w.shape}")
    return [int(j) for j in np.argsort(-np.linalg.norm(w, axis=0), kind="stable")[:k]]
