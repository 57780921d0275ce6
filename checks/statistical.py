"""Checks of the probabilistic statements S8, S11, S12 and the S13 report, on random and teacher-student instances.

Statistical checks are binomial tests at significance ``ALPHA``: a statement "event E has probability
at most p" is declared violated when the observed count of E over independent repetitions is so large
that ``P(Binomial(repeats, p) >= count) < ALPHA``.

* S8: over many leverage draws (k from the S8 condition), the fraction with ``lambda_max(R) > 4 lambda``
  is compatible with at most delta; the measured ``lambda_max(R)/lambda`` is reported.
* S11 / S12: students trained on independent training sets of the teacher task; a violation is a held-out
  risk whose lower Hoeffding limit (confidence ``1 - DELTA_TEST``) exceeds the bound, which has
  probability at most ``delta + DELTA_TEST``. Whether the bound was vacuous is reported.
* S13: a report (no pass/fail): the lambda that minimises the S12 bound against the lambda with the best
  held-out risk, and Kendall's tau between the bound and the measured risk across a sweep of (m, k, n, T).
"""

from __future__ import annotations

import math
from typing import List

import numpy as np
from scipy import stats

from benchmarks.s13 import S13_PROTOCOLS, run_s13
from benchmarks.students import StudentSetup, held_out_losses
from checks.references import random_psd
from checks.registry import Check, CheckConfig, CheckResult, config_rng, register
from pruning import spectral_prune
from pruning.selection import leverage_sample
from theory.empirical import risk_estimate
from theory.estimation import s11_bound, s12_bound
from theory.information import residual_covariance
from theory.spectrum import degrees_of_freedom, dof_sample_size, lambda_for_dof

ALPHA = 0.01  # significance of the binomial tests
DELTA_TEST = 0.01  # failure probability of each held-out confidence interval


def binomial_p_value(count: int, trials: int, p: float) -> float:
    """``P(Binomial(trials, p) >= count)``."""
    return float(stats.binom.sf(count - 1, trials, p))


# ----------------------------------------------------------------------------------------------
# S8


def _s8_grid(tier: str) -> List[CheckConfig]:
    if tier == "quick":
        cases, repeats = [(64, 1.0), (128, 2.0)], 50
    elif tier == "full":
        cases, repeats = [(64, 1.0), (64, 2.0), (128, 1.5), (128, 3.0), (256, 2.0), (256, 4.0)], 500
    else:
        raise ValueError(f"tier: expected 'quick' or 'full', got {tier!r}")
    return [CheckConfig(m=m, dof=dof, repeats=repeats, delta=delta, seed=seed)
            for m, dof in cases for delta in (0.2, 0.05) for seed in (0, 1)]


def _s8(cfg: CheckConfig) -> CheckResult:
    rng = config_rng(cfg)
    sigma = random_psd(rng, cfg.m, decay=1.0 + cfg.seed)  # eigen-decay j^-1 or j^-2
    lam = lambda_for_dof(sigma, cfg.dof)
    N = degrees_of_freedom(sigma, lam)
    draws = int(math.ceil(dof_sample_size(N, cfg.delta)))
    ratios = np.empty(cfg.repeats)
    distinct = np.empty(cfg.repeats)
    for i in range(cfg.repeats):
        sample = leverage_sample(sigma, draws, lam, seed=rng)
        R = residual_covariance(sigma, sample.units, sample.tau)
        ratios[i] = np.linalg.eigvalsh(R)[-1] / lam
        distinct[i] = len(sample.units)
    failures = int(np.sum(ratios > 4.0))
    p = binomial_p_value(failures, cfg.repeats, cfg.delta)
    return CheckResult("S8", cfg, failures / cfg.repeats, cfg.delta, p >= ALPHA, p - ALPHA,
                       dict(p_value=p, draws=draws, dof=N, median_ratio=float(np.median(ratios)),
                            max_ratio=float(ratios.max()), mean_distinct_units=float(distinct.mean())))


# ----------------------------------------------------------------------------------------------
# The teacher-student task (benchmarks.students)


def _setup(cfg: CheckConfig) -> StudentSetup:
    return StudentSetup(T=cfg.T, rho=cfg.rho, nonlinearity=cfg.nonlinearity, task=cfg.task, epochs=cfg.epochs,
                        delta=cfg.delta, seed=cfg.seed)


def _teacher_grid(tier: str) -> List[CheckConfig]:
    if tier == "quick":
        base = [dict(m=8, k=2, n=2000, T=6), dict(m=16, k=4, n=20000, T=4)]
        rhos, tasks, acts, repeats, epochs = (0.9,), ("classification",), ("tanh",), 3, 10
    elif tier == "full":
        base = [dict(m=8, k=2, n=500, T=6), dict(m=16, k=4, n=2000, T=10), dict(m=16, k=8, n=20000, T=6),
                dict(m=32, k=8, n=20000, T=4)]
        rhos, tasks, acts, repeats, epochs = (0.5, 1.0, 1.5), ("classification", "regression"), ("tanh", "relu"), \
            10, 15
    else:
        raise ValueError(f"tier: expected 'quick' or 'full', got {tier!r}")
    out = []
    for b in base:
        for rho in rhos:
            for task in tasks:
                for act in acts:
                    out.append(CheckConfig(rho=rho, task=task, nonlinearity=act, repeats=repeats, epochs=epochs,
                                           delta=0.05, seed=0, **b))
    if tier == "full":  # every level of every dimension, at a cost of minutes
        keep = np.random.default_rng(11).choice(len(out), size=min(len(out), 12), replace=False)
        out = [out[i] for i in sorted(keep)]
    return out


def _estimation_result(check_id: str, cfg: CheckConfig, rows: List[dict]) -> CheckResult:
    violations = sum(r["violation"] for r in rows)
    p = binomial_p_value(violations, len(rows), cfg.delta + DELTA_TEST)
    bound = np.array([r["bound"] for r in rows])
    test = np.array([r["test_risk"] for r in rows])
    trivial = rows[0]["trivial"]
    details = dict(p_value=p, violations=violations, mean_bound=float(bound.mean()),
                   mean_test_risk=float(test.mean()), mean_test_upper=float(np.mean([r["test_upper"] for r in rows])),
                   mean_train_risk=float(np.mean([r["train_risk"] for r in rows])), trivial_level=trivial,
                   vacuous_fraction=float(np.mean(bound >= trivial)),
                   mean_ratio_to_trivial=float(np.mean(bound / trivial)),
                   min_bound_minus_test_upper=float(np.min(bound - [r["test_upper"] for r in rows])))
    for key in ("full_bound", "bias", "pruned_train_risk"):
        if key in rows[0]:
            details[f"mean_{key}"] = float(np.mean([r[key] for r in rows]))
    return CheckResult(check_id, cfg, float(test.mean()), float(bound.mean()), p >= ALPHA, p - ALPHA, details,
                       vacuous=bool(np.all(bound >= trivial)))


def _held_out_fields(losses: np.ndarray, upper: float, bound: float) -> dict:
    """Held-out risk with its Hoeffding interval, and whether its lower limit exceeds the bound (a violation)."""
    est = risk_estimate(losses, upper, DELTA_TEST)
    return dict(test_risk=est.mean, test_lower=est.lower, test_upper=est.upper, violation=est.lower > bound)


def _s11(cfg: CheckConfig) -> CheckResult:
    setup = _setup(cfg)
    rows = []
    for rep in range(cfg.repeats):
        model, x, y = setup.student(cfg.m, cfg.n, rep)
        b = s11_bound(model.rnn, model.readout, x, y, **setup.bound_kwargs())
        xt, yt = setup.held_out(rep)
        rows.append(dict(bound=b.bound, trivial=b.trivial, train_risk=b.train_risk,
                         **_held_out_fields(held_out_losses(model.rnn, model.readout, xt, yt, cfg.task, b.gamma),
                                            b.upper, b.bound)))
    return _estimation_result("S11", cfg, rows)


def _s12(cfg: CheckConfig) -> CheckResult:
    setup = _setup(cfg)
    rows = []
    for rep in range(cfg.repeats):
        model, x, y = setup.student(cfg.m, cfg.n, rep)
        pruned = spectral_prune(model, x, k=cfg.k, rel_lam=cfg.rel_lam)
        b = s12_bound(model.rnn, model.readout, pruned.units, pruned.A, x, y, **setup.bound_kwargs())
        xt, yt = setup.held_out(rep)
        rows.append(dict(bound=b.bound, trivial=b.trivial, train_risk=b.full_train_risk, bias=b.bias,
                         pruned_train_risk=b.pruned_train_risk, full_bound=b.full.bound,
                         **_held_out_fields(held_out_losses(pruned.rnn, pruned.readout, xt, yt, cfg.task, b.gamma),
                                            b.upper, b.bound)))
    return _estimation_result("S12", cfg, rows)


def _s12n_grid(tier: str) -> List[CheckConfig]:
    """The non-vacuous compression study (benchmarks/nonvacuous.py): teacher of width 4, students of width m."""
    if tier == "quick":
        return [CheckConfig(m=32, n=2000, T=10, epochs=10, repeats=1, delta=0.05, seed=0)]
    if tier == "full":
        return [CheckConfig(m=m, n=n, T=10, epochs=10, repeats=1, delta=0.05, seed=0)
                for m in (32, 128) for n in (2_000, 10_000, 100_000)]
    raise ValueError(f"tier: expected 'quick' or 'full', got {tier!r}")


def _s12n(cfg: CheckConfig) -> CheckResult:
    from dataclasses import replace as _replace

    from benchmarks.nonvacuous import NonVacuousConfig, evaluate

    base = NonVacuousConfig()
    row = evaluate(_replace(base, m=cfg.m, n=cfg.n, seed=cfg.seed, delta=cfg.delta,
                            train=_replace(base.train, epochs=cfg.epochs)))
    slack = min(row["full_bound"] - row["full_test_ramp_lo"], row["pruned_bound"] - row["pruned_test_ramp_lo"])
    details = {k: row[k] for k in ("k", "full_bound", "full_train_risk", "full_estimation", "pruned_bound",
                                   "pruned_train_risk", "pruned_bias", "pruned_estimation", "full_test_error",
                                   "pruned_test_error", "full_test_ramp", "pruned_test_ramp", "target_met")}
    return CheckResult("S12n", cfg, row["pruned_test_ramp"], row["pruned_bound"], not row["violation"], slack,
                       details, vacuous=bool(row["pruned_bound"] >= 1.0))


# ----------------------------------------------------------------------------------------------
# S13: a report (the study itself is benchmarks.s13, shared with the reports)


def _s13_grid(tier: str) -> List[CheckConfig]:
    if tier not in S13_PROTOCOLS:
        raise ValueError(f"tier: expected one of {tuple(S13_PROTOCOLS)}, got {tier!r}")
    p = S13_PROTOCOLS[tier]
    s = p.setup
    return [CheckConfig(m=p.m, n=p.n, T=s.T, rho=s.rho, nonlinearity=s.nonlinearity, task=s.task, epochs=s.epochs,
                        delta=s.delta, seed=s.seed, tier=tier)]


def _s13(cfg: CheckConfig) -> CheckResult:
    study = run_s13(S13_PROTOCOLS[cfg.tier])
    best_bound, best_test = study["bound_argmin"], study["test_argmin"]
    details = dict(lambda_bound_argmin=best_bound["rel_lam"], lambda_test_argmin=best_test["rel_lam"],
                   kendall_tau=study["kendall_tau"], sweep_size=len(study["sweep"]),
                   lambda_sweep=study["lambda_sweep"], sweep=study["sweep"])
    return CheckResult("S13", cfg, best_bound["rel_lam"], best_test["rel_lam"], True, float("nan"), details,
                       vacuous=bool(best_bound["bound"] >= best_bound["trivial"]))


register(Check("S8", "With k >= 5 N log(16 N / delta) leverage draws, lambda_max(R) <= 4 lambda with "
               "probability >= 1 - delta.", "statistical", _s8, _s8_grid))
register(Check("S11", "The held-out risk of a trained student exceeds its S11 bound with probability <= delta.",
               "statistical", _s11, _teacher_grid))
register(Check("S12", "The held-out risk of a pruned student exceeds its S12 bound with probability <= delta.",
               "statistical", _s12, _teacher_grid))
register(Check("S12n", "Neither the full student's S11 bound nor its pruned copy's S12 bound (k from a fixed set, "
               "union bound) lies below the lower confidence limit of the measured ramp risk it bounds (any row "
               "fails; per bound the nominal rate is delta + 1 - confidence).", "statistical", _s12n, _s12n_grid))
register(Check("S13", "Report: the lambda minimising the S12 bound vs the best held-out lambda, and Kendall's "
               "tau between bound and measured gap over (m, k, n, T).", "report", _s13, _s13_grid))
