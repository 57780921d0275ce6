"""S4 (greedy = naive greedy, monotone objective), exhaustive optimality, S5, S8 sampling, baselines."""


import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pruning import information_loss, leverage_sample, select_units, selection_objective
from reference_impl import random_psd
from theory import leverage_scores

seeds = st.integers(0, 2**31 - 1)


def _same_objectives(sigma, first, second, lam, theta, Z):
    """Two greedy orders may differ only where gains tie to working precision: S4's gains are resolved to about
    m eps cond(Sigma + lambda I) relative to the objective (docs/theory.md, S4), so every prefix must reach the same
    objective within that precision."""
    from theory import eigenvalues

    cond = (float(eigenvalues(sigma)[0]) + lam) / lam
    f = lambda S: selection_objective(sigma, S, lam, theta=theta, Z=Z)
    tol = max(1e-9, 10 * sigma.shape[0] * np.finfo(float).eps * cond) * max(f([]), 1e-300)
    for i in range(1, len(first) + 1):
        assert abs(f(first[:i]) - f(second[:i])) <= tol


def _problem(seed, m, with_z, low_rank):
    rng = np.random.default_rng(seed)
    sigma = random_psd(rng, m, rank=max(1, m // 2) if low_rank else None)
    Z = rng.standard_normal((int(rng.integers(1, m + 1)), m)) if with_z else None
    return rng, sigma, Z


@given(seed=seeds, m=st.integers(1, 40), data=st.data(), with_z=st.booleans(), low_rank=st.booleans(),
       log_rel_lam=st.floats(-6, 1), theta=st.sampled_from([0.0, 0.1, 1.0, 10.0]))
def test_s4_greedy_selects_exactly_what_naive_greedy_selects(seed, m, data, with_z, low_rank, log_rel_lam, theta):
    k = data.draw(st.integers(1, min(m, 20)))
    _, sigma, Z = _problem(seed, m, with_z, low_rank)
    lam = 10.0**log_rel_lam * np.trace(sigma) / m
    theta = theta if with_z else 0.0
    fast = select_units(sigma, k, lam, theta=theta, Z=Z, method="greedy")
    naive = select_units(sigma, k, lam, theta=theta, Z=Z, method="greedy_naive")
    if fast != naive:  # only ties to working precision may be broken differently
        _same_objectives(sigma, fast, naive, lam, theta, Z)
    assert len(set(fast)) == k


@given(seed=seeds, m=st.integers(1, 40), data=st.data(), with_z=st.booleans(), low_rank=st.booleans(),
       log_rel_lam=st.floats(-6, 1), theta=st.sampled_from([0.0, 0.5, 3.0]))
def test_greedy_order_extended_in_pieces_is_the_greedy_selection_of_every_k(seed, m, data, with_z, low_rank,
                                                                           log_rel_lam, theta):
    """S4 is nested: the order that the error-target search extends on demand gives, for every k, exactly the units
    select_units picks for k in one run, wherever the pieces end (including growing its factor past its capacity)."""
    from pruning.selection import GreedyOrder

    _, sigma, Z = _problem(seed, m, with_z, low_rank)
    lam = 10.0 ** log_rel_lam * np.trace(sigma) / m
    cuts = sorted(data.draw(st.lists(st.integers(1, m), min_size=1, max_size=5)))
    order = GreedyOrder(sigma, lam, theta, Z, capacity=data.draw(st.integers(0, m)))
    for k in cuts:
        assert order.units(k) == select_units(sigma, k, lam, theta=theta if Z is not None else 0.0, Z=Z)
    assert order.units(1) == order.selected[:1]  # asking for fewer runs nothing


@given(seed=seeds, m=st.integers(2, 30), with_z=st.booleans(), log_rel_lam=st.floats(-6, 1))
def test_s4_objective_is_non_increasing_along_the_selection(seed, m, with_z, log_rel_lam):
    _, sigma, Z = _problem(seed, m, with_z, False)
    lam = 10.0**log_rel_lam * np.trace(sigma) / m
    theta = 1.0 if with_z else 0.0
    order = select_units(sigma, m, lam, theta=theta, Z=Z)
    values = [selection_objective(sigma, order[:i], lam, theta=theta, Z=Z) for i in range(m + 1)]
    assert all(b <= a + 1e-12 * max(1.0, a) for a, b in zip(values, values[1:]))


@given(seed=seeds, m=st.integers(1, 9), data=st.data(), with_z=st.booleans(), log_rel_lam=st.floats(-4, 1))
def test_exhaustive_is_never_worse_than_greedy(seed, m, data, with_z, log_rel_lam):
    k = data.draw(st.integers(1, m))
    _, sigma, Z = _problem(seed, m, with_z, False)
    lam = 10.0**log_rel_lam * np.trace(sigma) / m
    theta = 1.0 if with_z else 0.0
    best = select_units(sigma, k, lam, theta=theta, Z=Z, method="exhaustive")
    greedy = select_units(sigma, k, lam, theta=theta, Z=Z, method="greedy")
    f = lambda J: selection_objective(sigma, J, lam, theta=theta, Z=Z)
    assert f(best) <= f(greedy) * (1 + 1e-10) + 1e-14
    assert best == sorted(best)


def test_exhaustive_refuses_large_problems():
    with pytest.raises(ValueError, match="exhaustive.*greedy"):
        select_units(np.eye(60), 30, 1.0, method="exhaustive")


@given(seed=seeds, m=st.integers(1, 30), data=st.data(), log_rel_lam=st.floats(-10, 2), decay=st.floats(0.0, 3.0))
def test_s5_loss_is_at_least_the_spectral_tail(seed, m, data, log_rel_lam, decay):
    # Regularisation only adds to the minimum, so S5's lambda -> 0 bound holds for every lambda > 0.
    k = data.draw(st.integers(1, m))
    rng = np.random.default_rng(seed)
    sigma = random_psd(rng, m, decay=decay)
    lam = 10.0**log_rel_lam * np.trace(sigma) / m
    mu = np.sort(np.linalg.eigvalsh(sigma))[::-1]
    tail = float(np.sum(mu[k:]))
    for J in (select_units(sigma, k, lam), list(rng.choice(m, size=k, replace=False))):
        assert information_loss(sigma, J, lam) >= tail - 1e-10 * np.trace(sigma)


def test_s5_is_tight_for_a_diagonal_covariance():
    mu = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    J = select_units(np.diag(mu), 2, 1e-12)
    assert sorted(J) == [0, 1]
    assert information_loss(np.diag(mu), J, 1e-12) == pytest.approx(mu[2:].sum(), rel=1e-9)


class TestLeverage:
    def test_scores_are_ridge_leverages(self):
        rng = np.random.default_rng(0)
        sigma = random_psd(rng, 12, decay=1.0)
        lam = 0.05
        S = sigma @ np.linalg.solve(sigma + lam * np.eye(12), np.eye(12))  # test-only explicit reference
        q = leverage_scores(sigma, lam)
        np.testing.assert_allclose(q, np.diag(S) / np.trace(S), rtol=1e-10)
        assert q.sum() == pytest.approx(1.0)

    def test_iid_sampling_and_s8_regularisation(self):
        rng = np.random.default_rng(1)
        sigma = random_psd(rng, 20)
        lam = 0.1
        s = leverage_sample(sigma, 15, lam, seed=7)
        assert s.draws == 15 and s.counts.sum() == 15
        assert len(s.units) == len(set(s.units)) <= 15
        np.testing.assert_allclose(s.tau, 15 * lam * s.scores[s.units] / s.counts)
        again = leverage_sample(sigma, 15, lam, seed=7)
        assert again.units == s.units  # seeded

    def test_draw_frequencies_follow_the_scores(self):
        # 20000 draws: each frequency within 5 standard errors of q_j (fails with prob < 1e-5 per unit)
        rng = np.random.default_rng(2)
        sigma = random_psd(rng, 6, decay=2.0)
        s = leverage_sample(sigma, 20000, 0.01, seed=3)
        freq = np.zeros(6)
        freq[s.units] = s.counts / 20000
        se = np.sqrt(s.scores * (1 - s.scores) / 20000)
        assert np.all(np.abs(freq - s.scores) <= 5 * se + 1e-12)

    def test_distinct_variant_returns_k_units(self):
        sigma = random_psd(np.random.default_rng(4), 30)
        J = select_units(sigma, 30, 0.1, method="leverage", seed=0)
        assert sorted(J) == list(range(30))
        J = select_units(sigma, 10, 0.1, method="leverage", seed=0)
        assert len(set(J)) == 10

    def test_distinct_variant_fills_with_dead_units_last(self):
        sigma = np.zeros((8, 8))
        sigma[:3, :3] = random_psd(np.random.default_rng(5), 3)  # units 3..7 never fire
        s = leverage_sample(sigma, 6, 0.1, seed=1, distinct=True)
        assert sorted(s.units[:3]) == [0, 1, 2] and set(s.units[3:]) <= {3, 4, 5, 6, 7}
        assert len(set(s.units)) == 6 and np.all(s.tau > 0)


class TestBaselines:
    def test_energy_keeps_largest_diagonal(self):
        sigma = np.diag([1.0, 9.0, 3.0, 7.0])
        assert select_units(sigma, 2, 1.0, method="energy") == [1, 3]

    def test_magnitude_keeps_largest_outgoing_norms(self):
        out = np.array([[0.0, 3.0, 1.0, 0.0], [0.0, 4.0, 1.0, 2.5]])  # column norms 0, 5, 1.41, 2.5
        assert select_units(np.eye(4), 2, 1.0, method="magnitude", outgoing=out) == [1, 3]

    def test_random_is_seeded_and_distinct(self):
        a = select_units(np.eye(50), 20, 1.0, method="random", seed=5)
        assert a == select_units(np.eye(50), 20, 1.0, method="random", seed=5)
        assert len(set(a)) == 20


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(k=0), ValueError, "k: expected 1 <= k"),
        (dict(k=6), ValueError, "k: expected 1 <= k"),
        (dict(k=2.5), TypeError, "k: expected an integer, 1 <= k"),
        (dict(k=4.0), TypeError, "k: expected an integer, 1 <= k"),
        (dict(lam=0.0), ValueError, "lam"),
        (dict(lam=float("inf")), ValueError, "lam"),
        (dict(method="best"), ValueError, "method"),
        (dict(theta=-1.0), ValueError, "theta"),
        (dict(theta=1.0), ValueError, "Z"),
        (dict(method="magnitude"), ValueError, "outgoing"),
    ],
)
def test_bad_input_names_the_argument(kwargs, exc, words):
    args = dict(sigma=np.eye(5), k=2, lam=0.1)
    args.update(kwargs)
    with pytest.raises(exc, match=words):
        select_units(**args)


@given(seed=seeds, m=st.integers(1, 48), data=st.data(), with_z=st.booleans(), structure=st.sampled_from(
    ["full", "low rank", "dead units", "duplicates"]), log_rel_lam=st.floats(-8, 1),
       theta=st.sampled_from([0.0, 0.1, 1.0, 10.0]))
def test_factored_greedy_selects_what_the_dense_rank_one_greedy_selects(seed, m, data, with_z, structure,
                                                                         log_rel_lam, theta):
    """The factored residual (issue: performance) against the m x m rank-one implementation it replaced, with dead
    units (zero rows and columns: exact ties, broken by the lowest index) and duplicated units (ties up to
    round-off)."""
    from reference_impl import greedy_dense_rank_one

    k = data.draw(st.integers(1, m))
    rng, sigma, Z = _problem(seed, m, with_z, structure == "low rank")
    if structure == "dead units" and m > 1:
        dead = rng.choice(m, size=m // 2, replace=False)
        sigma[dead, :] = 0.0
        sigma[:, dead] = 0.0
    if structure == "duplicates" and m > 1:
        X = rng.standard_normal((2 * m, m))
        X[:, 1::2] = X[:, 0:m - 1:2][:, : X[:, 1::2].shape[1]]  # every odd unit copies an even one
        sigma = X.T @ X / X.shape[0]
    lam = 10.0**log_rel_lam * max(np.trace(sigma), 1e-300) / m
    theta = theta if with_z else 0.0
    fast = select_units(sigma, k, lam, theta=theta, Z=Z)
    dense = greedy_dense_rank_one(sigma, k, lam, theta, Z)
    if fast != dense:  # only ties to working precision may be broken differently
        _same_objectives(sigma, fast, dense, lam, theta, Z)
    if fast != dense and structure == "full" and 10.0**log_rel_lam >= 1e-4:
        # a well-conditioned problem has no such ties: the orders must be identical
        assert fast == dense
    if structure == "dead units" and m > 1:
        live = int(np.count_nonzero(np.diag(sigma)))
        assert fast[live:] == sorted(fast[live:])  # after the live units, the dead ones in index order


def test_factored_greedy_memory_is_o_m2_plus_mk():
    import tracemalloc

    m, k = 400, 100
    sigma = random_psd(np.random.default_rng(0), m)
    Z = np.random.default_rng(1).standard_normal((m, m))
    tracemalloc.start()
    select_units(sigma, k, 1e-3, theta=1.0, Z=Z)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # beyond its inputs: Z^T Z and Sigma M (m x m), the factors F and V (k x m each) and O(m) vectors; the dense
    # version held 4 m x m arrays
    assert peak < 8 * (2 * m * k + 2 * m * m + 50 * m)


@given(seed=seeds, m=st.integers(1, 40), data=st.data(), rows=st.sampled_from([0.5, 1.0, 4.0]),
       structure=st.sampled_from(["full", "low rank", "duplicates"]), log_rel_lam=st.floats(-6, 1),
       theta=st.sampled_from([0.1, 1.0, 10.0]))
def test_greedy_with_sigma_m_formed_selects_what_the_dense_rank_one_greedy_selects(seed, m, data, rows, structure,
                                                                                   log_rel_lam, theta):
    """Once ``Sigma M = Sigma (I + theta Z^T Z)`` is formed (at any step, forced here), ``M r = (Sigma M)_j -
    V^T F_j`` replaces the two products with Z: the order is the dense rank-one greedy's up to ties at working
    precision, for Z of m/2, m and 4m rows (an Elman RNN's and an LSTM's recurrent weight), and the same whether
    Sigma M is formed or not where no tie is near."""
    from pruning.selection import GreedyOrder
    from reference_impl import greedy_dense_rank_one

    rng, sigma, _ = _problem(seed, m, False, structure == "low rank")
    if structure == "duplicates" and m > 1:
        X = rng.standard_normal((2 * m, m))
        X[:, 1::2] = X[:, 0:m - 1:2][:, : X[:, 1::2].shape[1]]
        sigma = X.T @ X / X.shape[0]
    Z = rng.standard_normal((max(1, int(rows * m)), m))
    k = data.draw(st.integers(1, m))
    after = data.draw(st.integers(0, k))
    lam = 10.0 ** log_rel_lam * np.trace(sigma) / m
    order = GreedyOrder(sigma, lam, theta, Z, capacity=k, precompute_after=after)
    with_g = order.units(k)
    assert (order.sigma_m is not None) == (after < k)
    dense = greedy_dense_rank_one(sigma, k, lam, theta, Z)
    without_g = GreedyOrder(sigma, lam, theta, Z, capacity=k, precompute_after=k + 1).units(k)
    assert without_g == select_units(sigma, k, lam, theta=theta, Z=Z) or Z.shape[0] >= m
    for other in (dense, without_g):
        if with_g != other:  # only ties to working precision may be broken differently
            _same_objectives(sigma, with_g, other, lam, theta, Z)
    if structure == "full" and 10.0 ** log_rel_lam >= 1e-4:
        assert with_g == dense  # a well-conditioned problem has no such ties


def test_sigma_m_is_formed_only_for_a_tall_z_and_a_long_order():
    """The default: Sigma M is formed at step m // 8 when Z has at least m rows, or at the first step when the order
    is known to be m // 16 steps long (select_units passes k as its capacity); never for a Z of fewer rows (its two
    products cost less than one with an m x m matrix) or for an order shorter than m // 8 (an error-target search at
    small k), where forming it would cost more than it saves."""
    from pruning.selection import GreedyOrder

    rng = np.random.default_rng(4)
    m = 64
    sigma = random_psd(rng, m)
    tall, wide = rng.standard_normal((4 * m, m)), rng.standard_normal((m // 2, m))
    short = GreedyOrder(sigma, 0.1, 1.0, tall)
    short.units(m // 8)
    assert short.sigma_m is None
    short.units(m // 8 + 1)
    np.testing.assert_allclose(short.sigma_m, sigma @ (np.eye(m) + tall.T @ tall), rtol=1e-12, atol=1e-9)
    narrow = GreedyOrder(sigma, 0.1, 1.0, wide)
    narrow.units(m)
    assert narrow.sigma_m is None
    known = GreedyOrder(sigma, 0.1, 1.0, tall, capacity=m // 16)
    known.units(1)
    assert known.sigma_m is not None
