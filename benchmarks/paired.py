"""Paired per-seed comparisons of pruning methods, with the statistics a reviewer accepts.

Two methods are compared on the same trained networks: for each seed, the difference of their test metric (a pruned
row and the spectral-pruning row of the same network; a dense network trained from scratch is paired by its seed).
:func:`paired_difference` gives the mean difference, a percentile bootstrap confidence interval of it (resampling
seeds, with a fixed generator, so a report is reproducible) and the two-sided Wilcoxon signed-rank p-value
(``scipy.stats.wilcoxon``, exact for small samples). A method is called better or worse than spectral pruning only
where the interval excludes 0; otherwise the two tie at this number of seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import stats

__all__ = ["PairedDifference", "paired_difference", "paired_table_rows", "bootstrap_interval"]


@dataclass(frozen=True)
class PairedDifference:
    """``mean`` of the per-seed differences (method minus reference), its ``low``-``high`` confidence interval, the
    Wilcoxon signed-rank ``p_value`` and the number of pairs ``n``."""

    mean: float
    low: float
    high: float
    p_value: float
    n: int

    @property
    def verdict(self) -> str:
        """``"better"``, ``"worse"`` (the interval excludes 0) or ``"tie"``."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "tie"


def bootstrap_interval(differences: Sequence[float], *, level: float = 0.95, n_boot: int = 10_000,
                       seed: int = 0) -> tuple:
    """Percentile bootstrap interval of the mean of ``differences`` (resampled with replacement)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"differences: expected a non-empty 1-D array of finite numbers, got shape {d.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a probability in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def paired_difference(method: Sequence[float], reference: Sequence[float], *, level: float = 0.95,
                      n_boot: int = 10_000, seed: int = 0) -> PairedDifference:
    """The paired comparison of ``method`` against ``reference`` (equal-length sequences, one value per seed)."""
    a, b = np.asarray(method, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"method, reference: expected one value per seed each, got shapes {a.shape} and {b.shape}")
    d = a - b
    low, high = bootstrap_interval(d, level=level, n_boot=n_boot, seed=seed)
    if np.all(d == 0):
        p = 1.0
    else:
        # zero differences are split between the ranks (they carry no sign); exact distribution for small n
        p = float(stats.wilcoxon(d, zero_method="zsplit", alternative="two-sided").pvalue)
    return PairedDifference(float(d.mean()), low, high, p, int(d.size))


def _by_seed(rows: Sequence[Dict], metric: str) -> Dict[int, float]:
    return {int(r["seed"]): float(r[metric]) for r in rows}


def paired_table_rows(rows: Sequence[Dict], *, hidden: int, reference: str = "spectral",
                      metric: str = "test_accuracy", methods: Optional[Sequence[str]] = None,
                      higher_is_better: bool = True) -> List[Dict]:
    """For each method and k at width ``hidden``: the paired difference against ``reference`` over the seeds both
    have (rows of the task as it is; the dense network of width k is paired by seed)."""
    usable = [r for r in rows if isinstance(r.get(metric), (int, float)) and not isinstance(r.get(metric), bool)
              and int(r["hidden"]) == hidden]
    ks = sorted({int(r["k"]) for r in usable if r["method"] == reference})
    names = methods if methods is not None else sorted({r["method"] for r in usable} - {reference, "full network"})
    out = []
    for k in ks:
        ref = _by_seed([r for r in usable if r["method"] == reference and int(r["k"]) == k], metric)
        for name in names:
            other = _by_seed([r for r in usable if r["method"] == name and int(r["k"]) == k], metric)
            seeds = sorted(set(ref) & set(other))
            if len(seeds) < 2:
                continue
            sign = 1.0 if higher_is_better else -1.0
            diff = paired_difference([sign * other[s] for s in seeds], [sign * ref[s] for s in seeds])
            out.append(dict(method=name, k=k, seeds=seeds, median=float(np.median([other[s] for s in seeds])),
                            reference_median=float(np.median([ref[s] for s in seeds])), diff=diff))
    return out
