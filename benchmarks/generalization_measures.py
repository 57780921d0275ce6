"""Whether a complexity measure predicts the generalization gap: the coefficients of the generalization-measures
protocol, on a table of trained networks (one row per network, its hyper-parameters, measures and measured gap).

* :func:`kendall_tau`: Kendall's rank correlation (tau-b, ties handled) between a measure and the gap over all rows.
* :func:`granulated_kendall` (Jiang et al., ICLR 2020): for each hyper-parameter, the mean of Kendall's tau over the
  groups of rows in which only that hyper-parameter varies (every other one fixed); then the mean over the
  hyper-parameters. A measure that tracks the gap only through one hyper-parameter scores low on the others.
* :func:`sign_error` (after Dziugaite et al., NeurIPS 2020): over coupled pairs of networks that differ in exactly one
  hyper-parameter, the fraction in which the measure moves the other way from the gap. Pairs whose gap difference lies
  within the Monte-Carlo noise of the two measured gaps are left out (their sign is not known).

The S12 bound, N(lambda), norms or any other column can be the measure; these functions only read the table.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

__all__ = ["kendall_tau", "granulated_kendall", "sign_error"]


def _column(rows: Sequence[Mapping], name: str) -> np.ndarray:
    try:
        values = np.asarray([float(r[name]) for r in rows], dtype=np.float64)
    except KeyError:
        raise ValueError(f"{name}: not a column of the table") from None
    return values


def kendall_tau(measure: Sequence[float], gap: Sequence[float]) -> float:
    """Kendall's tau-b between the two sequences (nan when either is constant). Positions where either value is
    nan (a measure undefined for that network) are left out; nan when fewer than two remain."""
    x, y = np.asarray(measure, dtype=np.float64), np.asarray(gap, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"measure, gap: expected two sequences of equal length >= 2, got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 2:
        return math.nan
    if np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


def granulated_kendall(rows: Sequence[Mapping], measure: str, gap: str, hyperparameters: Sequence[str], *,
                       fixed: Sequence[str] = ()) -> Dict:
    """``{"per_hyperparameter": {h: psi_h}, "overall": mean of psi_h, "groups": {h: number of groups}}``.

    ``psi_h`` is the mean tau over the groups of rows that agree on every hyper-parameter but h (and on every column
    of ``fixed``, e.g. the seed of a repetition) and hold at least two distinct values of h; groups where the
    measure or the gap is constant are left out (tau is undefined there).
    """
    if not hyperparameters:
        raise ValueError("hyperparameters: expected at least one column name")
    per, count = {}, {}
    for h in hyperparameters:
        others = [o for o in hyperparameters if o != h] + list(fixed)
        groups: Dict[tuple, List[Mapping]] = {}
        for r in rows:
            groups.setdefault(tuple(r[o] for o in others), []).append(r)
        taus = []
        for group in groups.values():
            if len({g[h] for g in group}) < 2:
                continue
            t = kendall_tau(_column(group, measure), _column(group, gap))
            if not math.isnan(t):
                taus.append(t)
        per[h] = float(np.mean(taus)) if taus else math.nan
        count[h] = len(taus)
    finite = [v for v in per.values() if not math.isnan(v)]
    return dict(per_hyperparameter=per, overall=float(np.mean(finite)) if finite else math.nan, groups=count)


def sign_error(rows: Sequence[Mapping], measure: str, gap: str, hyperparameters: Sequence[str], *,
               noise: Optional[str] = None, noise_value: float = 0.0, fixed: Sequence[str] = ()) -> Dict:
    """``{"overall": fraction, "per_hyperparameter": {h: fraction}, "pairs": {h: n}, "left_out": n}``.

    A coupled pair is two rows equal in every hyper-parameter but one (h). Its sign error is 1 when the measure and
    the gap move in opposite directions (or the measure does not move while the gap does). Pairs with
    ``|gap difference| <= noise_a + noise_b`` (``noise``: a column of per-network noise half-widths, e.g. the Hoeffding
    half-width of the measured gap; or a constant ``noise_value`` per network) are left out. Pairs must also agree
    on every column of ``fixed`` (e.g. the seed), and pairs where the measure is nan for either row are skipped.
    """
    per_errors: Dict[str, List[float]] = {h: [] for h in hyperparameters}
    left_out = 0
    for a, b in combinations(rows, 2):
        differ = [h for h in hyperparameters if a[h] != b[h]]
        if len(differ) != 1 or any(a[f] != b[f] for f in fixed):
            continue
        if math.isnan(float(a[measure])) or math.isnan(float(b[measure])):
            continue
        d_gap = float(b[gap]) - float(a[gap])
        slack = (float(a[noise]) + float(b[noise])) if noise is not None else 2.0 * noise_value
        if abs(d_gap) <= slack:
            left_out += 1
            continue
        d_measure = float(b[measure]) - float(a[measure])
        per_errors[differ[0]].append(float(np.sign(d_measure) != np.sign(d_gap)))
    all_errors = [e for v in per_errors.values() for e in v]
    return dict(overall=float(np.mean(all_errors)) if all_errors else math.nan,
                per_hyperparameter={h: float(np.mean(v)) if v else math.nan for h, v in per_errors.items()},
                pairs={h: len(v) for h, v in per_errors.items()}, left_out=left_out)
