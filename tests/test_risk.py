"""Losses of section 7 and the empirical risks of section 8, against direct computations."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from theory.empirical import generalization_gap, hoeffding_halfwidth, risk_estimate
from theory.losses import cross_entropy_loss, margin_ramp_loss, squared_loss, zero_one_loss


def _naive_ramp(f, y, gamma):
    out = []
    for row, label in zip(f, y):
        margin = row[label] - max(v for i, v in enumerate(row) if i != label)
        out.append(min(1.0, max(0.0, 1.0 - margin / gamma)))
    return np.array(out)


@given(seed=st.integers(0, 10**6), n=st.integers(1, 20), d=st.integers(2, 6), gamma=st.floats(1e-3, 10))
def test_margin_ramp_matches_a_loop_and_dominates_the_zero_one_loss(seed, n, d, gamma):
    rng = np.random.default_rng(seed)
    f, y = rng.standard_normal((n, d)), rng.integers(0, d, n)
    ramp = margin_ramp_loss(f, y, gamma)
    np.testing.assert_allclose(ramp, _naive_ramp(f, y, gamma), rtol=1e-12, atol=1e-12)
    assert np.all(ramp >= zero_one_loss(f, y)) and np.all((ramp >= 0) & (ramp <= 1))
    np.testing.assert_array_equal(zero_one_loss(f, y), (f.argmax(1) != y).astype(float))


@given(seed=st.integers(0, 10**6), d=st.integers(2, 6), gamma=st.floats(1e-2, 10), step=st.floats(1e-6, 3))
def test_losses_are_lipschitz_with_the_section_7_constants(seed, d, gamma, step):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((50, d)) * 3
    g = f + step * rng.standard_normal((50, d))
    y = rng.integers(0, d, 50)
    dist = np.linalg.norm(f - g, axis=1)
    ramp_diff = np.abs(margin_ramp_loss(f, y, gamma) - margin_ramp_loss(g, y, gamma))
    assert np.all(ramp_diff <= math.sqrt(2) / gamma * dist * (1 + 1e-9) + 1e-12)
    ce_diff = np.abs(cross_entropy_loss(f, y) - cross_entropy_loss(g, y))
    assert np.all(ce_diff <= math.sqrt(2) * dist * (1 + 1e-9) + 1e-12)


def test_cross_entropy_and_squared_losses_match_torch():
    rng = np.random.default_rng(0)
    f, y = rng.standard_normal((30, 5, 4)), rng.integers(0, 4, (30, 5))
    ref = torch.nn.functional.cross_entropy(torch.tensor(f).reshape(-1, 4), torch.tensor(y).reshape(-1),
                                            reduction="none").reshape(30, 5).mean(1)
    np.testing.assert_allclose(cross_entropy_loss(f, y), ref.numpy(), rtol=1e-12)
    t = rng.standard_normal((30, 5, 4))
    np.testing.assert_allclose(squared_loss(f, t), ((f - t) ** 2).sum(-1).mean(1), rtol=1e-12)


def test_loss_inputs_are_validated():
    f = np.zeros((4, 3))
    with pytest.raises(ValueError, match="labels"):
        margin_ramp_loss(f, np.array([0, 1, 2, 3]), 1.0)
    with pytest.raises(TypeError, match="labels"):
        cross_entropy_loss(f, np.zeros(4))
    with pytest.raises(ValueError, match="gamma"):
        margin_ramp_loss(f, np.zeros(4, dtype=int), 0.0)
    with pytest.raises(ValueError, match="targets"):
        squared_loss(f, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="outputs"):
        squared_loss(np.zeros(4), np.zeros(4))


def test_hoeffding_halfwidth_closed_form():
    assert math.isclose(hoeffding_halfwidth(200, 2.0, 0.05), 2.0 * math.sqrt(math.log(40) / 400))
    assert math.isclose(hoeffding_halfwidth(200, 1.0, 0.05, two_sided=False), math.sqrt(math.log(20) / 400))
    with pytest.raises(ValueError, match="delta"):
        hoeffding_halfwidth(10, 1.0, 1.0)
    with pytest.raises(ValueError, match="n"):
        hoeffding_halfwidth(0, 1.0, 0.1)


def test_hoeffding_interval_covers_the_true_mean_at_its_confidence():
    """Bernoulli(p) losses with known mean: coverage >= 1 - delta. Hoeffding is conservative, so the
    observed miss rate over 4000 intervals must stay below delta + 4 standard errors (a false alarm
    has probability below 1e-4)."""
    rng = np.random.default_rng(1)
    delta, p, n, trials = 0.1, 0.3, 50, 4000
    misses = 0
    for _ in range(trials):
        est = risk_estimate(rng.random(n) < p, 1.0, delta)
        misses += not (est.lower <= p <= est.upper)
    assert misses / trials <= delta + 4 * math.sqrt(delta * (1 - delta) / trials)


def test_gap_is_held_out_minus_training_risk():
    rng = np.random.default_rng(2)
    train, test = rng.uniform(0, 0.5, 100), rng.uniform(0, 1, 1000)
    gap = generalization_gap(train, test, 1.0, 0.05)
    assert math.isclose(gap.gap, test.mean() - train.mean())
    assert math.isclose(gap.gap_upper - gap.gap, gap.gap - gap.gap_lower, rel_tol=1e-9)
    assert math.isclose(gap.gap_upper - gap.gap, hoeffding_halfwidth(1000, 1.0, 0.05))
    with pytest.raises(ValueError, match="test_losses"):
        generalization_gap(train, test + 1.0, 1.0)
    with pytest.raises(ValueError, match="losses"):
        risk_estimate([], 1.0)
