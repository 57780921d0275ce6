"""The selection criteria of pruning/criteria.py, each against an independent computation: Taylor scores against
finite differences of the loss, activation statistics against a NumPy recomputation from the modules' outputs, the
geometric median against a brute-force minimiser and the 1-D median, ThiNet-style output reconstruction against a
brute-force least-squares greedy (it is the theta -> infinity limit of the S3 greedy), and the eigenvalue widths
against their definition."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from pruning import compress_stack, select_units, time_mean_covariance
from pruning.criteria import (CRITERIA, Criterion, eigen_widths, gated_forward, geometric_median, prune_by_criterion,
                              register_criterion)
from pruning.modules import as_layers


def _module(cell, m, layers=1, bidirectional=False, nonlinearity="tanh", seed=0):
    torch.manual_seed(seed)
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=True, dtype=torch.float64)
    rnn = torch.nn.RNN(3, m, nonlinearity=nonlinearity, **kw) if cell == "RNN" else getattr(torch.nn, cell)(3, m, **kw)
    return rnn, torch.nn.Linear((2 if bidirectional else 1) * m, 3, dtype=torch.float64)


@settings(max_examples=12, deadline=None)
@given(cell=st.sampled_from(["RNN", "LSTM", "GRU"]), layers=st.integers(1, 2), bidirectional=st.booleans(),
       seed=st.integers(0, 100))
def test_the_gated_forward_with_unit_gates_is_the_module(cell, layers, bidirectional, seed):
    rnn, _ = _module(cell, 4, layers, bidirectional, seed=seed)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    gates = [[torch.ones(4, dtype=torch.float64) for _ in range(2 if bidirectional else 1)] for _ in range(layers)]
    with torch.no_grad():
        torch.testing.assert_close(gated_forward(as_layers(rnn), x, gates), rnn(x)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell,layers,bidirectional,steps", [("RNN", 1, False, "last"), ("GRU", 2, False, "all"),
                                                             ("LSTM", 1, True, "last"), ("LSTM", 2, True, "all")])
def test_taylor_scores_are_finite_differences_of_the_loss(cell, layers, bidirectional, steps):
    """|dL/dg_j| at g = 1, where unit j's state is scaled by g_j at every step, by central differences."""
    rnn, head = _module(cell, 3, layers, bidirectional, seed=1)
    n, T = 6, 4
    x = torch.randn(n, T, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 3, (n,) if steps == "last" else (n, T), generator=torch.Generator().manual_seed(3))
    scores = CRITERIA["taylor"].scores((rnn, head), x, targets=y, steps=steps, batch_size=4)
    D, layers_ = (2 if bidirectional else 1), as_layers(rnn)

    def loss(gates):
        with torch.no_grad():
            out = gated_forward(layers_, x, gates)
            f = head(out[:, -1]) if steps == "last" else head(out)
            return float(torch.nn.functional.cross_entropy(f.reshape(-1, 3), y.reshape(-1), reduction="sum"))

    eps = 1e-6
    for l in range(layers):
        for d in range(D):
            for j in range(3):
                g_plus = [[torch.ones(3, dtype=torch.float64) for _ in range(D)] for _ in range(layers)]
                g_minus = [[torch.ones(3, dtype=torch.float64) for _ in range(D)] for _ in range(layers)]
                g_plus[l][d][j] += eps
                g_minus[l][d][j] -= eps
                fd = abs(loss(g_plus) - loss(g_minus)) / (2 * eps)
                assert scores[l][d][j] == pytest.approx(fd, rel=1e-6, abs=1e-9), (l, d, j)


def test_activation_statistics_against_numpy():
    rnn, head = _module("RNN", 6, nonlinearity="relu", seed=4)
    with torch.no_grad():
        rnn.bias_hh_l0.sub_(0.3)  # some units are zero on many steps
    x = torch.randn(20, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        H = rnn(x)[0].reshape(-1, 6).numpy()
    np.testing.assert_allclose(CRITERIA["mean_activation"].scores((rnn, head), x, batch_size=8)[0][0],
                               np.abs(H).mean(0), rtol=1e-12)
    apoz = CRITERIA["apoz"].scores((rnn, head), x, batch_size=8)[0][0]
    np.testing.assert_allclose(apoz, 1.0 - (H == 0).mean(0), rtol=1e-12)
    assert apoz.min() < 1.0  # the check saw zeros
    # a stack's last layer against the native module's output, both directions
    lstm, lhead = _module("LSTM", 4, 2, True, seed=6)
    with torch.no_grad():
        O = lstm(x)[0].reshape(-1, 8).numpy()
    got = CRITERIA["mean_activation"].scores((lstm, lhead), x)[1]
    np.testing.assert_allclose(np.concatenate(got), np.abs(O).mean(0), rtol=1e-10)
    with pytest.raises(ValueError, match="method: 'apoz' counts the zeros of ReLU units"):
        CRITERIA["apoz"].scores((lstm, lhead), x)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 9), d=st.integers(1, 4))
def test_the_geometric_median_minimises_the_sum_of_distances(seed, n, d):
    X = np.random.default_rng(seed).standard_normal((n, d))
    cost = lambda y: float(np.linalg.norm(X - y, axis=1).sum())
    y = geometric_median(X)
    best = min((minimize(cost, x0, method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-12, maxiter=20000))
                for x0 in (X.mean(0), np.median(X, 0), X[0])), key=lambda r: r.fun)
    assert cost(y) <= best.fun + 1e-7 * (1 + best.fun)


def test_the_geometric_median_of_collinear_points_is_their_median():
    t = np.array([-3.0, -1.0, 0.5, 2.0, 7.0])
    direction = np.array([1.0, 2.0, -2.0]) / 3.0
    X = t[:, None] * direction + np.array([1.0, 0.0, 5.0])
    np.testing.assert_allclose(geometric_median(X), 0.5 * direction + np.array([1.0, 0.0, 5.0]), atol=1e-9)


def test_geometric_median_scores_are_distances_to_the_median_of_the_units_weights():
    rnn, head = _module("GRU", 5, seed=7)
    scores = CRITERIA["geometric_median"].scores((rnn, head))[0][0]
    w_ih, w_hh = rnn.weight_ih_l0.detach().numpy(), rnn.weight_hh_l0.detach().numpy()
    vec = np.stack([np.concatenate([w_ih[g * 5 + j] for g in range(3)] + [w_hh[g * 5 + j] for g in range(3)])
                    for j in range(5)])  # the same entries in another order: distances do not change
    med = minimize(lambda y: np.linalg.norm(vec - y, axis=1).sum(), vec.mean(0), method="Powell",
                   options=dict(xtol=1e-10, ftol=1e-13, maxiter=200000)).x
    np.testing.assert_allclose(scores, np.linalg.norm(vec - med, axis=1), rtol=1e-4)


def _ls_greedy(H, Z, k, lam):
    """Forward greedy on the ridge least-squares error of reproducing H Z^T from the kept columns of H, solved
    from the data for every candidate (no covariance formulas)."""
    N, m = H.shape
    target = H @ Z.T
    chosen = []
    for _ in range(k):
        best, best_err = None, np.inf
        for j in range(m):
            if j in chosen:
                continue
            J = chosen + [j]
            A = np.vstack([H[:, J], np.sqrt(N * lam) * np.eye(len(J))])
            b = np.vstack([target, np.zeros((len(J), Z.shape[0]))])
            B = np.linalg.lstsq(A, b, rcond=None)[0]
            err = (np.sum((target - H[:, J] @ B) ** 2) + N * lam * np.sum(B ** 2)) / N
            if best is None or err < best_err - 1e-12 * abs(best_err):
                best, best_err = j, err
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", range(12))
def test_thinet_style_output_reconstruction_is_the_theta_to_infinity_greedy(seed):
    rng = np.random.default_rng(seed)
    m, N, k = 9, 60, 5
    H = rng.standard_normal((N, m)) @ rng.standard_normal((m, m)) * (np.arange(1, m + 1) ** -0.5)
    Z = rng.standard_normal((4, m))  # what the kept units must feed downstream: [W_hh; V] in a network
    sigma = H.T @ H / N
    lam = 1e-3 * np.trace(sigma) / m
    assert select_units(sigma, k, lam, method="greedy", theta=1e8, Z=Z) == _ls_greedy(H, Z, k, lam)


def test_eigen_widths_count_the_eigenvalues_holding_the_energy():
    Q = np.linalg.qr(np.random.default_rng(8).standard_normal((5, 5)))[0]
    sigma = Q @ np.diag([5.0, 3.0, 1.0, 0.5, 0.5]) @ Q.T  # cumulative energy 0.5, 0.8, 0.9, 0.95, 1.0
    assert eigen_widths([[sigma]], 0.8) == [2]
    assert eigen_widths([[sigma]], 0.85) == [3]
    assert eigen_widths([[sigma], [np.diag([1.0, 0, 0]), np.diag([1.0, 1.0, 0])]], 0.9) == [3, 2]
    with pytest.raises(ValueError, match="energy: expected a fraction"):
        eigen_widths([[sigma]], 0.0)


def test_prune_by_criterion_keeps_the_top_scores_and_reconstructs():
    rnn, head = _module("GRU", 6, 2, True, seed=9)
    x = torch.randn(30, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    res = prune_by_criterion((rnn, head), x, [4, 3], method="mean_activation")
    scores = CRITERIA["mean_activation"].scores((rnn, head), x)
    for lp in res.layers:
        assert sorted(lp.units) == sorted(np.argsort(-scores[lp.layer][lp.direction])[:lp.k].tolist())
    small, small_head = compress_stack(rnn, head, [[lp.units for lp in res.layers[2 * l:2 * l + 2]] for l in (0, 1)],
                                       [[lp.A for lp in res.layers[2 * l:2 * l + 2]] for l in (0, 1)])
    with torch.no_grad():
        torch.testing.assert_close(res.readout(res.rnn(x)[0]), small_head(small(x)[0]), rtol=0, atol=0)
        full = prune_by_criterion((rnn, head), x, 6, method="geometric_median", rel_lam=1e-12)
        torch.testing.assert_close(full.readout(full.rnn(x)[0]), head(rnn(x)[0]), rtol=0, atol=1e-7)


def test_taylor_through_prune_by_criterion_and_a_users_criterion():
    rnn, head = _module("LSTM", 5, seed=11)
    x = torch.randn(16, 4, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    assert prune_by_criterion((rnn, head), x, 2, method="taylor", targets=y).layers[0].k == 2
    with pytest.raises(ValueError, match="targets: the Taylor criterion needs the labels"):
        prune_by_criterion((rnn, head), x, 2, method="taylor")

    class LastUnits(Criterion):
        name = "last_units"

        def scores(self, pair, data, **context):
            return [[np.arange(layer.hidden_size, dtype=float)] for layer in as_layers(pair[0])]

    register_criterion(LastUnits())
    try:
        res = prune_by_criterion((rnn, head), x, 2, method="last_units", reconstruct=False)
        assert res.layers[0].units == [4, 3]
    finally:
        CRITERIA.pop("last_units")
    with pytest.raises(ValueError, match="method: expected one of"):
        prune_by_criterion((rnn, head), x, 2, method="nope")
    with pytest.raises(ValueError, match=r"k: expected one width in 1..m per layer \(\[5\]\)"):
        prune_by_criterion((rnn, head), x, 6, method="mean_activation")
    with pytest.raises(TypeError, match="criterion: expected an object with a str name"):
        register_criterion(object())
    # statistics agree with the covariance pass of the method itself
    np.testing.assert_allclose(res.covariance[0][0].mean(), time_mean_covariance(rnn, x).mean(), rtol=1e-12)


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, True)])
def test_precomputed_scores_and_statistics_give_the_same_pruned_network(layers, bidirectional):
    from pruning.covariance import layer_covariances

    rnn, head = _module("LSTM", 6, layers, bidirectional, seed=12)
    x = torch.randn(20, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    scores = CRITERIA["mean_activation"].scores((rnn, head), x)
    stats = layer_covariances(as_layers(rnn), x)
    given_stats = stats[0][0] if layers == 1 and not bidirectional else stats  # one CovarianceStats is accepted too
    fresh = prune_by_criterion((rnn, head), x, 3, method="mean_activation")
    reused = prune_by_criterion((rnn, head), None, 3, method="mean_activation", scores=scores, covariance=given_stats)
    assert [lp.units for lp in fresh.layers] == [lp.units for lp in reused.layers]
    for a, b in zip(fresh.layers, reused.layers):
        np.testing.assert_array_equal(a.A, b.A)
    with pytest.raises(ValueError, match="scores: expected"):
        prune_by_criterion((rnn, head), x, 3, method="mean_activation", scores=[[np.ones(5)]] * layers)
    with pytest.raises(ValueError, match="covariance: expected"):
        prune_by_criterion((rnn, head), x, 3, method="mean_activation", covariance=[[stats[0][0]]] * (layers + 1))
