"""S11/S12 [derived]: the constants of the class F_k(R), the estimation term and the bounds' parts.

The deterministic facts the proofs rest on are checked against direct computations on random
networks: ``||h_t|| <= H_T``, outputs ``L_T``-Lipschitz in the parameters, losses within ``[0, M]``,
and ``Psi_hat(f#) <= Psi_hat(f) + bias`` (the first step of S12).
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pruning import compress, reconstruction_matrix, time_mean_covariance
from reference_impl import make_rnn, numpy_rnn_states, rnn_weights
from theory.estimation import (
    EPS_STEPS,
    RADIUS_GRID,
    ClassRadii,
    estimation_term,
    hidden_state_bound,
    log_growth,
    log_output_lipschitz,
    loss_constants,
    network_outputs,
    network_radii,
    parameter_count,
    s11_bound,
    s12_bound,
)
from theory.losses import cross_entropy_loss, margin_ramp_loss, squared_loss

net = dict(
    seed=st.integers(0, 10**6),
    m=st.integers(1, 24),
    T=st.integers(1, 30),
    rho=st.sampled_from([0.5, 0.9, 1.0, 1.1, 1.5]),
    nonlinearity=st.sampled_from(["relu", "tanh"]),
)


def _inputs(seed, n, T, d_x=2, R_x=1.0):
    """Inputs with ||x_t|| <= R_x exactly on some steps (the worst case) and below elsewhere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, d_x, dtype=torch.float64, generator=g)
    x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True) * R_x
    return x * torch.rand(n, T, 1, dtype=torch.float64, generator=g).clamp_min(0.5)


def _numpy_outputs(rnn, head, x):
    W, U, b = rnn_weights(rnn)
    h = numpy_rnn_states(W, U, b, x.numpy(), rnn.nonlinearity)
    return h, h @ head.weight.detach().numpy().T + head.bias.detach().numpy()


@pytest.mark.parametrize("r", [0.0, 0.3, 1.0, 1.0 + 1e-13, 1.7, 4.0])
@pytest.mark.parametrize("T", [1, 2, 7, 40])
def test_log_growth_matches_the_direct_sum(r, T):
    assert math.isclose(log_growth(r, T), math.log(sum(r**j for j in range(T))), rel_tol=1e-12, abs_tol=1e-12)


def test_log_growth_stays_finite_where_the_sum_overflows():
    assert math.isclose(log_growth(10.0, 1000), 1000 * math.log(10) - math.log(9), rel_tol=1e-12)
    assert math.isinf(hidden_state_bound(ClassRadii(10.0, 1, 0, 1, 0), 1.0, 1000))


def test_parameter_count_counts_the_modules():
    for k, d_x, d_y in [(1, 1, 1), (5, 3, 2), (17, 4, 10)]:
        rnn = torch.nn.RNN(d_x, k)
        head = torch.nn.Linear(k, d_y)
        # nn.RNN carries two bias vectors whose sum is b: count b once
        modules = sum(p.numel() for p in rnn.parameters()) - k + sum(p.numel() for p in head.parameters())
        assert parameter_count(k, d_x, d_y) == modules


@given(**net)
def test_hidden_states_never_exceed_H_T(seed, m, T, rho, nonlinearity):
    rnn, head = make_rnn(m, d_x=2, d_y=3, nonlinearity=nonlinearity, rho=rho, seed=seed)
    x = _inputs(seed, 8, T)
    h, _ = _numpy_outputs(rnn, head, x)
    H = hidden_state_bound(network_radii(rnn, head), 1.0, T)
    assert np.linalg.norm(h, axis=-1).max() <= H * (1 + 1e-12)


@given(**net, scale=st.floats(1e-4, 1.0))
def test_outputs_are_L_T_lipschitz_in_the_parameters(seed, m, T, rho, nonlinearity, scale):
    """Two networks in the same class: ||f_t - f'_t|| <= L_T ||theta - theta'|| at every step."""
    rnn, head = make_rnn(m, d_x=2, d_y=3, nonlinearity=nonlinearity, rho=rho, seed=seed)
    rnn2, head2 = make_rnn(m, d_x=2, d_y=3, nonlinearity=nonlinearity, rho=rho, seed=seed + 1)
    with torch.no_grad():  # a nearby second network (scale small) or an unrelated one (scale 1)
        for p, q in zip(list(rnn.parameters()) + list(head.parameters()),
                        list(rnn2.parameters()) + list(head2.parameters())):
            q.copy_(p + scale * (q - p))
    r1, r2 = network_radii(rnn, head), network_radii(rnn2, head2)
    radii = ClassRadii(*(max(a, b) for a, b in zip(
        (r1.w, r1.u, r1.b, r1.v, r1.c), (r2.w, r2.u, r2.b, r2.v, r2.c))))
    x = _inputs(seed + 2, 6, T)
    _, f1 = _numpy_outputs(rnn, head, x)
    _, f2 = _numpy_outputs(rnn2, head2, x)
    W1, U1, b1 = rnn_weights(rnn)
    W2, U2, b2 = rnn_weights(rnn2)
    d = lambda a, b: float(np.sum((a - b) ** 2))
    dist = math.sqrt(d(W1, W2) + d(U1, U2) + d(b1, b2) + d(head.weight.detach().numpy(), head2.weight.detach().numpy())
                     + d(head.bias.detach().numpy(), head2.bias.detach().numpy()))
    L = math.exp(log_output_lipschitz(radii, 1.0, T))
    assert np.linalg.norm(f1 - f2, axis=-1).max() <= L * dist * (1 + 1e-9) + 1e-12


@given(**net)
def test_losses_stay_below_their_upper_level_M(seed, m, T, rho, nonlinearity):
    rnn, head = make_rnn(m, d_x=2, d_y=3, nonlinearity=nonlinearity, rho=rho, seed=seed)
    x = _inputs(seed, 16, T)
    _, f = _numpy_outputs(rnn, head, x)
    radii = network_radii(rnn, head)
    labels = np.random.default_rng(seed).integers(0, 3, size=(16, T))
    _, M_ce = loss_constants("cross_entropy", radii, 1.0, T, 3)
    assert cross_entropy_loss(f, labels).max() <= M_ce * (1 + 1e-12)
    y = np.random.default_rng(seed).uniform(-1, 1, size=f.shape) / math.sqrt(3)
    rho_sq, M_sq = loss_constants("squared", radii, 1.0, T, 3, target_bound=1.0)
    assert squared_loss(f, y).max() <= M_sq * (1 + 1e-12)
    assert math.isclose(rho_sq, 2 * math.sqrt(M_sq))


def test_estimation_term_closed_form_at_a_given_eps():
    n, P, B, log_L, rho, M, delta, eps = 500, 40, 3.0, 5.0, 2.0, 1.0, 0.05, 0.01
    t = estimation_term(n, P, B, log_L, rho, M, delta, log_grid=2.0, eps=eps)
    expected = 2 * rho * math.exp(log_L) * eps + M * math.sqrt((P * math.log(1 + 2 * B / eps) + 2.0
                                                               + math.log(1 / delta)) / (2 * n))
    assert math.isclose(t.value, expected, rel_tol=1e-12)
    assert math.isclose(t.value, t.lipschitz_part + t.complexity_part, rel_tol=1e-12)


def test_estimation_term_on_the_grid_is_the_minimum_over_grid_points():
    args = (800, 60, 5.0, 12.0, math.sqrt(2) / 0.5, 1.0, 0.05)
    best = estimation_term(*args, log_grid=3.0)
    pen = 3.0 + math.log(EPS_STEPS)
    at = [estimation_term(*args, log_grid=pen, eps=5.0 * 2.0**-j).value for j in range(0, 80)]
    assert math.isclose(best.value, min(at), rel_tol=1e-10)
    assert math.isclose(best.log_grid, pen)


def test_estimation_term_grows_with_parameters_and_shrinks_with_n():
    base = dict(B=4.0, log_lipschitz=8.0, rho_psi=1.0, upper=1.0, delta=0.05)
    values = [estimation_term(n, P, **base).value for n, P in [(1000, 10), (1000, 100), (10000, 100)]]
    assert values[0] < values[1] and values[2] < values[1]


def test_radii_round_up_to_the_grid():
    r = ClassRadii(1.5, 0.0, 3.0, 2.0, 1e-3).rounded_up()
    assert (r.w, r.b, r.v) == (2.0, 4.0, 4.0) and r.u == RADIUS_GRID[0] and r.c == 2.0**-9  # 2.0 rounds outward
    with pytest.raises(ValueError, match="radii.w"):
        ClassRadii(1e9, 0, 0, 0, 0).rounded_up()
    with pytest.raises(ValueError, match="radii.u"):
        ClassRadii(1.0, -1.0, 0, 0, 0)


@given(st.floats(min_value=2.0**-10, max_value=2.0**19))
def test_radii_round_outward_to_the_smallest_grid_value_above_the_norm(value):
    r = ClassRadii(value, value, value, value, value).rounded_up()
    assert r.w >= value * (1 + 1e-9)  # the class contains the network, with room for the norm's round-off
    assert r.w in set(RADIUS_GRID.tolist())
    assert r.w / 2 < value * (1 + 1e-9) or r.w == RADIUS_GRID[0]  # and it is the smallest such grid value


def test_a_norm_just_above_a_grid_value_never_rounds_down():
    # the review's case: multiplying by (1 - 1e-12) mapped 2 (1 + 5e-13) to the radius 2
    assert ClassRadii(2 * (1 + 5e-13), 0, 0, 0, 0).rounded_up().w == 4.0
    assert ClassRadii(2.0, 0, 0, 0, 0).rounded_up().w == 4.0  # within the margin of round-off: outward


def test_targets_beyond_the_target_bound_are_refused():
    rnn, head, x, labels = _trained_like(0, 4, 3, "relu", 0.9)
    y = np.zeros((len(labels), 3))
    y[5] = [0.0, 310.0, 0.0]
    for bound in (s11_bound, lambda *a, **k: s12_bound(rnn, head, [0, 1], np.eye(4)[:, :2], *a[2:], **k)):
        with pytest.raises(ValueError, match=r"target_bound: the targets have \|\|y\|\| up to 310 > target_bound = 0.1"):
            bound(rnn, head, x, y, loss="squared", input_bound=1.0, target_bound=0.1)
    ok = s11_bound(rnn, head, x, y, loss="squared", input_bound=1.0, target_bound=310.0)
    assert ok.trivial == 310.0**2
    ym = np.repeat(y[:, None], 3, axis=1)  # many-to-many targets are checked at every step
    with pytest.raises(ValueError, match="target_bound"):
        s11_bound(rnn, head, x, ym, loss="squared", input_bound=1.0, target_bound=300.0, mode="mean")


def _trained_like(seed, m, T, nonlinearity, rho, n=40):
    rnn, head = make_rnn(m, d_x=2, d_y=3, nonlinearity=nonlinearity, rho=rho, seed=seed)
    x = _inputs(seed + 3, n, T)
    labels = np.random.default_rng(seed).integers(0, 3, size=n)
    return rnn, head, x, labels


@given(**net, gamma=st.sampled_from([0.1, 1.0, 4.0]))
def test_s11_parts_match_an_independent_forward_pass(seed, m, T, rho, nonlinearity, gamma):
    rnn, head, x, labels = _trained_like(seed, m, T, nonlinearity, rho)
    b = s11_bound(rnn, head, x, labels, input_bound=1.0, gamma=gamma)
    _, f = _numpy_outputs(rnn, head, x)
    assert math.isclose(b.train_risk, margin_ramp_loss(f[:, -1], labels, gamma).mean(), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(b.bound, b.train_risk + b.estimation.value, rel_tol=1e-12)
    norms = network_radii(rnn, head)
    assert all(getattr(b.radii, k) >= getattr(norms, k) for k in "wubvc")
    assert b.upper == 1.0 and b.vacuous == (b.bound >= 1.0)


@given(**net, frac=st.floats(0.0, 1.0), log_rel_lam=st.floats(-8, 0), loss=st.sampled_from(
    ["margin", "cross_entropy", "squared"]), mode=st.sampled_from(["last", "mean"]))
def test_s12_first_step_pruned_training_risk_is_within_the_bias(seed, m, T, rho, nonlinearity, frac, log_rel_lam,
                                                                  loss, mode):
    """``Psi_hat(f#) <= Psi_hat(f) + bias`` on the training data, for every loss (deterministic)."""
    rnn, head, x, labels = _trained_like(seed, m, T, nonlinearity, rho)
    sigma = time_mean_covariance(rnn, x).mean()
    k = max(1, min(m, int(round(frac * m))))
    J = list(np.random.default_rng(seed).choice(m, size=k, replace=False))
    lam = 10.0**log_rel_lam * max(np.trace(sigma) / m, 1e-12)
    A = reconstruction_matrix(sigma, J, lam)
    y = labels if loss != "squared" else np.random.default_rng(seed).uniform(-1, 1, (len(labels), 3)) / math.sqrt(3)
    if mode == "mean":
        y = np.repeat(np.asarray(y)[:, None], T, axis=1)
    b = s12_bound(rnn, head, J, A, x, y, loss=loss, input_bound=1.0, target_bound=1.0, mode=mode, with_full=False)
    assert b.pruned_train_risk <= b.full_train_risk + b.bias + 1e-9 * (1 + abs(b.full_train_risk))
    # the bias is rho_psi times the RMS output deviation, measured here on the compressed modules
    rnn_s, head_s = compress(rnn, head, J, A)
    f = network_outputs(rnn, head, x, mode=mode)
    f_s = network_outputs(rnn_s, head_s, x, mode=mode)
    assert math.isclose(b.mean_squared_deviation, float(np.mean(np.sum((f - f_s) ** 2, axis=-1))),
                        rel_tol=1e-7, abs_tol=1e-14)


def test_vacuity_is_judged_against_the_trivial_level_of_each_loss():
    rnn, head, x, labels = _trained_like(1, 5, 4, "tanh", 0.9)
    ce = s11_bound(rnn, head, x, labels, loss="cross_entropy", input_bound=1.0)
    assert math.isclose(ce.trivial, math.log(3)) and ce.vacuous == (ce.bound >= math.log(3))
    y = np.zeros((len(labels), 3))
    sq = s11_bound(rnn, head, x, y, loss="squared", input_bound=1.0, target_bound=2.0)
    assert sq.trivial == 4.0 and sq.upper > sq.trivial  # Hoeffding's M is far above what predicting 0 risks
    assert sq.vacuous == (sq.bound >= 4.0) and math.isclose(sq.ratio_to_trivial, sq.bound / 4.0)


def test_s12_with_every_unit_and_tiny_lambda_has_no_bias_and_reports_the_full_bound():
    rnn, head, x, labels = _trained_like(3, 6, 5, "tanh", 0.9)
    sigma = time_mean_covariance(rnn, x).mean()
    J = list(range(6))
    b = s12_bound(rnn, head, J, reconstruction_matrix(sigma, J, 1e-12), x, labels, input_bound=1.0)
    assert b.bias < 1e-5
    full = s11_bound(rnn, head, x, labels, input_bound=1.0)
    assert b.full is not None and math.isclose(b.full.bound, full.bound)
    assert math.isclose(b.pruned_train_risk, b.full_train_risk, abs_tol=1e-6)


def test_bad_input_is_refused_with_the_argument_named():
    rnn, head, x, labels = _trained_like(0, 4, 3, "relu", 0.9)
    with pytest.raises(ValueError, match="input_bound"):
        s11_bound(rnn, head, 3 * x, labels, input_bound=1.0)
    with pytest.raises(ValueError, match="loss"):
        s11_bound(rnn, head, x, labels, loss="hinge", input_bound=1.0)
    with pytest.raises(ValueError, match="delta"):
        s11_bound(rnn, head, x, labels, input_bound=1.0, delta=1.5)
    with pytest.raises(ValueError, match="target_bound"):
        s11_bound(rnn, head, x, np.zeros((len(labels), 3)), loss="squared", input_bound=1.0)
    with pytest.raises(ValueError, match="mode"):
        s11_bound(rnn, head, x, labels, input_bound=1.0, mode="first")
    with pytest.raises(ValueError, match="labels"):
        s11_bound(rnn, head, x, labels[:-1], input_bound=1.0)
    with pytest.raises(ValueError, match="eps"):
        estimation_term(10, 5, 1.0, 0.0, 1.0, 1.0, 0.1, eps=2.0)
    with pytest.raises(ValueError, match="x"):
        s11_bound(rnn, head, x[:, :, :1], labels, input_bound=1.0)
