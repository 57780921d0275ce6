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
