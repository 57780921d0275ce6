"""Projected LSTMs (``nn.LSTM(..., proj_size=p)``, LSTMPs): their cells are the units.

Every check compares with an independent computation: a step-by-step float64 LSTMP written here from the
recurrence alone (it never sees the module's output), the analytic S2 loss, a parameter count, or the original
module with the removed cells' projection columns zeroed.
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from pruning import (RecurrentStack, compress_stack, count_macs, load_pruned, spectral_prune,
                     time_mean_covariance)
from pruning.covariance import layer_covariances
from pruning.criteria import prune_by_criterion
from pruning.modules import as_layers
from pruning.projected import projected_cell_states
from theory.information import reconstruction_matrix

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


def reference_cells(layer: nn.LSTM, x: torch.Tensor, d: int) -> torch.Tensor:
    """The cell states ``h_t`` (T, m) of direction d of a single-layer projected LSTM on one sequence ``x`` (T, n),
    stepped in float64 from the zero state."""
    s = "_reverse" if d else ""
    w = {name: getattr(layer, f"{name}_l0{s}").detach().double() for name in ("weight_ih", "weight_hh", "weight_hr")}
    b = (getattr(layer, f"bias_ih_l0{s}") + getattr(layer, f"bias_hh_l0{s}")).detach().double() if layer.bias else 0
    x = x.double().flip(0) if d else x.double()
    m, p = layer.hidden_size, layer.proj_size
    c, r = torch.zeros(m, dtype=torch.float64), torch.zeros(p, dtype=torch.float64)
    out = []
    for t in range(x.shape[0]):
        i, f, g, o = (w["weight_ih"] @ x[t] + w["weight_hh"] @ r + b).chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        r = w["weight_hr"] @ h
        out.append(h)
    return torch.stack(out)


def gram(rows: torch.Tensor) -> torch.Tensor:
    return rows.double().T @ rows.double()


layer_config = st.fixed_dictionaries(dict(
    m=st.integers(3, 12), p_frac=st.floats(0.05, 0.9), n=st.integers(1, 4), T=st.integers(1, 9),
    B=st.integers(1, 5), bidirectional=st.booleans(), batch_first=st.booleans(), bias=st.booleans(),
    packed=st.booleans(), seed=st.integers(0, 2 ** 16)))


def _layer(c) -> nn.LSTM:
    torch.manual_seed(c["seed"])
    p = max(1, min(c["m"] - 1, int(c["p_frac"] * c["m"])))
    return nn.LSTM(c["n"], c["m"], proj_size=p, bidirectional=c["bidirectional"], batch_first=c["batch_first"],
                   bias=c["bias"]).double()


@settings(deadline=None)
@given(layer_config)
def test_cell_states_match_a_stepped_reference(c):
    layer = _layer(c)
    gen = torch.Generator().manual_seed(c["seed"])
    seqs = [torch.randn(int(torch.randint(1, c["T"] + 1, (), generator=gen)), c["n"], dtype=torch.float64,
                        generator=gen) for _ in range(c["B"])]
    if c["packed"]:
        padded = nn.utils.rnn.pad_sequence(seqs, batch_first=c["batch_first"])
        x = pack_padded_sequence(padded, [len(s) for s in seqs], batch_first=c["batch_first"], enforce_sorted=False)
    else:
        seqs = [s[:1].expand(c["T"], -1) * 0 + torch.randn(c["T"], c["n"], dtype=torch.float64, generator=gen)
                for s in seqs]
        x = torch.stack(seqs, 0 if c["batch_first"] else 1)
    with torch.no_grad():
        y = layer(x)[0]
        got = projected_cell_states(layer, x, y)
    for d in range(2 if c["bidirectional"] else 1):
        ref = torch.cat([reference_cells(layer, s, d) for s in seqs])
        assert got[d].shape == ref.shape  # every real step once, no padding
        torch.testing.assert_close(gram(got[d]), gram(ref), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got[d].sum(0), ref.sum(0), rtol=1e-10, atol=1e-12)


def test_one_unbatched_sequence():
    layer = nn.LSTM(2, 6, proj_size=3).double()
    x = torch.randn(7, 2, dtype=torch.float64)
    with torch.no_grad():
        got = projected_cell_states(layer, x, layer(x)[0])[0]
    torch.testing.assert_close(got, reference_cells(layer, x, 0), rtol=1e-10, atol=1e-12)


def test_time_mean_covariance_is_that_of_the_cells():
    layer = nn.LSTM(3, 9, proj_size=2, batch_first=True).double()
    x = torch.randn(6, 8, 3, dtype=torch.float64)
    stats = time_mean_covariance(layer, x, batch_size=4, precision="float64")
    ref = torch.cat([reference_cells(layer, s, 0) for s in x])
    assert stats.count == 48
    np.testing.assert_allclose(stats.mean(), (gram(ref) / 48).numpy(), rtol=1e-10, atol=1e-13)


def test_stack_statistics_read_the_projected_outputs_of_the_layer_below():
    rnn = nn.LSTM(2, 8, num_layers=2, proj_size=3, bidirectional=True).double()
    x = torch.randn(5, 4, 2, dtype=torch.float64)
    stats = layer_covariances(as_layers(rnn), x, precision="float64")
    below = as_layers(rnn)[0]
    with torch.no_grad():
        mid = below(x)[0]
    top = as_layers(rnn)[1]
    for d in range(2):
        ref = torch.cat([reference_cells(top, mid[:, b], d) for b in range(4)])
        np.testing.assert_allclose(stats[1][d].mean(), (gram(ref) / 20).numpy(), rtol=1e-10, atol=1e-13)


def test_no_reconstruction_is_the_original_with_the_removed_cells_unread():
    torch.manual_seed(3)
    rnn = nn.LSTM(3, 10, num_layers=2, proj_size=4, bidirectional=True).double()
    head = nn.Linear(8, 2).double()
    kept = [[[0, 2, 5, 7, 9], [1, 2, 3, 8, 9]], [[0, 1, 4, 6, 8], [2, 3, 5, 7, 9]]]
    small, small_head = compress_stack(rnn, head, kept)
    assert small.hidden_size == 5 and small.proj_size == 4
    zeroed = nn.LSTM(3, 10, num_layers=2, proj_size=4, bidirectional=True).double()
    zeroed.load_state_dict(rnn.state_dict())
    with torch.no_grad():
        for l in range(2):
            for d, s in enumerate(("", "_reverse")):
                w = getattr(zeroed, f"weight_hr_l{l}{s}")
                w[:, [u for u in range(10) if u not in kept[l][d]]] = 0
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(small(x)[0], zeroed(x)[0], rtol=0, atol=1e-13)
    assert torch.equal(small_head.weight, head.weight)  # the outputs keep their meaning: the head is unchanged


@settings(deadline=None)
@given(m=st.integers(4, 12), p=st.integers(1, 3), k_extra=st.integers(1, 8), rel_lam=st.floats(1e-4, 1.0),
       seed=st.integers(0, 2 ** 16))
def test_teacher_forced_output_error_is_the_s2_loss(m, p, k_extra, rel_lam, seed):
    # Given the original outputs as the recurrent input, the kept cells run exactly as in the original, and the
    # pruned projection's mean squared error is L_B(J; W_hr) - lambda ||W_hr A_J||_F^2 (the ridge identity of S1/S2)
    k = min(m, p + k_extra)
    torch.manual_seed(seed)
    layer = nn.LSTM(2, m, proj_size=p, batch_first=True).double()
    x = torch.randn(12, 6, 2, dtype=torch.float64)
    res = spectral_prune((layer, nn.Linear(p, 1).double()), x, k, rel_lam=rel_lam, Z="readout",
                         precision="float64")
    lp = res.layers[0]
    small = res.rnn
    with torch.no_grad():
        y = layer(x)[0]
        kept = projected_cell_states(small, x, y)[0]
        full = projected_cell_states(layer, x, y)[0]  # the same rows, in the same order
    torch.testing.assert_close(kept, full[:, lp.units], rtol=0, atol=1e-14)
    r_hat = kept @ small.weight_hr_l0.detach().T
    mse = float(((r_hat - full @ layer.weight_hr_l0.detach().T) ** 2).sum(1).mean())
    W_hr = layer.weight_hr_l0.detach().double().numpy()
    ridge = lp.lam * float(np.sum((W_hr @ lp.A) ** 2))
    assert mse == pytest.approx(lp.losses["readout"] - ridge, rel=1e-7, abs=1e-12)
    np.testing.assert_allclose(lp.A, reconstruction_matrix(res.covariance.mean(), lp.units, lp.lam), atol=1e-12)


def test_losses_use_the_projection():
    torch.manual_seed(0)
    layer = nn.LSTM(3, 8, proj_size=2, batch_first=True).double()
    x = torch.randn(10, 5, 3, dtype=torch.float64)
    res = spectral_prune((layer, nn.Linear(2, 4).double()), x, 5, precision="float64")
    lp = res.layers[0]
    sigma = res.covariance.mean()
    lam = lp.lam
    J = lp.units
    R = sigma - sigma[:, J] @ np.linalg.solve(sigma[np.ix_(J, J)] + lam * np.eye(5), sigma[J, :])
    W_hr = layer.weight_hr_l0.detach().double().numpy()
    W = layer.weight_hh_l0.detach().double().numpy() @ W_hr
    assert lp.losses["input"] == pytest.approx(np.trace(R), rel=1e-9)
    assert lp.losses["readout"] == pytest.approx(np.trace(W_hr @ R @ W_hr.T), rel=1e-9)
    assert lp.losses["recurrent"] == pytest.approx(np.trace(W @ R @ W.T), rel=1e-9)


class Tagger(nn.Module):
    """A projected LSTM behind an embedding, read through a norm and an MLP (which pruning leaves alone)."""

    def __init__(self, read_cells: bool = False):
        super().__init__()
        self.embed = nn.Embedding(30, 6)
        self.encoder = nn.LSTM(6, 16, num_layers=2, proj_size=5, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(10)
        self.mlp = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 3))
        self.read_cells = read_cells

    def forward(self, tokens):
        y, (h, c) = self.encoder(self.embed(tokens))
        out = self.mlp(self.norm(y))
        return out + c.mean() if self.read_cells else out


def _tokens(n=64, T=9, seed=0):
    return torch.randint(0, 30, (n, T), generator=torch.Generator().manual_seed(seed))


def test_whole_model_keeps_everything_but_the_module():
    torch.manual_seed(1)
    model = Tagger()
    x = _tokens()
    res = spectral_prune(model, x, 9)
    assert res.paths == ("encoder", ()) and res.heads == [] and res.readout is None
    assert res.model.encoder.hidden_size == 9 and res.model.encoder.proj_size == 5
    for name, p in model.state_dict().items():
        if not name.startswith("encoder."):
            assert torch.equal(res.model.state_dict()[name], p)
    # the pruned model is the original with the pruned module put in its place
    swapped = Tagger()
    swapped.load_state_dict(model.state_dict())
    swapped.encoder = res.rnn
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), swapped(x), rtol=0, atol=0)
        err = float((res.model(x) - model(x)).norm() / model(x).norm())
    assert err < 0.2


def test_whole_model_statistics_equal_the_modules_own():
    torch.manual_seed(2)
    model = Tagger().double()
    x = _tokens(20)
    res = spectral_prune(model, x, 9, precision="float64", covariance_mode="original")
    with torch.no_grad():
        emb = model.embed(x)
    direct = layer_covariances(as_layers(model.encoder), emb, precision="float64")
    for l in range(2):
        for d in range(2):
            np.testing.assert_allclose(res.covariance[l][d].mean(), direct[l][d].mean(), rtol=1e-10, atol=1e-13)


def test_refusals_name_the_argument():
    torch.manual_seed(0)
    x = _tokens(16)
    with pytest.raises(ValueError, match=r"c_n of 'encoder'"):
        spectral_prune(Tagger(read_cells=True), x, 9)
    with pytest.raises(ValueError, match="readout: 'encoder' is an LSTM with proj_size=5.*Leave readout out"):
        spectral_prune(Tagger(), x, 9, readout="mlp.0")
    for kw, name in ((dict(k=5), r"k\[0\]"), (dict(ratio=0.25), r"ratio\[0\]"), (dict(k=[9, 4]), r"k\[1\]")):
        with pytest.raises(ValueError, match=name + ": an LSTM with proj_size=5 keeps more than 5"):
            spectral_prune(Tagger(), x, **kw)
    lstm, head = nn.LSTM(2, 6, proj_size=3, batch_first=True), nn.Linear(3, 2)
    xs = torch.randn(8, 5, 2)
    with pytest.raises(ValueError, match="target_dof: an LSTM with proj_size=3 keeps more than 3"):
        spectral_prune((lstm, head), xs, target_dof=2.5)
    with pytest.raises(ValueError, match="returns projections of its cells"):
        prune_by_criterion((lstm, head), xs, 4, method="mean_activation")
    with pytest.raises(ValueError, match=r"k: an LSTM with proj_size=3 keeps more than 3 of its 6 cells "
                                         r".*this asks for 2"):
        compress_stack(lstm, head, [[[0, 1]]])


def test_error_target_search_starts_above_the_projection():
    torch.manual_seed(4)
    lstm, head = nn.LSTM(3, 24, proj_size=6, batch_first=True), nn.Linear(6, 2)
    x = torch.randn(60, 12, 3)
    res = spectral_prune((lstm, head), x, target=1e-3, search="scan")
    k = res.search["k"]
    assert min(res.search["evaluated"]) == 7 and k > 6
    assert res.search["error"] <= 1e-3
    assert all(e > 1e-3 for kk, e in res.search["evaluated"].items() if kk < k)
    assert res.rnn.hidden_size == k
    # bisection finds the same k when the errors fall with k, and never tries k <= proj_size
    bis = spectral_prune((lstm, head), x, target=1e-3)
    assert min(bis.search["evaluated"]) >= 7
    errors = list(res.search["evaluated"].values())
    if all(a >= b for a, b in zip(errors, errors[1:])):
        assert bis.search["k"] == k


def test_error_target_in_a_whole_model_is_measured_at_the_modules_outputs():
    torch.manual_seed(5)
    model = Tagger()
    x = _tokens(80, seed=3)
    res = spectral_prune(model, x, target=0.05, covariance_mode="original")
    assert res.search["error"] <= 0.05 and res.model.encoder.hidden_size == res.search["k"] > 5


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(6)
    model = Tagger()
    x = _tokens(32)
    res = spectral_prune(model, x, [8, 12])  # different widths: a RecurrentStack of projected layers
    assert isinstance(res.rnn, RecurrentStack) and res.rnn.proj_size == 5
    res.save(tmp_path / "tagger.safetensors")
    back = load_pruned(tmp_path / "tagger.safetensors", Tagger())
    with torch.no_grad():
        assert torch.equal(back(x), res.model(x))
    lstm, head = nn.LSTM(3, 10, proj_size=2), nn.Linear(2, 4)
    xs = torch.randn(7, 5, 3)
    pair = spectral_prune((lstm, head), xs, 4)
    pair.save(tmp_path / "pair.safetensors")
    rnn, readout = load_pruned(tmp_path / "pair.safetensors")
    assert rnn.proj_size == 2 and rnn.hidden_size == 4
    with torch.no_grad():
        assert torch.equal(readout(rnn(xs)[0]), pair.readout(pair.rnn(xs)[0]))


class _Returns(nn.Module):
    """A model that only runs its projected LSTM: pruning it is pruning the module."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm

    def forward(self, x):
        return self.lstm(x)[0]


def test_a_bare_projected_lstm_prunes_as_it_does_inside_a_model(tmp_path):
    torch.manual_seed(9)
    lstm = nn.LSTM(3, 14, num_layers=2, proj_size=4, bidirectional=True, batch_first=True)
    x, held = torch.randn(40, 8, 3), torch.randn(30, 8, 3)
    inside = spectral_prune(_Returns(lstm), x, k=[7, 9])  # found by the hooks of the whole-model route
    for bare in (lstm, (lstm, None)):
        res = spectral_prune(bare, x, k=[7, 9])
        assert res.readout is None and res.model is None and res.heads == []
        assert [lp.units for lp in res.layers] == [lp.units for lp in inside.layers]
        for name, w in inside.model.lstm.state_dict().items():
            assert torch.equal(res.rnn.state_dict()[name], w), name
    res.save(tmp_path / "bare.safetensors")
    for back in (load_pruned(tmp_path / "bare.safetensors"), load_pruned(tmp_path / "bare.safetensors", model=lstm)):
        assert isinstance(back, RecurrentStack) and back.hidden_sizes == [7, 9] and back.proj_size == 4
        with torch.no_grad():
            assert torch.equal(back(x)[0], res.rnn(x)[0])
    assert lstm.hidden_size == 14  # the model given to load_pruned is left as it is
    # the error target: its error, recomputed here on the held-out sequences at the module's outputs
    found = spectral_prune(lstm, x, target=0.05, holdout_data=held, search="scan")
    with torch.no_grad():
        full, small = lstm(held)[0].double(), found.rnn(held)[0].double()
    err = float(((full - small) ** 2).sum() / (full ** 2).sum())
    assert err == pytest.approx(found.search["error"], rel=1e-5) and err <= 0.05
    assert found.rnn.hidden_size == found.search["k"] > 4
    # a module whose outputs change width needs the layer that reads them
    with pytest.raises(TypeError, match="model_or_rnn: pass the RNN together with its read-out.*absorb"):
        spectral_prune(nn.LSTM(3, 8, batch_first=True), x, k=4)
    with pytest.raises(TypeError, match="readout: expected a torch.nn.Linear"):
        spectral_prune((nn.GRU(3, 8, batch_first=True), None), x, k=4)


def test_projected_stack_runs_like_its_layers():
    stack = RecurrentStack("LSTM", 3, [7, 5, 6], proj_size=4, bidirectional=True, batch_first=True)
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        y, (h, c) = stack(x)
        z = x
        for layer in stack.layers:
            z = layer(z)[0]
    assert torch.equal(y, z) and h.shape == (6, 2, 4) and c.shape == (6, 2, 7)
    scripted = torch.jit.script(stack)
    with torch.no_grad():
        assert torch.equal(scripted(x)[0], y)
    with pytest.raises(ValueError, match="proj_size"):
        RecurrentStack("GRU", 3, [7, 5], proj_size=2)
    with pytest.raises(ValueError, match="proj_size"):
        RecurrentStack("LSTM", 3, [7, 4], proj_size=4)


def test_macs_count_every_weight_once_per_step():
    rnn = nn.LSTM(5, 12, num_layers=3, proj_size=4, bidirectional=True)
    per_step = sum(p.numel() for name, p in rnn.named_parameters() if name.startswith("weight"))
    assert count_macs(rnn, T=7) == 7 * per_step


def test_the_one_dnn_warning_is_torchs_own():
    # torch warns that oneDNN has no projected LSTM; pruning adds no warning of its own
    lstm, head = nn.LSTM(2, 6, proj_size=2), nn.Linear(2, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spectral_prune((lstm, head), torch.randn(5, 3, 2), 4)
    assert all("oneDNN" in str(w.message) for w in caught)


_ZOO = """
import torch


class Recognizer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 12, num_layers=2, proj_size=4, batch_first=True)
        self.norm = torch.nn.LayerNorm(4)
        self.classify = torch.nn.Linear(4, 5)

    def forward(self, frames):
        return self.classify(self.norm(self.lstm(frames)[0]))


def build():
    return Recognizer()


def build_bare():
    return torch.nn.LSTM(3, 12, proj_size=4, batch_first=True)
"""


def test_command_line_prunes_a_projected_lstm_as_the_api_does(tmp_path, importable):
    import json

    from safetensors.torch import save_file

    from pruning.cli import main

    lstmp_zoo = importable("lstmp_zoo", _ZOO)
    torch.manual_seed(8)
    model = lstmp_zoo.build()
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    x = torch.randn(30, 7, 3)
    torch.save(x, tmp_path / "x.pt")
    assert main(["prune", "--checkpoint", str(tmp_path / "w.safetensors"), "--model", "lstmp_zoo:build",
                 "--data", str(tmp_path / "x.pt"), "--k", "6", "--out", str(tmp_path / "p.safetensors")]) == 0
    expected = spectral_prune(model, x, k=6)
    summary = json.loads((tmp_path / "p.json").read_text())
    assert [lp["units"] for lp in summary["layers"]] == [lp.units for lp in expected.layers]
    assert summary["after"]["parameters_rnn"] < summary["before"]["parameters_rnn"]
    rebuilt = load_pruned(tmp_path / "p.safetensors", model=lstmp_zoo.build())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), expected.model(x), rtol=0, atol=0)
    # a factory that builds the bare module: the module is pruned and written on its own
    bare = lstmp_zoo.build_bare()
    save_file(bare.state_dict(), tmp_path / "b.safetensors")
    assert main(["prune", "--checkpoint", str(tmp_path / "b.safetensors"), "--model", "lstmp_zoo:build_bare",
                 "--data", str(tmp_path / "x.pt"), "--k", "6", "--out", str(tmp_path / "pb.safetensors")]) == 0
    expected = spectral_prune(bare, x, k=6)
    assert json.loads((tmp_path / "pb.json").read_text())["kind"] == "module"
    rebuilt = load_pruned(tmp_path / "pb.safetensors")
    assert isinstance(rebuilt, nn.LSTM) and (rebuilt.hidden_size, rebuilt.proj_size) == (6, 4)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x)[0], expected.rnn(x)[0], rtol=0, atol=0)


def test_onnx_export_refuses_by_name_and_torch_export_works(tmp_path):
    pytest.importorskip("onnx")
    from pruning.export import SequenceReadout, export_onnx

    lstm, head = nn.LSTM(3, 12, proj_size=4, batch_first=True), nn.Linear(4, 2)
    x = torch.randn(8, 6, 3)
    res = spectral_prune((lstm, head), x, 6)
    with pytest.raises(ValueError, match="'rnn' is an LSTM with proj_size.*torch.export"):
        export_onnx((res.rnn, res.readout), x[:2], tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    module = SequenceReadout(res.rnn, res.readout).eval()
    exported = torch.export.export(module, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), module(x))


class ProjectedUser(nn.Module):
    """A projected LSTM under its own name, read through a nonlinearity (which pruning leaves alone)."""

    def __init__(self, layers, bidirectional, batch_first, m=7, p=3):
        super().__init__()
        self.batch_first = batch_first
        self.body = nn.LSTM(2, m, num_layers=layers, proj_size=p, bidirectional=bidirectional,
                            batch_first=batch_first, dtype=torch.float64)
        self.score = nn.Sequential(nn.Tanh(), nn.Linear(p * (2 if bidirectional else 1), 2, dtype=torch.float64))

    def forward(self, x):  # x batch-first
        out, (h, _) = self.body(x if self.batch_first else x.transpose(0, 1))
        out = out if self.batch_first else out.transpose(0, 1)
        return self.score(out).mean(1) + h.sum(0).sum(-1, keepdim=True)


@settings(deadline=None)
@given(layers=st.integers(1, 2), bidirectional=st.booleans(), batch_first=st.booleans(), k=st.integers(4, 7),
       seed=st.integers(0, 2 ** 16), mode=st.sampled_from(["sequential", "original"]))
def test_a_user_model_prunes_like_its_module(layers, bidirectional, batch_first, k, seed, mode):
    torch.manual_seed(seed)
    model = ProjectedUser(layers, bidirectional, batch_first)
    x = torch.randn(9, 6, 2, dtype=torch.float64)
    res = spectral_prune(model, x, k=k, batch_size=4, covariance_mode=mode)
    pair = spectral_prune((model.body, nn.Linear(model.body.proj_size * (2 if bidirectional else 1), 1).double()),
                          x if batch_first else x.transpose(0, 1).contiguous(), k=k, covariance_mode=mode)
    assert [lp.units for lp in res.layers] == [lp.units for lp in pair.layers]
    grid = lambda c: [s for row in c for s in row] if isinstance(c, list) else [c]  # noqa: E731
    for a, b in zip(grid(res.covariance), grid(pair.covariance)):
        assert a.count == b.count
        torch.testing.assert_close(a.outer_sum, b.outer_sum, rtol=1e-12, atol=1e-12)
    swapped = ProjectedUser(layers, bidirectional, batch_first)
    swapped.load_state_dict(model.state_dict())
    swapped.body = pair.rnn
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), swapped(x), rtol=1e-12, atol=1e-12)
    assert model.body.hidden_size == 7  # the user's model untouched
