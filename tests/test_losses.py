"""S1-S3: the closed forms against direct regularised least squares on hidden states."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning import information_loss, reconstruction_matrix, residual_covariance, selection_objective
from theory.information import information_losses
from reference_impl import ridge_objective_minimum

seeds = st.integers(0, 2**31 - 1)


def _states(rng, n, m, rank):
    """States with a controlled rank (rank < m mimics dead or redundant units)."""
    H = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, m))
    return np.maximum(H, 0.0) if rng.random() < 0.5 else H


def _setup(seed, m, k, vector_tau, log_lam):
    rng = np.random.default_rng(seed)
    H = _states(rng, 3 * m + 5, m, rank=int(rng.integers(1, m + 1)))
    sigma = H.T @ H / H.shape[0]
    J = list(rng.choice(m, size=k, replace=False))
    scale = np.trace(sigma) / m + 1e-300
    tau = 10.0 ** log_lam * scale * (rng.uniform(0.5, 2.0, size=k) if vector_tau else np.ones(k))
    lam = tau if vector_tau else float(tau[0])
    return rng, H, sigma, J, tau, lam


@given(seed=seeds, m=st.integers(1, 24), data=st.data(), vector_tau=st.booleans(), log_lam=st.floats(-6, 2))
def test_s1_closed_form_equals_direct_minimisation(seed, m, data, vector_tau, log_lam):
    k = data.draw(st.integers(1, m))
    _, H, sigma, J, tau, lam = _setup(seed, m, k, vector_tau, log_lam)
    direct, A_direct = ridge_objective_minimum(H, H, J, tau)
    got = information_loss(sigma, J, lam)
    assert got == pytest.approx(direct, rel=1e-7, abs=1e-9 * np.trace(sigma))
    A = reconstruction_matrix(sigma, J, lam)
    assert A.shape == (m, k)
    np.testing.assert_allclose(A, A_direct, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(A_direct).max()))


@given(seed=seeds, m=st.integers(1, 24), r=st.integers(1, 6), data=st.data(), vector_tau=st.booleans(),
       log_lam=st.floats(-6, 2), gates=st.sampled_from([None, 3, 4]))
def test_s2_closed_form_equals_direct_minimisation(seed, m, r, data, vector_tau, log_lam, gates):
    """Also for a Z of 3m and 4m rows (a GRU's and an LSTM's recurrent weight), whose loss is computed through
    Z^T Z rather than Z R."""
    k = data.draw(st.integers(1, m))
    rng, H, sigma, J, tau, lam = _setup(seed, m, k, vector_tau, log_lam)
    Z = rng.standard_normal((r if gates is None else gates * m, m))
    direct, B = ridge_objective_minimum(H, H @ Z.T, J, tau)
    got = information_loss(sigma, J, lam, Z=Z)
    assert got == pytest.approx(direct, rel=1e-7, abs=1e-9 * np.trace(Z @ sigma @ Z.T))
    # S2: one matrix serves both losses, B = Z A_J
    A = reconstruction_matrix(sigma, J, lam)
    np.testing.assert_allclose(Z @ A, B, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(B).max()))


@given(seed=seeds, m=st.integers(1, 24), data=st.data(), vector_tau=st.booleans(), log_lam=st.floats(-6, 2))
def test_losses_from_one_residual_equal_each_direct_minimisation(seed, m, data, vector_tau, log_lam):
    """information_losses (what spectral_prune reports) forms R(J) once for S1 and every S2; each value is the
    direct regularised least-squares minimum, including a square downstream weight (the recurrent one)."""
    k = data.draw(st.integers(1, m))
    rng, H, sigma, J, tau, lam = _setup(seed, m, k, vector_tau, log_lam)
    weights = {"recurrent": rng.standard_normal((m, m)), "readout": rng.standard_normal((3, m))}
    got = information_losses(sigma, J, lam, weights)
    assert set(got) == {"input", "recurrent", "readout"}
    direct, _ = ridge_objective_minimum(H, H, J, tau)
    assert got["input"] == pytest.approx(direct, rel=1e-7, abs=1e-9 * np.trace(sigma))
    for name, Z in weights.items():
        direct, _ = ridge_objective_minimum(H, H @ Z.T, J, tau)
        assert got[name] == pytest.approx(direct, rel=1e-7, abs=1e-9 * np.trace(Z @ sigma @ Z.T))


@given(seed=seeds, m=st.integers(2, 16), data=st.data(), log_lam=st.floats(-4, 1))
def test_reconstruction_matrix_is_the_minimiser(seed, m, data, log_lam):
    k = data.draw(st.integers(1, m))
    rng, H, sigma, J, tau, lam = _setup(seed, m, k, False, log_lam)
    A = reconstruction_matrix(sigma, J, lam)

    def objective(Amat):  # computed on the states, not from the closed form
        return np.mean(np.sum((H - H[:, J] @ Amat.T) ** 2, axis=1)) + np.sum(tau * np.sum(Amat**2, axis=0))

    base = objective(A)
    for _ in range(5):
        D = rng.standard_normal(A.shape)
        for eps in (1e-1, 1e-3):
            # the objective is a strictly convex quadratic in A: any perturbation increases it
            assert objective(A + eps * D) >= base - 1e-12 * max(1.0, base)
    assert base == pytest.approx(information_loss(sigma, J, lam), rel=1e-8, abs=1e-10)


def test_s3_objective_is_input_plus_theta_output():
    rng = np.random.default_rng(3)
    H = rng.standard_normal((50, 8))
    sigma = H.T @ H / 50
    Z = rng.standard_normal((4, 8))
    J = [1, 4, 6]
    expect = information_loss(sigma, J, 0.01) + 2.5 * information_loss(sigma, J, 0.01, Z=Z)
    assert selection_objective(sigma, J, 0.01, theta=2.5, Z=Z) == pytest.approx(expect, rel=1e-12)


def test_empty_set_loses_everything_and_full_set_nothing():
    rng = np.random.default_rng(0)
    H = rng.standard_normal((100, 6))
    sigma = H.T @ H / 100
    assert information_loss(sigma, [], 1.0) == pytest.approx(np.trace(sigma))
    assert information_loss(sigma, range(6), 1e-12) == pytest.approx(0.0, abs=1e-9)
    R = residual_covariance(sigma, [0, 2], 0.1)
    assert np.linalg.eigvalsh(R).min() > -1e-12  # PSD


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(sigma=np.ones((3, 4)), J=[0], lam=1.0), ValueError, "sigma"),
        (dict(sigma=np.eye(3), J=[3], lam=1.0), ValueError, "J"),
        (dict(sigma=np.eye(3), J=[0, 0], lam=1.0), ValueError, "distinct"),
        (dict(sigma=np.eye(3), J=[0], lam=0.0), ValueError, "lam"),
        (dict(sigma=np.eye(3), J=[0], lam=-1.0), ValueError, "lam"),
        (dict(sigma=np.eye(3), J=[0], lam=float("nan")), ValueError, "lam"),
        (dict(sigma=np.eye(3), J=[0, 1], lam=[1.0]), ValueError, "lam"),
        (dict(sigma=np.full((2, 2), np.nan), J=[0], lam=1.0), ValueError, "sigma"),
        (dict(sigma=np.array([[1.0, 2.0], [0.0, 1.0]]), J=[0], lam=1.0), ValueError, "symmetric"),
        (dict(sigma=np.eye(3), J=[0], lam=1.0, Z=np.ones((2, 4))), ValueError, "Z"),
    ],
)
def test_bad_input_names_the_argument(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        information_loss(**kwargs)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 5), T=st.integers(1, 6))
def test_lengths_average_over_real_steps_only(seed, n, T):
    from theory.losses import cross_entropy_loss, margin_ramp_loss, squared_loss, zero_one_loss

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=n)
    f = rng.standard_normal((n, T, 3))
    y = rng.integers(0, 3, size=(n, T))
    f[np.arange(T)[None] >= lengths[:, None]] = np.nan  # padding no loss may read
    y[np.arange(T)[None] >= lengths[:, None]] = -100    # an ignore index
    targets = rng.standard_normal((n, T, 3))
    for loss, args in ((margin_ramp_loss, (0.5,)), (zero_one_loss, ()), (cross_entropy_loss, ())):
        got = loss(f, y, *args, lengths=lengths)
        ref = [loss(f[i:i + 1, :L], y[i:i + 1, :L], *args)[0] for i, L in enumerate(lengths)]
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    got = squared_loss(f, targets, lengths=lengths)
    ref = [squared_loss(f[i:i + 1, :L], targets[i:i + 1, :L])[0] for i, L in enumerate(lengths)]
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    with pytest.raises(ValueError, match="lengths: given for outputs of shape"):
        zero_one_loss(f[:, 0], y[:, 0], lengths=lengths)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, m=st.integers(1, 200), where=st.sampled_from(["none", "first", "last", "everywhere"]))
def test_covariances_are_symmetrised_exactly_without_touching_the_input(seed, m, where):
    """The validated covariance is (S + S^T) / 2 bit for bit, the input array is never written, an exactly symmetric
    float64 input is returned as it is (read, not copied), and round-off asymmetry anywhere (in the first 64 x 64
    tile, only in the last, or everywhere) is removed."""
    from theory._validation import as_covariance_matrix

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2 * m + 3, m))
    S = X.T @ X
    S = 0.5 * (S + S.T)
    scale = float(np.abs(S).max())
    if where == "everywhere":
        S = S + 1e-12 * scale * rng.standard_normal((m, m))
    elif where in ("first", "last") and m > 1:
        i = (1, 0) if where == "first" else (m - 1, m - 2)  # in the first tile visited, or only in the last
        S[i] += 1e-12 * scale
    before = S.copy()
    out = as_covariance_matrix(S)
    np.testing.assert_array_equal(S, before)
    np.testing.assert_array_equal(out, (S + S.T) * 0.5)
    np.testing.assert_array_equal(out, out.T)
    assert (out is S) == bool(np.array_equal(S, S.T))


@settings(max_examples=40, deadline=None)
@given(seed=seeds, m=st.integers(1, 40), data=st.data(), vector_tau=st.booleans(), log_lam=st.floats(-6, 2))
def test_residual_is_exactly_symmetric_psd_and_equals_the_two_solve_form(seed, m, data, vector_tau, log_lam):
    """R(J) = Sigma - W^T W with W = L^{-1} Sigma_{J,F}: exactly symmetric (one symmetric product), PSD to round-off,
    and equal to Sigma - Sigma_{F,J} (Sigma_JJ + diag tau)^{-1} Sigma_{J,F} computed by a general solve."""
    k = data.draw(st.integers(1, m))
    rng, H, sigma, J, tau, lam = _setup(seed, m, k, vector_tau, log_lam)
    sigma = 0.5 * (sigma + sigma.T)
    R = residual_covariance(sigma, J, lam)
    assert np.array_equal(R, R.T)
    assert np.array_equal(residual_covariance(sigma, [], lam if not vector_tau else 1.0), sigma)
    scale = float(np.abs(sigma).max()) + 1e-300
    ref = sigma - sigma[:, J] @ np.linalg.solve(sigma[np.ix_(J, J)] + np.diag(tau), sigma[J, :])
    cond = np.linalg.cond(sigma[np.ix_(J, J)] + np.diag(tau))
    np.testing.assert_allclose(R, ref, rtol=0, atol=1e-13 * scale * max(1.0, cond) * m)
    assert np.linalg.eigvalsh(R).min() >= -1e-12 * scale * max(1.0, cond) * m


@settings(max_examples=40, deadline=None)
@given(seed=seeds, m=st.integers(1, 24), rows=st.sampled_from([1, 3, "m", "4m"]), data=st.data(),
       formed=st.booleans())
def test_a_shared_gram_gives_the_losses_of_the_plain_weight(seed, m, rows, data, formed):
    """A DownstreamWeight, whose Z^T Z a greedy selection may have formed, gives each S2 loss of the plain weight
    (float64 round-off), and the losses read the Gram already formed instead of forming another."""
    from theory.information import DownstreamWeight

    k = data.draw(st.integers(1, m))
    rng, H, sigma, J, tau, lam = _setup(seed, m, k, False, -2.0)
    r = {"m": m, "4m": 4 * m}.get(rows, rows)
    Z = rng.standard_normal((r, m))
    shared = DownstreamWeight(Z, m)
    gram = shared.gram() if formed else None
    got = information_losses(sigma, J, lam, {"z": shared})
    plain = information_losses(sigma, J, lam, {"z": Z})
    assert got["z"] == pytest.approx(plain["z"], rel=1e-10, abs=1e-12 * np.trace(Z @ sigma @ Z.T))
    assert got["input"] == plain["input"]
    if formed:
        assert shared.gram() is gram
    np.testing.assert_array_equal(shared.z, Z)
    with pytest.raises(ValueError, match="Z: expected a downstream weight of shape"):
        information_losses(sigma, J, lam, {"z": DownstreamWeight(np.ones((2, m + 1)), m + 1)})
