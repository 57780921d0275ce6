"""spectral_prune: the one-call API, its argument handling and its agreement with the parts."""

import numpy as np
import pytest
import torch

from pruning import (
    DEFAULT_REL_LAM,
    compress,
    information_loss,
    reconstruction_matrix,
    select_units,
    spectral_prune,
    time_mean_covariance,
)
from reference_impl import make_rnn
from theory import degrees_of_freedom


class Model(torch.nn.Module):
    def __init__(self, rnn, readout):
        super().__init__()
        self.rnn, self.readout = rnn, readout

    def forward(self, x):
        return self.readout(self.rnn(x)[0][:, -1])


@pytest.fixture
def setup():
    rnn, head = make_rnn(16, d_x=2, d_y=3, seed=5)
    x = torch.randn(40, 10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return rnn, head, x


def test_agrees_with_the_parts(setup):
    rnn, head, x = setup
    res = spectral_prune((rnn, head), x, 6, rel_lam=1e-3, theta=0.5, Z="readout")
    sigma = time_mean_covariance(rnn, x).mean()
    lam = 1e-3 * np.trace(sigma) / 16
    assert res.lam == pytest.approx(lam, rel=1e-12)
    V = head.weight.detach().numpy()
    J = select_units(sigma, 6, lam, theta=0.5, Z=V)
    assert res.units == J and res.k == 6 and res.m == 16
    np.testing.assert_allclose(res.A, reconstruction_matrix(sigma, J, lam), rtol=1e-12)
    assert res.losses["input"] == pytest.approx(information_loss(sigma, J, lam), rel=1e-12)
    assert res.losses["readout"] == pytest.approx(information_loss(sigma, J, lam, V), rel=1e-12)
    assert res.losses["objective"] == pytest.approx(res.losses["input"] + 0.5 * res.losses["readout"], rel=1e-12)
    assert res.dof == pytest.approx(degrees_of_freedom(sigma, lam), rel=1e-12)
    small, small_head = compress(rnn, head, J, res.A)
    assert torch.equal(small.weight_hh_l0, res.rnn.weight_hh_l0) and torch.equal(small_head.weight, res.readout.weight)
    assert set(res.timings) == {"covariance", "selection", "reconstruction", "losses", "compress"}


def test_model_input_gives_a_pruned_model_copy(setup):
    rnn, head, x = setup
    model = Model(rnn, head)
    res = spectral_prune(model, x, ratio=0.5)
    assert res.k == 8 and res.model is not model and model.rnn.hidden_size == 16
    torch.testing.assert_close(res.model(x), res.readout(res.rnn(x)[0][:, -1]))


def test_covariance_reuse_gives_the_same_result(setup):
    rnn, head, x = setup
    first = spectral_prune((rnn, head), x, 5)
    again = spectral_prune((rnn, head), None, 5, covariance=first.covariance)
    from_matrix = spectral_prune((rnn, head), None, 5, covariance=first.covariance.mean())
    assert first.units == again.units == from_matrix.units
    assert first.lam == pytest.approx(DEFAULT_REL_LAM * np.trace(first.covariance.mean()) / 16)


def test_target_dof_sets_lambda_and_width(setup, monkeypatch):
    """lambda solves N(lambda) = 4.5; the reported N(lambda) is the one of the matrix, from the eigenvalues that
    solving for lambda computed (one eigendecomposition per layer-direction, not two)."""
    import theory.spectrum

    rnn, head, x = setup
    calls = []
    original = theory.spectrum.scipy.linalg.eigvalsh
    monkeypatch.setattr(theory.spectrum.scipy.linalg, "eigvalsh", lambda a, *args, **kw: calls.append(1) or
                        original(a, *args, **kw))
    res = spectral_prune((rnn, head), x, target_dof=4.5)
    assert res.k == 5 and len(calls) == 1
    assert res.dof == pytest.approx(4.5, rel=1e-6)
    monkeypatch.undo()
    assert res.dof == pytest.approx(degrees_of_freedom(res.covariance.mean(), res.lam), rel=1e-12)


@pytest.mark.parametrize("method", ["greedy", "leverage", "random", "magnitude", "energy"])
@pytest.mark.parametrize("reconstruct", [True, False])
def test_every_method_builds_a_width_k_network(setup, method, reconstruct):
    rnn, head, x = setup
    res = spectral_prune((rnn, head), x, 7, method=method, reconstruct=reconstruct, seed=0)
    assert res.rnn.hidden_size == 7 and len(set(res.units)) == 7
    assert (res.A is None) == (not reconstruct)
    assert np.all(res.tau > 0)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(k=0), ValueError, "k: expected 1 <= k"),
        (dict(k=17), ValueError, "k: expected 1 <= k"),
        (dict(k=None), ValueError, "exactly one"),
        (dict(k=3, ratio=0.5), ValueError, "exactly one"),
        (dict(k=None, ratio=1.5), ValueError, "ratio"),
        (dict(lam=0.0), ValueError, "lam"),
        (dict(lam=-1.0), ValueError, "lam"),
        (dict(lam=float("nan")), ValueError, "lam"),
        (dict(lam=1.0, rel_lam=1.0), ValueError, "at most one"),
        (dict(Z="hidden"), ValueError, "Z"),
        (dict(method="optimal"), ValueError, "method"),
        (dict(k=None, target_dof=3.0, lam=1.0), ValueError, "target_dof"),
        (dict(k=None, target_dof=40.0), ValueError, "target"),
    ],
)
def test_bad_arguments(setup, kwargs, exc, words):
    rnn, head, x = setup
    args = dict(k=4)
    args.update(kwargs)
    with pytest.raises(exc, match=words):
        spectral_prune((rnn, head), x, **args)


def test_bad_models_and_data(setup):
    rnn, head, x = setup
    with pytest.raises(TypeError, match="pass the RNN together"):
        spectral_prune(rnn, x, 2)
    with pytest.raises(TypeError, match="model_or_rnn"):
        spectral_prune(torch.nn.Linear(2, 2), x, 2)
    with pytest.raises(ValueError, match="in_features"):
        spectral_prune((rnn, torch.nn.Linear(3, 2)), x, 2)
    with pytest.raises(ValueError, match="k: an LSTM with proj_size=2 keeps more than 2 of its 4 cells"):
        spectral_prune((torch.nn.LSTM(2, 4, proj_size=2), torch.nn.Linear(2, 2)), x, 2)
    with pytest.raises(ValueError, match="data"):
        spectral_prune((rnn, head), None, 2)
    with pytest.raises(ValueError, match="no data"):
        spectral_prune((rnn, head), [], 2)
    dead, dead_head = make_rnn(4, d_x=2, seed=0, bias=False)
    with pytest.raises(ValueError, match="every hidden state is zero"):
        spectral_prune((dead, dead_head), torch.zeros(3, 5, 2, dtype=torch.float64), 2)


def test_widths_given_as_0d_arrays_or_tensors_are_their_integers():
    """``k=torch.tensor(3)`` was 'iteration over a 0-d tensor' from deep inside; 0-d integer arrays and tensors
    are now the integer they hold (alone or per layer), and anything else is refused naming k."""
    torch.manual_seed(16)
    pair = (torch.nn.GRU(3, 8, batch_first=True), torch.nn.Linear(8, 2))
    x = torch.randn(10, 4, 3)
    units = spectral_prune(pair, x, k=3).units
    for k in (np.array(3), torch.tensor(3), np.int16(3), torch.tensor([3]), [np.array(3)]):
        assert spectral_prune(pair, x, k=k).units == units
    for bad, error in ((torch.tensor(3.0), TypeError), (torch.tensor(True), TypeError), (object(), TypeError),
                       (torch.tensor(9), ValueError)):
        with pytest.raises(error, match=r"^k: expected"):
            spectral_prune(pair, x, k=bad)


@pytest.mark.parametrize("kind, layers, bidirectional", [("rnn", 1, False), ("lstm", 1, False), ("gru", 2, True)])
def test_the_losses_reuse_the_gram_the_greedy_formed(monkeypatch, kind, layers, bidirectional):
    """With the default output term (theta = 1, Z = W_hh) a greedy order of k >= m/16 forms Z^T Z; the reported S2
    loss through W_hh reads that Gram (one formation per layer-direction, none more for the losses) and equals
    Tr W_hh R(J) W_hh^T computed from the statistics by a general solve."""
    from theory.information import DownstreamWeight

    formed = []
    original = DownstreamWeight.gram

    def counting(self):
        if not self.has_gram:
            formed.append(self.z.tobytes())
        return original(self)

    monkeypatch.setattr(DownstreamWeight, "gram", counting)
    torch.manual_seed(0)
    m = 12
    rnn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        3, m, num_layers=layers, bidirectional=bidirectional, batch_first=True).double()
    D = 2 if bidirectional else 1
    head = torch.nn.Linear(D * m, 2).double()
    x = torch.randn(20, 6, 3, dtype=torch.float64)
    res = spectral_prune((rnn, head), x, 5, precision="float64", covariance_mode="original")
    assert len(set(formed)) == len(formed)  # no weight's Gram formed twice
    stats = res.covariance if isinstance(res.covariance, list) else [[res.covariance]]
    for lp in res.layers:
        sigma = stats[lp.layer][lp.direction].mean()
        suffix = "_reverse" if lp.direction else ""
        W = getattr(rnn, f"weight_hh_l{lp.layer}{suffix}").detach().numpy()
        assert W.tobytes() in formed  # by the greedy, and read again by the loss
        J = lp.units
        R = sigma - sigma[:, J] @ np.linalg.solve(sigma[np.ix_(J, J)] + lp.lam * np.eye(len(J)), sigma[J, :])
        assert lp.losses["recurrent"] == pytest.approx(np.trace(W @ R @ W.T), rel=1e-9)
        assert lp.losses["input"] == pytest.approx(np.trace(R), rel=1e-9)
