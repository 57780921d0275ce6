"""Section 5 / S7: degrees of freedom, lambda for a target DoF, leverage scores, S8 sample size."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference_impl import random_psd
from theory import degrees_of_freedom, dof_sample_size, eigenvalues, lambda_for_dof, leverage_scores


@given(seed=st.integers(0, 10**6), m=st.integers(1, 30), decay=st.floats(0, 3), log_lam=st.floats(-8, 3))
def test_dof_matches_trace_formula_and_is_bounded_by_rank(seed, m, decay, log_lam):
    rng = np.random.default_rng(seed)
    sigma = random_psd(rng, m, rank=int(rng.integers(1, m + 1)), decay=decay)
    lam = 10.0**log_lam * np.trace(sigma) / m
    n = degrees_of_freedom(sigma, lam)
    # trace formula via a linear solve, independent of the eigenvalues
    ref = float(np.trace(np.linalg.solve(sigma + lam * np.eye(m), sigma)))
    # the reference solve loses about log10(cond) digits, cond = (mu_max + lam) / lam
    cond = (np.linalg.eigvalsh(sigma).max() + lam) / lam
    assert n == pytest.approx(ref, rel=1e-8, abs=1e-10 + 10 * m * np.finfo(float).eps * cond)
    rank = np.linalg.matrix_rank(sigma)
    assert 0 < n < rank + 1e-9
    assert degrees_of_freedom(eigenvalues(sigma), lam) == pytest.approx(n, rel=1e-12)
    # S7: strictly decreasing
    assert degrees_of_freedom(sigma, 2 * lam) < n


@given(seed=st.integers(0, 10**6), m=st.integers(2, 30), frac=st.floats(0.01, 0.99))
def test_lambda_for_dof_inverts_the_dof(seed, m, frac):
    rng = np.random.default_rng(seed)
    sigma = random_psd(rng, m, decay=1.0)
    target = frac * m
    lam = lambda_for_dof(sigma, target)
    assert degrees_of_freedom(sigma, lam) == pytest.approx(target, rel=1e-6)


def test_lambda_for_dof_rejects_targets_outside_the_range():
    sigma = np.diag([3.0, 1.0, 0.0])
    for bad in (0.0, -1.0, 2.0, 2.5, float("nan")):
        with pytest.raises(ValueError, match=r"target.*\(0, 2\)"):
            lambda_for_dof(sigma, bad)


def test_leverage_scores_sum_to_one_and_favour_strong_units():
    q = leverage_scores(np.diag([10.0, 1.0, 0.1, 0.0]), 1.0)
    assert q.sum() == pytest.approx(1.0)
    assert q[0] > q[1] > q[2] > q[3] == 0.0
    np.testing.assert_allclose(q * degrees_of_freedom(np.diag([10.0, 1.0, 0.1, 0.0]), 1.0),
                               [10 / 11, 1 / 2, 0.1 / 1.1, 0.0])
    with pytest.raises(ValueError, match="zero"):
        leverage_scores(np.zeros((3, 3)), 1.0)


def test_dof_sample_size_formula():
    assert dof_sample_size(3.0, 0.2) == pytest.approx(15 * math.log(240.0))
    with pytest.raises(ValueError, match="delta"):
        dof_sample_size(3.0, 1.0)
    with pytest.raises(ValueError, match="lam"):
        degrees_of_freedom(np.eye(2), 0.0)
