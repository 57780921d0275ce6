"""The S13 study on the teacher-student task, defined once for the report and the check.

S13 (bias-variance in lambda, a reading rather than a theorem; docs/theory.md) is reported, not asserted:

* the lambda sweep: for one student, the S12 bound (bias + estimation) and the held-out risk of the student
  pruned to ``k = ceil(N(lambda))`` for each lambda of a fixed grid;
* the rank sweep: the S12 bound's excess over the training risk against the measured gap, over students of
  several widths m, training-set sizes n, lengths T and kept fractions k/m, summarised by Kendall's tau.

``S13_PROTOCOLS["quick"]`` and ``["full"]`` are what ``python -m checks`` and the reports use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, List, Tuple

import numpy as np
from scipy import stats

from benchmarks.students import StudentSetup, held_out_losses
from pruning import spectral_prune, time_mean_covariance
from theory.estimation import s12_bound
from theory.spectrum import degrees_of_freedom

__all__ = ["S13Protocol", "S13_PROTOCOLS", "lambda_sweep", "rank_sweep", "run_s13"]


@dataclass(frozen=True)
class S13Protocol:
    """One S13 study: the student of the lambda sweep (width m, n sequences) and the grid of the rank sweep."""

    setup: StudentSetup
    m: int = 16
    n: int = 4000
    rel_lams: Tuple[float, ...] = tuple(float(v) for v in 10.0 ** np.arange(-6, 2))
    widths: Tuple[int, ...] = (8, 16)
    sizes: Tuple[int, ...] = (500, 4000)
    lengths: Tuple[int, ...] = (6,)
    fractions: Tuple[float, ...] = (0.25, 0.5, 1.0)

    def describe(self) -> str:
        return (f"tanh teacher of width 16, ||W||_op = {self.setup.rho:g}, T = {self.setup.T}, 3 classes, 10% label "
                f"noise; student m = {self.m} trained on n = {self.n}")


S13_PROTOCOLS: Dict[str, S13Protocol] = {
    "quick": S13Protocol(StudentSetup(T=6, rho=0.9, nonlinearity="tanh", epochs=10)),
    "full": S13Protocol(StudentSetup(T=6, rho=0.9, nonlinearity="tanh", epochs=20), n=20_000, widths=(8, 16, 32),
                        sizes=(500, 2000, 20_000), lengths=(4, 10)),
}


def lambda_sweep(protocol: S13Protocol, rep: int = 0) -> List[dict]:
    """S12 bound and held-out risk of the pruned student for each lambda, with ``k = ceil(N(lambda))``.

    Each bound is computed at ``delta / len(rel_lams)``: a union bound over the grid, so that the smallest bound of
    the sweep, which is chosen after seeing the data, is itself a bound at confidence ``1 - delta``. Rows with
    ``k = m`` keep every unit (no pruning)."""
    setup = protocol.setup
    kwargs = dict(setup.bound_kwargs(), delta=setup.delta / len(protocol.rel_lams))
    model, x, y = setup.student(protocol.m, protocol.n, rep)
    xt, yt = setup.held_out(rep)
    cov = time_mean_covariance(model.rnn, x)
    sigma = cov.mean()
    scale = float(np.trace(sigma)) / protocol.m
    rows = []
    for rel in protocol.rel_lams:
        lam = rel * scale
        N = degrees_of_freedom(sigma, lam)
        k = max(1, int(math.ceil(N - 1e-9)))
        pruned = spectral_prune(model, k=k, lam=lam, covariance=cov)
        b = s12_bound(model.rnn, model.readout, pruned.units, pruned.A, x, y, with_full=False, **kwargs)
        test = held_out_losses(pruned.rnn, pruned.readout, xt, yt, setup.task, b.gamma).mean()
        rows.append(dict(rel_lam=float(rel), dof=N, k=k, m=protocol.m, bound=b.bound, trivial=b.trivial, bias=b.bias,
                         estimation=b.estimation.value, test_risk=float(test), delta=kwargs["delta"]))
    return rows


def rank_sweep(protocol: S13Protocol) -> List[dict]:
    """S12 bound and measured gap of pruned students over (m, n, T) and k/m (k = round(fraction m))."""
    sweep = []
    for m in protocol.widths:
        for n in protocol.sizes:
            for T in protocol.lengths:
                setup = replace(protocol.setup, T=T)
                model, x, y = setup.student(m, n, 0)
                xt, yt = setup.held_out(0)
                cov = time_mean_covariance(model.rnn, x)
                for frac in protocol.fractions:
                    k = max(1, int(round(frac * m)))
                    pruned = spectral_prune(model, k=k, covariance=cov)
                    b = s12_bound(model.rnn, model.readout, pruned.units, pruned.A, x, y, with_full=False,
                                  **setup.bound_kwargs())
                    test = held_out_losses(pruned.rnn, pruned.readout, xt, yt, setup.task, b.gamma).mean()
                    sweep.append(dict(m=m, n=n, T=T, k=k, bound=b.bound, gap=float(test) - b.full_train_risk,
                                      bound_gap=b.bound - b.full_train_risk))
    return sweep


def run_s13(protocol: S13Protocol) -> dict:
    """Both sweeps, Kendall's tau of the rank sweep, and the lambda minimising the bound against the lambda with
    the best held-out risk."""
    lam_rows = lambda_sweep(protocol)
    sweep = rank_sweep(protocol)
    tau = float(stats.kendalltau([r["bound_gap"] for r in sweep], [r["gap"] for r in sweep]).statistic)
    return dict(lambda_sweep=lam_rows, sweep=sweep, kendall_tau=tau,
                bound_argmin=min(lam_rows, key=lambda r: r["bound"]),
                test_argmin=min(lam_rows, key=lambda r: r["test_risk"]))
