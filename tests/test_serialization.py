"""Safe checkpoints (issue: no code runs from a file the user did not say to trust): pickled models are refused
unless trusted, weights load into a model a named factory builds, and pruned weights round-trip through safetensors
bitwise, without unpickling anything."""

import json
import sys

import pytest
import torch

from pruning import RecurrentStack, load_checkpoint, load_pruned, save_pruned, spectral_prune
from pruning.cli import main
from pruning.serialization import UntrustedCheckpoint


class _Payload:
    """Unpickling this object calls os.system, which writes the marker file: code running from a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"model": _Payload(marker)}, tmp_path / "evil.pt")
    torch.save(torch.randn(4, 3, 2), tmp_path / "x.pt")
    with pytest.raises(UntrustedCheckpoint, match="would run code from the file"):
        load_checkpoint(tmp_path / "evil.pt")
    code = main(["prune", "--checkpoint", str(tmp_path / "evil.pt"), "--data", str(tmp_path / "x.pt"), "--k", "2",
                 "--out", str(tmp_path / "p.safetensors"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--trust-checkpoint" in err and "--model package.module:factory" in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists()  # nothing from the file was executed


@pytest.fixture
def factory_module(importable):
    """A module on sys.path with factories that build models (what --model names)."""
    importable("user_models", """
        import torch

        class Classifier(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = torch.nn.LSTM(3, 12, num_layers=2, bidirectional=True, batch_first=True, dropout=0.2)
                self.readout = torch.nn.Linear(24, 4)

            def forward(self, x):
                return self.readout(self.rnn(x)[0][:, -1])

        def build():
            return Classifier()

        def pair():
            return torch.nn.GRU(2, 8, batch_first=True), torch.nn.Linear(8, 3)
    """)
    return "user_models"


def test_weights_and_a_factory_are_the_safe_path(tmp_path, factory_module):
    import user_models

    torch.manual_seed(0)
    model = user_models.build().eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    x = torch.randn(30, 7, 3)
    torch.save(x, tmp_path / "x.pt")
    for ckpt in ("w.pt", "w.safetensors"):
        loaded = load_checkpoint(tmp_path / ckpt, factory=user_models.build)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
        out = tmp_path / f"p-{ckpt}.safetensors"
        assert main(["prune", "--checkpoint", str(tmp_path / ckpt), "--model", f"{factory_module}:build", "--data",
                     str(tmp_path / "x.pt"), "--k", "6,4", "--out", str(out), "--no-progress"]) == 0
        pruned = load_pruned(out, model=user_models.build()).eval()
        ref = spectral_prune(model, x, k=[6, 4]).model.eval()
        with torch.no_grad():
            assert torch.equal(pruned(x), ref(x))
        assert isinstance(pruned.rnn, RecurrentStack) and pruned.rnn.dropout == 0.2  # dropout kept
        with pytest.raises(ValueError, match="model: this file holds a whole pruned model"):
            load_pruned(out)
    with pytest.raises(ValueError, match="weights do not fit the model"):
        load_checkpoint(tmp_path / "w.pt", factory=lambda: user_models.pair())


@pytest.mark.parametrize("cell, layers, bidirectional, ks", [
    ("RNN", 1, False, 3), ("LSTM", 1, False, 4), ("GRU", 1, True, 2),
    ("LSTM", 2, False, 4), ("GRU", 2, True, [5, 3]), ("RNN", 3, True, [2, 4, 3]), ("LSTM", 2, True, [6, 2]),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_safetensors_round_trip_is_bitwise(tmp_path, cell, layers, bidirectional, ks, dtype):
    torch.manual_seed(0)
    kw = dict(nonlinearity="relu") if cell == "RNN" else {}
    rnn = getattr(torch.nn, cell)(3, 8, num_layers=layers, bidirectional=bidirectional, batch_first=False,
                                  dtype=dtype, **kw)
    head = torch.nn.Linear(8 * (2 if bidirectional else 1), 2, dtype=dtype)
    x = torch.randn(6, 10, 3, dtype=dtype)  # time-major
    res = spectral_prune((rnn, head), x, k=ks)
    save_pruned(tmp_path / "p.safetensors", res.rnn, res.readout)
    record = json.loads((tmp_path / "p.json").read_text())
    assert record["architecture"]["rnn"]["dtype"] == str(dtype).replace("torch.", "")
    small, small_head = load_pruned(tmp_path / "p.safetensors")
    assert type(small) is type(res.rnn) and small.hidden_sizes if isinstance(small, RecurrentStack) else True
    for (k1, a), (k2, b) in zip(res.rnn.state_dict().items(), small.state_dict().items()):
        assert k1 == k2 and a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(res.readout.weight, small_head.weight) and torch.equal(res.readout.bias, small_head.bias)
    with torch.no_grad():
        assert torch.equal(small_head(small(x)[0]), res.readout(res.rnn(x)[0]))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing json"])
def test_a_damaged_file_gets_a_named_error(tmp_path, damage):
    torch.manual_seed(0)
    res = spectral_prune((torch.nn.GRU(2, 6), torch.nn.Linear(6, 2)), torch.randn(5, 4, 2), k=3)
    path = tmp_path / "p.safetensors"
    save_pruned(path, res.rnn, res.readout)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif damage == "garbage":
        path.write_bytes(b"not a safetensors file at all")
    else:
        (tmp_path / "p.json").unlink()
    with pytest.raises(ValueError, match="^path: |^summary_path: "):
        load_pruned(path)
    if damage != "missing json":  # the same file given as a checkpoint to prune
        with pytest.raises(ValueError, match="^--checkpoint: .* is not a readable safetensors file"):
            load_checkpoint(path, factory=lambda: (torch.nn.GRU(2, 3), torch.nn.Linear(3, 2)))
        torch_file = tmp_path / "p.pt"
        torch_file.write_bytes(path.read_bytes())
        with pytest.raises(ValueError, match="^--checkpoint: .* is not a readable torch checkpoint"):
            load_checkpoint(torch_file)


def test_a_missing_class_gets_a_one_line_error(tmp_path, factory_module, capsys):
    import user_models

    torch.save(user_models.build(), tmp_path / "m.pt")
    torch.save(torch.randn(4, 5, 3), tmp_path / "x.pt")
    sys.modules.pop("user_models")
    sys.path.remove(str(tmp_path))
    code = main(["prune", "--checkpoint", str(tmp_path / "m.pt"), "--trust-checkpoint", "--data",
                 str(tmp_path / "x.pt"), "--k", "2", "--out", str(tmp_path / "p.safetensors"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "user_models" in err and "PYTHONPATH" in err


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    torch.manual_seed(0)
    res = spectral_prune((torch.nn.GRU(2, 6), torch.nn.Linear(6, 2)), torch.randn(5, 4, 2), k=3)
    old = os.umask(0o022)
    try:
        save_pruned(tmp_path / "p.safetensors", res.rnn, res.readout)
    finally:
        os.umask(old)
    for name in ("p.safetensors", "p.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def test_a_result_saves_its_models_wherever_their_modules_sit(tmp_path):
    """``res.save(path)`` records where the recurrent module and the read-out sit, so a model that keeps them under
    its own names (a ModuleList, a ModuleDict, a cell) comes back bitwise. The module-wise call that the docs used
    to show wrote the default places ``.rnn``/``.readout`` for such a model, and loading it then failed; it is
    now refused when the paths do not lead to the modules."""
    from safetensors.torch import load_file

    class Listed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.LSTM(3, 8, batch_first=True)])
            self.heads = torch.nn.ModuleDict({"cls": torch.nn.Linear(8, 2)})

        def forward(self, x):
            return self.heads["cls"](self.layers[1](self.layers[0](x))[0][:, -1])

    class Stepped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.step, self.head = torch.nn.GRUCell(3, 6), torch.nn.Linear(6, 2)

        def forward(self, x):
            h = x.new_zeros(x.shape[0], self.step.hidden_size)
            for t in range(x.shape[1]):
                h = self.step(x[:, t], h)
            return self.head(h)

    x = torch.randn(12, 5, 3)
    for build, places in ((Listed, ("layers.1", ("heads.cls",))), (Stepped, ("step", ("head",)))):
        torch.manual_seed(14)
        res = spectral_prune(build(), x, k=3)
        assert res.paths == places
        path = tmp_path / f"{build.__name__}.safetensors"
        with pytest.raises(ValueError, match=r"^paths: model.rnn is not the recurrent module passed"):
            save_pruned(path, res.rnn, res.readout, model=res.model)
        assert not path.exists()
        res.save(path)
        back = load_pruned(path, model=build()).eval()
        with torch.no_grad():
            assert torch.equal(back(x), res.model.eval()(x))
        save_pruned(tmp_path / "again.safetensors", res.rnn, res.heads, model=res.model,
                    paths=(places[0], list(places[1])))  # the module-wise call, with the right paths
        again = load_file(tmp_path / "again.safetensors")
        assert again.keys() == load_file(path).keys()
        assert all(torch.equal(t, load_file(path)[name]) for name, t in again.items())
        described = [json.loads(f.read_text())["architecture"] for f in (tmp_path / "again.json", path.with_suffix(
            ".json"))]
        assert described[0] == described[1]
    pair = spectral_prune((torch.nn.GRU(3, 4, batch_first=True), torch.nn.Linear(4, 2)), x, k=2)
    assert pair.paths is None
    save_pruned(tmp_path / "pair.safetensors", pair)
    small, head = load_pruned(tmp_path / "pair.safetensors")
    assert torch.equal(head.weight, pair.readout.weight)
    with pytest.raises(ValueError, match=r"^readout, model, paths: save_pruned\(path, result\) takes them"):
        save_pruned(tmp_path / "x.safetensors", pair, pair.readout)


def test_statistics_are_saved_and_read_back_bitwise(tmp_path):
    """An expensive pass is taken once: its statistics (one CovarianceStats, or a result's [layer][direction] grid)
    go to a safetensors file and come back with the same float64 sums, counts and pruned_below marks, so pruning
    from them gives the same units and weights, and sequential-mode statistics are still refused there."""
    from pruning import load_statistics, save_statistics, time_mean_covariance
    from pruning.covariance import CovarianceStats

    torch.manual_seed(19)
    x = torch.randn(20, 5, 3)
    gru, head = torch.nn.GRU(3, 8, batch_first=True), torch.nn.Linear(8, 2)
    one = time_mean_covariance(gru, x)
    save_statistics(tmp_path / "one.safetensors", one)
    back = load_statistics(tmp_path / "one.safetensors")
    assert isinstance(back, CovarianceStats) and back.count == one.count and not back.pruned_below
    assert torch.equal(back.outer_sum, one.outer_sum)
    assert spectral_prune((gru, head), None, k=3, covariance=back).units == spectral_prune((gru, head), x, k=3).units

    lstm, head2 = torch.nn.LSTM(3, 8, num_layers=2, bidirectional=True, batch_first=True), torch.nn.Linear(16, 2)
    for mode in ("original", "sequential"):
        res = spectral_prune((lstm, head2), x, k=3, covariance_mode=mode)
        save_statistics(tmp_path / f"{mode}.safetensors", res.covariance)
        grid = load_statistics(tmp_path / f"{mode}.safetensors")
        for row, ref in zip(grid, res.covariance):
            for c, r in zip(row, ref):
                assert torch.equal(c.outer_sum, r.outer_sum) and (c.count, c.pruned_below) == (r.count, r.pruned_below)
    again = spectral_prune((lstm, head2), None, k=3, covariance=load_statistics(tmp_path / "original.safetensors"))
    ref = spectral_prune((lstm, head2), x, k=3, covariance_mode="original")
    assert [lp.units for lp in again.layers] == [lp.units for lp in ref.layers]
    assert torch.equal(again.readout.weight, ref.readout.weight)
    with pytest.raises(ValueError, match=r"^covariance: the statistics of layer 1 were measured with the layers"):
        spectral_prune((lstm, head2), None, k=3, covariance=load_statistics(tmp_path / "sequential.safetensors"))

    with pytest.raises(TypeError, match=r"^stats: expected a CovarianceStats or a \[layer\]\[direction\] list"):
        save_statistics(tmp_path / "bad.safetensors", [one, one])
    save_pruned(tmp_path / "p.safetensors", spectral_prune((gru, head), x, k=3))
    with pytest.raises(ValueError, match=r"^path: .* holds no statistics written by save_statistics"):
        load_statistics(tmp_path / "p.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match=r"^path: .* is not a readable statistics file"):
        load_statistics(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match=r"^path: no such file"):
        load_statistics(tmp_path / "none.safetensors")
