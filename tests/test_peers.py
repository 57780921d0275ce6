"""The peer-library harness (benchmarks/peers.py): its outcome is what the peer did, checked against the models
themselves, and its bookkeeping is checked with stand-ins whose behaviour is known."""

import sys
import types

import pytest
import torch
from torch import nn

from benchmarks import peers
from benchmarks.models import RNNClassifier
from benchmarks.peers import PEER_SHAPES, peer_cases, peer_table, torch_pruning_case
from benchmarks.training import accuracy


def _model(cell="RNN", m=10, layers=1, bi=False):
    torch.manual_seed(0)
    return RNNClassifier(3, m, 4, cell=cell, irnn=False, num_layers=layers, bidirectional=bi)


def _data(n=12):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, 3, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.skipif(peers.torch_pruning_version() is None, reason="the peers extra is not installed")
@pytest.mark.parametrize("cell, layers, bi", PEER_SHAPES)
def test_the_recorded_outcome_is_what_the_installed_peer_did(cell, layers, bi):
    model = _model(cell, 10, layers, bi)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _data()
    row = torch_pruning_case(model, x, 4, importance="magnitude", data=(x, y))
    for k, v in model.state_dict().items():  # the user's model is never touched
        assert torch.equal(v, before[k])
    n_params = sum(p.numel() for p in model.parameters())
    assert row["params_before"] == n_params and row["cell"] == cell and row["version"]
    if row["outcome"] == "size unchanged":
        assert row["hidden_after"] == 10 and row["params_after"] == n_params
    elif row["outcome"] == "pruned":
        assert row["hidden_after"] == 4 and row["params_after"] < n_params and 0 <= row["test_accuracy"] <= 1
    else:
        assert row["outcome"].startswith("error") and row["error"]


class _FakePruner:
    """Stands in for Torch-Pruning's MetaPruner: ``mode`` says what its step does."""

    mode = "shrink"

    def __init__(self, model, example, importance, pruning_ratio, ignored_layers):
        self.model, self.k = model, round(model.rnn.hidden_size * (1 - pruning_ratio))
        assert ignored_layers == [model.readout]

    def step(self):
        if self.mode == "raise":
            raise RuntimeError("cannot prune this")
        if self.mode == "shrink":  # what a correct peer would do: slice the units
            old, keep = self.model.rnn, torch.arange(self.k)
            new = nn.RNN(old.input_size, self.k, batch_first=True)
            with torch.no_grad():
                new.weight_ih_l0.copy_(old.weight_ih_l0[keep])
                new.weight_hh_l0.copy_(old.weight_hh_l0[keep][:, keep])
                new.bias_ih_l0.copy_(old.bias_ih_l0[keep])
                new.bias_hh_l0.copy_(old.bias_hh_l0[keep])
                head = nn.Linear(self.k, self.model.readout.out_features)
                head.weight.copy_(self.model.readout.weight[:, keep])
                head.bias.copy_(self.model.readout.bias)
            self.model.rnn, self.model.readout = new, head


@pytest.fixture
def fake_peer(monkeypatch):
    fake = types.ModuleType("torch_pruning")
    fake.__version__ = "0-test"
    fake.pruner = types.SimpleNamespace(MetaPruner=_FakePruner)
    fake.importance = types.SimpleNamespace(MagnitudeImportance=lambda p: None, TaylorImportance=lambda: None)
    monkeypatch.setitem(sys.modules, "torch_pruning", fake)
    monkeypatch.setattr(peers, "torch_pruning_version", lambda: fake.__version__)
    yield _FakePruner
    _FakePruner.mode = "shrink"


def test_a_peer_that_prunes_gets_its_accuracy_parameters_and_latency_measured(fake_peer):
    model = _model("RNN", 10)
    x, y = _data(40)
    row = torch_pruning_case(model, x, 4, data=(x, y))
    assert row["outcome"] == "pruned" and row["hidden_after"] == 4 and row["version"] == "0-test"
    # the independent computation: the same slice by hand
    fake_peer.mode = "shrink"
    by_hand = _model("RNN", 10)
    pruner = _FakePruner(by_hand, x, None, 0.6, [by_hand.readout])
    pruner.step()
    assert row["test_accuracy"] == pytest.approx(accuracy(by_hand, x, y))
    assert row["params_after"] == sum(p.numel() for p in by_hand.parameters()) and row["latency_s"] > 0


def test_a_peer_that_raises_or_does_nothing_is_recorded_so(fake_peer):
    x, y = _data()
    fake_peer.mode = "raise"
    row = torch_pruning_case(_model(), x, 4)
    assert row["outcome"] == "error in pruning" and row["error"] == "RuntimeError: cannot prune this"
    fake_peer.mode = "nothing"
    row = torch_pruning_case(_model(), x, 4, importance="taylor", targets=y)
    assert row["outcome"] == "size unchanged" and row["hidden_after"] == 10
    assert "| untrained | RNN | 1 | no | taylor | 10 -> 4 | size unchanged | 10 |" in peer_table([row])


def test_bad_arguments_and_a_missing_peer(monkeypatch):
    x, _ = _data()
    with pytest.raises(ValueError, match="importance"):
        torch_pruning_case(_model(), x, 4, importance="l1")
    if peers.torch_pruning_version() is not None:
        with pytest.raises(ValueError, match="targets"):
            torch_pruning_case(_model(), x, 4, importance="taylor")
    monkeypatch.setattr(peers, "torch_pruning_version", lambda: None)
    assert torch_pruning_case(_model(), x, 4)["outcome"] == "not installed"


def test_peer_cases_cover_every_module_type_and_depth(fake_peer):
    fake_peer.mode = "nothing"
    rows = peer_cases(m=6, k=3)
    assert {(r["cell"], r["num_layers"], r["bidirectional"]) for r in rows} == {
        ({"RNN": "RNN", "LSTM": "LSTM", "GRU": "GRU"}[c], n, b) for c, n, b in PEER_SHAPES}
    assert len(rows) == 2 * len(PEER_SHAPES)
