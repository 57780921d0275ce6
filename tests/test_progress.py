"""Progress bars of the covariance pass on a whole model: one bar per pass over the model's batches, whose total is
the number of batches the pass reads (unknown only for a generator); and one bar per greedy selection, over its k
steps."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pruning.cells
import pruning.covariance
from pruning import spectral_prune


class _Recorder:
    """Stands in for progress_bar: records each enabled bar's total and how many items went through it, the greedy
    selections' bars apart from the covariance passes'."""

    def __init__(self):
        self.bars, self.selections = [], []

    def __call__(self, iterable, enabled, **kwargs):
        if not enabled:
            return iterable
        bar = {"total": kwargs.get("total"), "n": 0, "desc": kwargs.get("desc", "")}
        (self.selections if bar["desc"].startswith("selection") else self.bars).append(bar)

        def counted():
            for item in iterable:
                bar["n"] += 1
                yield item
        return counted()


@pytest.fixture
def recorder(monkeypatch):
    rec = _Recorder()
    monkeypatch.setattr(pruning.covariance, "progress_bar", rec)
    monkeypatch.setattr(pruning.cells, "progress_bar", rec)
    return rec


@pytest.fixture
def bars(recorder):
    return recorder.bars


class _Classifier(nn.Module):
    def __init__(self, layers=1):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.LSTM(3, 12, num_layers=layers, batch_first=True)
        self.head = nn.Linear(12, 2)

    def forward(self, x):
        return self.head(self.encoder(x)[0][:, -1])


class _CellModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.cell = nn.GRUCell(3, 10)
        self.head = nn.Linear(10, 2)

    def forward(self, x):
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.head(h)


X = torch.randn(300, 6, 3, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("form, total", [("tensor", 5), ("loader", 5), ("list", 3), ("generator", None)])
def test_a_whole_models_bar_counts_its_batches(bars, form, total):
    data = {"tensor": X, "loader": DataLoader(TensorDataset(X), batch_size=64), "list": list(torch.split(X, 100)),
            "generator": (b for b in torch.split(X, 64))}[form]
    if form == "loader":
        model = _Classifier()
        res = spectral_prune(model, data, k=4, progress=True, batch_size=64, forward=lambda m, b: m(b[0]))
    else:
        res = spectral_prune(_Classifier(), data, k=4, progress=True, batch_size=64)
    assert res.k == 4
    assert len(bars) == 1  # one bar: the model's batches, not a second one over the module's calls
    assert bars[0]["total"] == total
    assert bars[0]["n"] == (total if total is not None else 5)


def test_a_stack_pruned_layer_by_layer_has_one_bar_per_pass(bars):
    spectral_prune(_Classifier(layers=2), X, k=4, progress=True, batch_size=64)
    # the model's run, then the kept inputs replayed for the layer above
    assert [(b["total"], b["n"]) for b in bars] == [(5, 5), (5, 5)]


def test_a_cells_bar_counts_the_models_batches(bars):
    spectral_prune(_CellModel(), X, k=4, progress=True, batch_size=64)
    assert [(b["total"], b["n"]) for b in bars] == [(5, 5)]


def test_no_bar_without_progress(bars):
    spectral_prune(_Classifier(layers=2), X, k=4, batch_size=64)
    spectral_prune(_CellModel(), X, k=4, batch_size=64)
    assert bars == []


def test_a_generators_batches_replayed_for_the_layer_above_have_a_total(bars):
    """A stacked pair given a generator: the first pass cannot know its length, the replay of the kept batches can."""
    torch.manual_seed(0)
    lstm, head = nn.LSTM(3, 12, num_layers=2, batch_first=True), nn.Linear(12, 2)
    spectral_prune((lstm, head), (b for b in torch.split(X, 64)), k=4, progress=True, batch_size=64)
    assert [(b["total"], b["n"]) for b in bars] == [(None, 5), (5, 5)]


def test_each_greedy_selection_has_a_bar_over_its_steps(recorder):
    """One bar per layer and direction, as many steps as units kept, and the units those of a run without bars."""
    torch.manual_seed(0)
    lstm, head = nn.LSTM(3, 12, num_layers=2, bidirectional=True, batch_first=True), nn.Linear(24, 2)
    res = spectral_prune((lstm, head), X, k=[5, 4], progress=True, batch_size=64)
    selections = [(b["desc"], b["n"]) for b in recorder.selections]
    assert selections == [(f"selection (layer {l}, direction {d})", k) for l, k in ((0, 5), (1, 4)) for d in (0, 1)]
    assert [lp.units for lp in res.layers] == [lp.units for lp in spectral_prune((lstm, head), X, k=[5, 4],
                                                                                  batch_size=64).layers]
