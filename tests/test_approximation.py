"""S9 and S10 [derived]: deterministic bounds, never exceeded, on random ReLU/tanh RNNs."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning import reconstruction_matrix, time_mean_covariance
from reference_impl import make_rnn
from theory.approximation import measured_time_mean_error, s10_bound, s10_last_step_bound, s9_trace, s_rho

case = dict(
    seed=st.integers(0, 10**6),
    m=st.integers(2, 64),
    T=st.integers(1, 64),
    frac=st.floats(0.0, 1.0),
    log_rel_lam=st.floats(-8, 0),  # lambda over 8 decades relative to Tr(Sigma)/m
    rho=st.sampled_from([0.5, 0.9, 1.0, 1.1, 1.5]),  # ||W||_op below, at and above 1
    nonlinearity=st.sampled_from(["relu", "tanh"]),
)


def _setup(seed, m, T, frac, log_rel_lam, rho, nonlinearity, n=6):
    rnn, head = make_rnn(m, d_x=2, d_y=3, nonlinearity=nonlinearity, rho=rho, seed=seed)
    x = torch.randn(n, T, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    sigma = time_mean_covariance(rnn, x).mean()
    k = max(1, min(m, int(round(frac * m))))
    J = list(np.random.default_rng(seed).choice(m, size=k, replace=False))
    scale = np.trace(sigma) / m
    lam = 10.0**log_rel_lam * (scale if scale > 0 else 1.0)
    return rnn, head, x, sigma, J, lam


@given(reconstruct=st.booleans(), **case)
def test_s9_is_never_exceeded_on_any_sequence_and_step(reconstruct, **kw):
    rnn, head, x, sigma, J, lam = _setup(**kw)
    A = reconstruction_matrix(sigma, J, lam) if reconstruct else np.eye(kw["m"])[:, J]
    tr = s9_trace(rnn, head, J, A, x)
    tol = 1e-9 * (1.0 + max(tr.state_bound.max(), tr.output_bound.max(), tr.output_error.max()))
    assert np.all(tr.state_error <= tr.state_bound + tol)
    assert np.all(tr.output_error <= tr.output_bound + tol)
    assert np.all(tr.state_error[:, 0] <= tol)  # e_1 = 0


@given(**case)
def test_s10_time_mean_bound_holds_on_the_covariance_data(**kw):
    rnn, head, x, sigma, J, lam = _setup(**kw)
    A = reconstruction_matrix(sigma, J, lam)
    measured = measured_time_mean_error(rnn, head, J, A, x)
    bound = s10_bound(sigma, J, lam, rnn, head, kw["T"])
    assert measured <= bound * (1 + 1e-8) + 1e-10


@given(**case)
def test_s10_many_to_one_bound_holds(**kw):
    rnn, head, x, sigma, J, lam = _setup(**kw)
    A = reconstruction_matrix(sigma, J, lam)
    measured, bound = s10_last_step_bound(rnn, head, J, A, x)
    assert measured <= bound * (1 + 1e-8) + 1e-10


def test_s9_is_tight_for_a_linear_one_step_case():
    # T = 1: e_1 = 0 and f_1 - f#_1 = V r_1 exactly, so the output bound is attained.
    rnn, head = make_rnn(5, d_x=2, d_y=3, nonlinearity="tanh", seed=3)
    x = torch.randn(4, 1, 2, dtype=torch.float64)
    A = np.random.default_rng(0).standard_normal((5, 2))
    tr = s9_trace(rnn, head, [0, 3], A, x)
    np.testing.assert_allclose(tr.output_error, tr.output_bound, rtol=1e-12)


def test_s_rho_values():
    assert s_rho(0.5, 1) == 0.0
    assert s_rho(1.0, 10) == 9.0
    assert s_rho(2.0, 4) == 7.0
    with pytest.raises(ValueError, match="T"):
        s_rho(1.0, 0)


@settings(max_examples=200, deadline=None)
@given(rho=st.floats(0.0, 3.0), T=st.integers(1, 300))
def test_s_rho_matches_an_exact_sum(rho, T):
    # independent reference: the geometric sum term by term in exact rational arithmetic
    r = Fraction(rho)
    exact = float(sum((r**j for j in range(T - 1)), Fraction(0)))
    assert s_rho(rho, T) == pytest.approx(exact, rel=1e-12, abs=1e-300)


def test_s_rho_is_inf_past_the_float_range_and_the_bounds_stay_defined():
    # An IRNN at T = 784 has rho ~ 1.5: 1.5^783 is about 1e138 (finite), 3^783 (rho^2 in the last-step bound) is not.
    assert math.isfinite(s_rho(1.5, 784))
    assert s_rho(3.0, 784) == math.inf
    assert s_rho(2.0, 1024) == pytest.approx(2.0**1023 - 1.0, rel=1e-12)  # the largest finite case for rho = 2
    assert s_rho(2.0, 1026) == math.inf
    assert s_rho(1e-3, 10**9) == pytest.approx(1.0 / (1.0 - 1e-3), rel=1e-12)


def test_s10_bound_is_inf_not_an_error_when_S_rho_overflows():
    # Regression: at T = 784 an IRNN's S10 bound raised OverflowError and stopped a report (S_rho(T)^2 out of range).
    rnn, head, x, sigma, J, lam = _setup(seed=0, m=8, T=4, frac=0.5, log_rel_lam=-4, rho=3.0, nonlinearity="relu")
    assert s10_bound(sigma, J, lam, rnn, head, 100_000) == math.inf
    short = s10_bound(sigma, J, lam, rnn, head, 4)
    assert math.isfinite(short) and short >= measured_time_mean_error(
        rnn, head, J, reconstruction_matrix(sigma, J, lam), x) * (1 - 1e-8)


def test_the_last_step_needs_the_many_to_one_form_of_S10():
    """Inputs only at t = T (the review's counterexample): the time mean of the deviation is about 1/T of the last
    step's, so the time-mean S10 bound is no bound for a last-step loss, while the many-to-one form is."""
    import torch

    from pruning import reconstruction_matrix, select_units, time_mean_covariance
    from theory import s10_bias_bound, s12_bound

    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)  # the modules' own initialisation too: the test must not depend on the tests before it
    rnn = torch.nn.RNN(2, 8, nonlinearity="tanh", batch_first=True, bias=False, dtype=torch.float64)
    head = torch.nn.Linear(8, 3, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.randn(8, 2, generator=g, dtype=torch.float64) * 2)
        rnn.weight_hh_l0.mul_(0.2 / torch.linalg.matrix_norm(rnn.weight_hh_l0, ord=2))  # a short memory
    x = torch.zeros(300, 20, 2, dtype=torch.float64)
    x[:, -1] = torch.rand(300, 2, generator=g, dtype=torch.float64) - 0.5
    y = torch.randint(0, 3, (300,), generator=g)
    sigma = time_mean_covariance(rnn, x).mean()
    lam = 1e-3 * float(np.trace(sigma)) / 8
    J = select_units(sigma, 3, lam)
    A = reconstruction_matrix(sigma, J, lam)
    last_measured, last_bound = s10_last_step_bound(rnn, head, J, A, x)
    time_mean_bound = s10_bound(sigma, J, lam, rnn, head, 20)
    assert last_measured <= last_bound * (1 + 1e-9)
    assert last_measured > 1.5 * time_mean_bound  # citing the time-mean form for the last step would be wrong
    assert measured_time_mean_error(rnn, head, J, A, x) <= time_mean_bound * (1 + 1e-9)
    assert s10_bias_bound(sigma, J, lam, rnn, head, x, mode="last") == last_bound
    assert s10_bias_bound(sigma, J, lam, rnn, head, x, mode="mean") == time_mean_bound
    # S12's measured deviation for a last-step loss is this last-step error, which the right form bounds
    b = s12_bound(rnn, head, J, A, x, y, mode="last", input_bound=1.0, with_full=False)
    assert b.mean_squared_deviation == pytest.approx(last_measured, rel=1e-10)


# Variable-length data: right-padded sequences with lengths give each sequence's own traces, and S10 holds for the
# pooled mean over real steps with T the longest length (docs/theory.md, S10).

def _padded(seed, T, n=6):
    g = torch.Generator().manual_seed(seed + 2)
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    lengths[0] = T  # the padded length is a real length
    x = torch.randn(n, T, 2, dtype=torch.float64, generator=g)
    x[torch.arange(T)[None] >= lengths[:, None]] = 9.0  # padding that would show if it were read
    return x, lengths


def _padded_case(**kw):
    """A random network and padded data, with the covariance of the real steps and its A_J."""
    rnn, head, _, _, J, lam = _setup(**kw)
    x, lengths = _padded(kw["seed"], kw["T"])
    sigma = time_mean_covariance(rnn, x, lengths=lengths).mean()
    return rnn, head, x, lengths, sigma, J, lam, reconstruction_matrix(sigma, J, lam)


@given(**case)
def test_padded_traces_are_each_sequences_own_and_s9_holds_on_real_steps(**kw):
    rnn, head, x, lengths, sigma, J, lam, A = _padded_case(**kw)
    tr = s9_trace(rnn, head, J, A, x, lengths)
    for i, L in enumerate(lengths.tolist()):
        alone = s9_trace(rnn, head, J, A, x[i:i + 1, :L])
        for got, ref in ((tr.state_error, alone.state_error), (tr.output_error, alone.output_error),
                         (tr.state_bound, alone.state_bound), (tr.output_bound, alone.output_bound)):
            np.testing.assert_allclose(got[i, :L], ref[0], rtol=1e-10, atol=1e-12)
            assert np.isnan(got[i, L:]).all()
    assert tr.worst_margin >= -1e-9 * (1.0 + np.nanmax(tr.output_bound))
    # the pooled time mean over real steps, and S10 at the longest length
    measured = measured_time_mean_error(rnn, head, J, A, x, lengths)
    per_step = sum(float(np.sum(s9_trace(rnn, head, J, A, x[i:i + 1, :L]).output_error ** 2))
                   for i, L in enumerate(lengths.tolist()))
    # (batched and single runs differ in the last bits of the states; squared errors near round-off need an
    # absolute allowance on the scale of the outputs)
    scale = 1e-15 * (1.0 + float(np.nanmean(tr.output_bound)) ** 2)
    assert measured == pytest.approx(per_step / int(lengths.sum()), rel=1e-8, abs=scale)
    assert measured <= s10_bound(sigma, J, lam, rnn, head, kw["T"]) * (1 + 1e-8) + 1e-10


@given(**case)
def test_the_many_to_one_form_reads_each_sequences_last_step(**kw):
    rnn, head, x, lengths, sigma, J, lam, A = _padded_case(**kw)
    measured, bound = s10_last_step_bound(rnn, head, J, A, x, lengths)
    alone = [s10_last_step_bound(rnn, head, J, A, x[i:i + 1, :L]) for i, L in enumerate(lengths.tolist())]
    with torch.no_grad():
        scale = 1e-15 * (1.0 + float(head(rnn(x)[0]).pow(2).sum(-1).mean()))  # round-off of f - f# near zero
    assert measured == pytest.approx(np.mean([a[0] for a in alone]), rel=1e-8, abs=scale)
    assert measured <= bound * (1 + 1e-8) + 1e-10


def test_a_time_major_rnn_reads_its_inputs_in_its_own_layout():
    """The bounds take x in the RNN's layout, as the module and the covariance pass do. They used to read every x as
    (n, T, d_x): time-major data given to a time-major RNN (torch's default) was read as T sequences of length n,
    silently when n == T. Each function on the time-major twin and time-major data equals the batch-first result
    exactly (float64), and the per-step labels of S11/S12 follow the same layout."""
    from theory import network_outputs, s10_bias_bound, s11_bound, s12_bound

    rnn, head = make_rnn(6, d_x=2, d_y=3, seed=4)  # batch first
    twin = torch.nn.RNN(2, 6, nonlinearity="relu", batch_first=False, dtype=torch.float64)
    twin.load_state_dict(rnn.state_dict())
    x = torch.randn(7, 7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))  # n == T
    xt = x.transpose(0, 1)
    sigma = time_mean_covariance(rnn, x).mean()
    J, lam = [0, 2, 5], 1e-3
    A = reconstruction_matrix(sigma, J, lam)
    lengths = [7, 3, 5, 1, 7, 2, 6]
    a, b = s9_trace(rnn, head, J, A, x, lengths), s9_trace(twin, head, J, A, xt, lengths)
    np.testing.assert_array_equal(a.output_error, b.output_error)
    np.testing.assert_array_equal(a.state_bound, b.state_bound)
    assert measured_time_mean_error(rnn, head, J, A, x) == measured_time_mean_error(twin, head, J, A, xt)
    assert s10_last_step_bound(rnn, head, J, A, x, lengths) == s10_last_step_bound(twin, head, J, A, xt, lengths)
    for mode in ("last", "mean"):
        assert s10_bias_bound(sigma, J, lam, rnn, head, x, mode=mode) == \
            s10_bias_bound(sigma, J, lam, twin, head, xt, mode=mode)
        np.testing.assert_array_equal(network_outputs(rnn, head, x, mode=mode),
                                      network_outputs(twin, head, xt, mode=mode))
    bound = float(x.norm(dim=-1).max())
    y_last = torch.randint(0, 3, (7,), generator=torch.Generator().manual_seed(6))
    y_steps = torch.randint(0, 3, (7, 7), generator=torch.Generator().manual_seed(7))
    for mode, y, y_twin in (("last", y_last, y_last), ("mean", y_steps, y_steps.T)):
        assert s11_bound(rnn, head, x, y, input_bound=bound, mode=mode).bound == \
            s11_bound(twin, head, xt, y_twin, input_bound=bound, mode=mode).bound
        assert s12_bound(rnn, head, J, A, x, y, input_bound=bound, mode=mode).bound == \
            s12_bound(twin, head, J, A, xt, y_twin, input_bound=bound, mode=mode).bound
    with pytest.raises(ValueError, match=r"x: expected sequences of shape \(T, n, 2\) \(time-major"):
        s9_trace(twin, head, J, A, xt[..., :1], None)
