"""The coefficients of the generalization-measures protocol against values computed by hand on small tables."""

import math

import pytest

from benchmarks.generalization_measures import granulated_kendall, kendall_tau, sign_error

# Two hyper-parameters, four networks. By hand:
#   pairs (A,B) (A,C) (A,D) (B,C) (B,D) concordant, (C,D) discordant: tau = (5 - 1) / 6 = 2/3;
#   only m varies: n = 100 -> {A, B} tau +1, n = 1000 -> {C, D} tau -1, psi_m = 0;
#   only n varies: m = 32 -> {A, C} tau +1, m = 64 -> {B, D} tau +1, psi_n = 1; overall 1/2;
#   coupled pairs: (A,B) and (C,D) differ in m, (A,C) and (B,D) in n; only (C,D) has a sign error.
TABLE = [
    dict(name="A", m=32, n=100, measure=1.0, gap=0.30, noise=0.06),
    dict(name="B", m=64, n=100, measure=2.0, gap=0.40, noise=0.06),
    dict(name="C", m=32, n=1000, measure=0.5, gap=0.10, noise=0.01),
    dict(name="D", m=64, n=1000, measure=0.4, gap=0.20, noise=0.01),
]


def test_kendall_tau_by_hand():
    assert kendall_tau([r["measure"] for r in TABLE], [r["gap"] for r in TABLE]) == pytest.approx(2 / 3)
    # with a tie in the measure: tau-b = (5 - 0) / sqrt((6 - 1) (6 - 0))
    assert kendall_tau([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / math.sqrt(30))
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="measure, gap: expected two sequences of equal length"):
        kendall_tau([1, 2], [1, 2, 3])


def test_granulated_coefficient_by_hand():
    out = granulated_kendall(TABLE, "measure", "gap", ["m", "n"])
    assert out["per_hyperparameter"] == {"m": pytest.approx(0.0), "n": pytest.approx(1.0)}
    assert out["overall"] == pytest.approx(0.5) and out["groups"] == {"m": 2, "n": 2}
    with pytest.raises(ValueError, match="measure_x: not a column"):
        granulated_kendall(TABLE, "measure_x", "gap", ["m", "n"])


def test_sign_error_by_hand_with_and_without_noise():
    out = sign_error(TABLE, "measure", "gap", ["m", "n"])
    assert out["overall"] == pytest.approx(0.25) and out["per_hyperparameter"] == {"m": 0.5, "n": 0.0}
    assert out["pairs"] == {"m": 2, "n": 2} and out["left_out"] == 0
    # gap differences within the two networks noise are left out: (A,B) differ by 0.10 <= 0.06 + 0.06
    noisy = sign_error(TABLE, "measure", "gap", ["m", "n"], noise="noise")
    assert noisy["left_out"] == 1 and noisy["pairs"] == {"m": 1, "n": 2} and noisy["per_hyperparameter"]["m"] == 1.0
    wide = sign_error(TABLE, "measure", "gap", ["m", "n"], noise_value=0.06)
    assert wide["left_out"] == 2 and wide["overall"] == 0.0 and math.isnan(wide["per_hyperparameter"]["m"])


def test_fixed_columns_split_groups_and_pairs():
    # two seeds of the same two-network design: with the seed fixed, the cross-seed rows neither share a group nor
    # form a pair. By hand, seed 0: (m=32, m=64) measure up, gap up (+1); seed 1: measure up, gap down (-1).
    rows = [dict(m=32, seed=0, measure=1.0, gap=0.1), dict(m=64, seed=0, measure=2.0, gap=0.2),
            dict(m=32, seed=1, measure=1.5, gap=0.5), dict(m=64, seed=1, measure=2.5, gap=0.3)]
    fixed = granulated_kendall(rows, "measure", "gap", ["m"], fixed=["seed"])
    assert fixed["per_hyperparameter"]["m"] == pytest.approx(0.0) and fixed["groups"] == {"m": 2}
    # without the seed fixed the four rows A, B, C, D form one group: concordant (A,B) (A,C) (A,D) (B,D),
    # discordant (B,C) (C,D), so tau = (4 - 2) / 6 = 1/3
    assert granulated_kendall(rows, "measure", "gap", ["m"])["per_hyperparameter"]["m"] == pytest.approx(1 / 3)
    s = sign_error(rows, "measure", "gap", ["m"], fixed=["seed"])
    assert s["pairs"] == {"m": 2} and s["overall"] == pytest.approx(0.5)


def test_nan_measures_are_left_out():
    assert kendall_tau([1.0, math.nan, 3.0, 2.0], [1.0, 5.0, 3.0, 2.0]) == pytest.approx(1.0)
    assert math.isnan(kendall_tau([math.nan, 1.0], [1.0, 2.0]))
    rows = [dict(m=1, measure=math.nan, gap=0.0), dict(m=2, measure=1.0, gap=1.0), dict(m=3, measure=2.0, gap=2.0)]
    s = sign_error(rows, "measure", "gap", ["m"])
    assert s["pairs"] == {"m": 1} and s["overall"] == 0.0
