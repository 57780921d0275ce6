"""Pruning to an error target: the returned k is minimal for the criterion, checked by brute force."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning import spectral_prune
from pruning.cli import main
from pruning.target import split_holdout
from theory.approximation import measured_time_mean_error, s10_bound


def make(cell, m, layers=1, bidirectional=False, seed=0, d_x=3, d_y=4):
    torch.manual_seed(seed)
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=True, dtype=torch.float64)
    if cell in ("relu", "tanh"):
        rnn = torch.nn.RNN(d_x, m, nonlinearity=cell, **kw)
    else:
        rnn = getattr(torch.nn, cell)(d_x, m, **kw)
    return rnn, torch.nn.Linear((2 if bidirectional else 1) * m, d_y, dtype=torch.float64)


def naive_relative_error(full, small, x):
    """Sequence by sequence, step by step: sum ||V h_t - V# h#_t||^2 / sum ||V h_t||^2."""
    (rnn, head), (rnn_s, head_s) = full, small
    num = den = 0.0
    with torch.no_grad():
        for seq in x:
            out, out_s = rnn(seq[None])[0][0], rnn_s(seq[None])[0][0]
            for t in range(seq.shape[0]):
                f, g = head.weight @ out[t], head_s.weight @ out_s[t]
                num += float(((f - g) ** 2).sum())
                den += float((f ** 2).sum())
    return num / den


def brute_force_errors(pair, calib, held, widths, mode="original", **kw):
    """Every k pruned from scratch (its own greedy run and, in sequential mode, its own passes over the layers above
    the first) and measured naively."""
    errors = {}
    for k in range(1, max(widths) + 1):
        res = spectral_prune(pair, calib, k=[min(k, m) for m in widths], covariance_mode=mode, **kw)
        errors[k] = naive_relative_error(pair, (res.rnn, res.readout), held)
    return errors


@settings(max_examples=16, deadline=None)
@given(cell=st.sampled_from(["relu", "tanh", "LSTM", "GRU"]), m=st.integers(3, 9), layers=st.integers(1, 2),
       bidirectional=st.booleans(), tol=st.sampled_from([0.3, 0.1, 0.03, 0.01]), seed=st.integers(0, 50),
       mode=st.sampled_from(["sequential", "original"]))
def test_returned_k_is_minimal_for_the_measured_error(cell, m, layers, bidirectional, tol, seed, mode):
    """In both covariance modes: in sequential mode (the default) each k of a stack's search measures the layers above
    the first again on the layers below pruned to k, and must match the network pruned at k from scratch."""
    pair = make(cell, m, layers, bidirectional, seed)
    x = torch.randn(24, 6, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    calib, held, _, _ = split_holdout(x, 0.25, batch_first=True, seed=0)
    errors = brute_force_errors(pair, calib, held, [m] * layers, mode)
    if errors[m] > tol:
        with pytest.raises(ValueError, match="target: no k"):
            spectral_prune(pair, x, target=tol, covariance_mode=mode)
        return
    res = spectral_prune(pair, x, target=tol, covariance_mode=mode)
    assert res.covariance_mode == mode or layers == 1
    k = res.search["k"]
    for kk, err in res.search["evaluated"].items():  # what the search saw is the independent measurement
        assert err == pytest.approx(errors[kk], rel=1e-9, abs=1e-14)
    assert errors[k] <= tol and (k == 1 or errors[k - 1] > tol)
    assert res.ks == [k] * layers
    monotone = all(errors[i + 1] <= errors[i] for i in range(1, m))
    if monotone:
        assert k == min(kk for kk, e in errors.items() if e <= tol)
    scan = spectral_prune(pair, x, target=tol, search="scan", covariance_mode=mode)
    assert scan.search["k"] == min(kk for kk, e in errors.items() if e <= tol)
    # k = 1, 2, 4, ... then bisection: 2 ceil(log2 k) evaluations at most, and the greedy order run to at most 2k
    assert len(res.search["evaluated"]) <= max(1, 2 * int(np.ceil(np.log2(k))))
    assert res.search["greedy_steps"] <= min(m, max(1, 2 * (k - 1)))


@pytest.mark.parametrize("cell, rho", [("tanh", 0.5), ("relu", 1.0), ("tanh", 1.5)])
def test_s10_criterion(cell, rho):
    rnn, head = make(cell, 10, d_y=2)
    with torch.no_grad():
        W = rnn.weight_hh_l0
        W.mul_(rho / torch.linalg.matrix_norm(W, ord=2))
    x = torch.randn(40, 5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    tol = 0.5
    sigma = spectral_prune((rnn, head), x, k=10).covariance.mean()
    V = head.weight.detach().numpy()
    res0 = spectral_prune((rnn, head), x, k=10)
    lam = res0.lam

    def rel_bound(k):
        J = spectral_prune((rnn, head), x, k=k).units
        return s10_bound(sigma, J, lam, rnn, head, 5) / np.trace(V @ sigma @ V.T)

    bounds = {k: rel_bound(k) for k in range(1, 11)}
    if bounds[10] > tol:
        with pytest.raises(ValueError, match="s10 relative error"):
            spectral_prune((rnn, head), x, target=tol, criterion="s10")
        return
    res = spectral_prune((rnn, head), x, target=tol, criterion="s10", search="scan")
    k = res.search["k"]
    assert k == min(kk for kk, b in bounds.items() if b <= tol)
    assert res.search["error"] == pytest.approx(bounds[k], rel=1e-9)
    # the bound holds: the measured time-mean error on the calibration data is below it
    measured = measured_time_mean_error(rnn, head, res.units, res.A, x)
    assert measured <= bounds[k] * np.trace(V @ sigma @ V.T) * (1 + 1e-9)


def test_bad_targets_are_refused():
    pair = make("GRU", 6)
    x = torch.randn(20, 5, 3, dtype=torch.float64)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="target: expected a positive"):
            spectral_prune(pair, x, target=bad)
    for bad in (True, "0.1"):  # not a number at all: the wrong kind of value
        with pytest.raises(TypeError, match="target: expected a real number"):
            spectral_prune(pair, x, target=bad)
    with pytest.raises(ValueError, match="target, k: give either"):
        spectral_prune(pair, x, k=3, target=0.1)
    with pytest.raises(ValueError, match="method: an error target"):
        spectral_prune(pair, x, target=0.1, method="leverage")
    with pytest.raises(TypeError, match="Elman"):
        spectral_prune(pair, x, target=0.1, criterion="s10")
    with pytest.raises(TypeError, match="holdout: the data are a stream"):
        spectral_prune(pair, (b for b in (x[:10], x[10:])), target=0.1)
    with pytest.raises(ValueError, match="holdout: cannot hold out 0.25 of 1 batches"):
        spectral_prune(pair, [x], target=0.1)
    with pytest.raises(ValueError, match="holdout: expected a fraction"):
        spectral_prune(pair, x, target=0.1, holdout=1.5)
    with pytest.raises(ValueError, match="target: no k"):
        spectral_prune(pair, x, target=1e-12, rel_lam=1.0)
    res = spectral_prune(pair, [x[:10], x[10:]], target=0.5, holdout_data=x[:5])
    assert res.search["k"] >= 1 and res.search["error"] <= 0.5


def test_cli_target(tmp_path, capsys):
    rnn, head = make("LSTM", 8)
    torch.save((rnn, head), tmp_path / "m.pt")
    torch.save(torch.randn(30, 6, 3, dtype=torch.float64), tmp_path / "x.pt")
    assert main(["prune", "--checkpoint", str(tmp_path / "m.pt"), "--trust-checkpoint", "--data",
                 str(tmp_path / "x.pt"), "--target", "0.05", "--out", str(tmp_path / "p.safetensors"),
                 "--no-progress"]) == 0
    summary = json.loads((tmp_path / "p.json").read_text())
    search = summary["search"]
    assert search["error"] <= 0.05 and summary["layers"][0]["k"] == search["k"]
    k = search["k"]
    assert k == 1 or search["evaluated"][str(k - 1)] > 0.05
    assert "target 0.05 (measured): k =" in capsys.readouterr().out


def test_batched_data_hold_out_whole_batches_by_a_seeded_choice():
    pair = make("GRU", 6)
    x = torch.randn(40, 5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    batches = list(torch.split(x, 5))  # 8 batches
    calib, held, _, _ = split_holdout(batches, 0.25, batch_first=True, seed=3)
    assert len(held) == 2 and len(calib) == 6
    ids = lambda bs: {int(b[0, 0, 0].mul(1e6).round()) for b in bs}
    assert ids(calib).isdisjoint(ids(held)) and len(ids(calib) | ids(held)) == 8  # whole batches, none split
    again = split_holdout(batches, 0.25, batch_first=True, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(again[1], held))  # seeded
    res = spectral_prune(pair, batches, target=0.3, seed=3)
    assert res.search["error"] <= 0.3
    # the error is measured on exactly those held-out batches
    from pruning.target import relative_output_error

    small = (res.rnn, res.readout)
    assert relative_output_error(pair, small, held) == pytest.approx(res.search["error"], rel=1e-9)


def test_relative_output_error_refuses_what_it_cannot_measure_by_name():
    """Empty data used to be reported as a zero read-out 'on holdout_data', and a model that is not a pair as a
    failed tuple unpacking."""
    from pruning.target import relative_output_error

    torch.manual_seed(5)
    rnn, head = torch.nn.GRU(3, 6, batch_first=True), torch.nn.Linear(6, 2)
    x = torch.randn(8, 4, 3)
    small = spectral_prune((rnn, head), x, k=3)
    pruned = (small.rnn, small.readout)
    with pytest.raises(ValueError, match=r"^data: no data"):
        relative_output_error((rnn, head), pruned, [])
    with pytest.raises(TypeError, match=r"^full: expected \(rnn, nn.Linear\)"):
        relative_output_error(torch.nn.Sequential(), pruned, x)
    with pytest.raises(ValueError, match=r"^pruned: its read-out has 3 outputs, the full network's 2"):
        relative_output_error((rnn, head), (small.rnn, torch.nn.Linear(3, 3)), x)
    zero = torch.nn.Linear(6, 2)
    torch.nn.init.zeros_(zero.weight)
    with pytest.raises(ValueError, match=r"^data: the read-out of the full network is zero"):
        relative_output_error((rnn, zero), pruned, x)
    # what it measures: the squared output error over the energy of V h, computed here directly
    with torch.no_grad():
        f = rnn(x)[0] @ head.weight.T
        g = small.rnn(x)[0] @ small.readout.weight.T
    expected = float(((f - g) ** 2).sum() / (f ** 2).sum())
    assert relative_output_error((rnn, head), pruned, x) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("cache", [True, False])
def test_the_full_networks_outputs_on_held_out_data_are_computed_once_per_search(cache, monkeypatch):
    """The held-out inputs and the full network's outputs on them are kept between the search's evaluations
    (within pruning.target.REFERENCE_CACHE_BYTES): the full network runs on the held-out data once, not at every k.
    Without room for them it runs at every k, and the errors are the same to the bit."""
    import pruning.target as target_module

    pair = make("tanh", 8, seed=3)
    x = torch.randn(40, 6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    calls = []
    pair[0].register_forward_pre_hook(lambda mod, args: calls.append(1))
    res_kept = spectral_prune(pair, x, target=0.01, batch_size=4)
    kept_calls = len(calls)
    calls.clear()
    monkeypatch.setattr(target_module, "REFERENCE_CACHE_BYTES", 0 if not cache else 2 ** 30)
    res = spectral_prune(pair, x, target=0.01, batch_size=4)
    evaluations, held_batches = len(res.search["evaluated"]), 3  # 10 held-out sequences in batches of 4
    assert evaluations >= 3 and res.search["evaluated"] == res_kept.search["evaluated"]
    assert len(calls) - kept_calls == (0 if cache else (evaluations - 1) * held_batches)


def test_a_whole_models_row_check_runs_once_per_data():
    """The check that dimension 0 of a whole model's data holds its sequences runs the model once more on part of
    the data; iterating the same inputs again (a search measures the held-out part at every k it tries when they do
    not fit in memory) does not repeat it."""
    from pruning.model_parts import RecurrentInputs, locate

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(3, 5, batch_first=True)
            self.head = torch.nn.Linear(5, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    model = Model()
    runs = []
    model.register_forward_pre_hook(lambda mod, args: runs.append(args[0].shape[0]))
    inputs = RecurrentInputs(locate(model, None, None), torch.randn(20, 4, 3), batch_size=8)
    for _ in range(3):
        assert sum(x.shape[0] for x in inputs) == 20
    assert runs == [8, 7, 8, 4] + [8, 8, 4] * 2  # the batches, and 7 = 8 - 1 rows checked once


def _padded_holdout(seed=40):
    """Held-out sequences of different lengths, padded with values that would dominate the error if counted."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(24, 7, 3, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, 8, (24,), generator=gen)
    x[torch.arange(7)[None, :] >= lengths[:, None]] = 50.0
    return x, lengths


def test_spectral_prune_passes_holdout_lengths_and_refuses_search_settings_without_a_target():
    """spectral_prune took holdout_data but not its lengths, so padded held-out steps entered the measured error; and
    holdout settings given with a width were ignored without a word."""
    from pruning import prune_to_target

    pair = make("GRU", 6)
    x = torch.randn(40, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(41))
    held, lengths = _padded_holdout()
    direct = prune_to_target(pair, x, 0.05, holdout_data=held, holdout_lengths=lengths, search="scan")
    res = spectral_prune(pair, x, target=0.05, holdout_data=held, holdout_lengths=lengths, search="scan")
    assert res.search["evaluated"] == direct.search["evaluated"]
    padded = spectral_prune(pair, x, target=0.05, holdout_data=held, search="scan")
    assert padded.search["evaluated"] != res.search["evaluated"]  # the padding counted there
    for setting in (dict(holdout_data=held), dict(holdout_lengths=lengths), dict(holdout=0.5), dict(search="scan"),
                    dict(criterion="s10")):
        name = next(iter(setting))
        with pytest.raises(ValueError, match=f"^{name}: settings of the error-target search, which only target= runs"):
            spectral_prune(pair, x, k=3, **setting)
    with pytest.raises(ValueError, match="holdout_lengths: the lengths of holdout_data's sequences; give holdout_data"):
        spectral_prune(pair, x, target=0.05, holdout_lengths=lengths)


def test_cli_holdout_data_with_lengths_measures_as_the_api(tmp_path, capsys):
    rnn, head = make("LSTM", 8)
    torch.save((rnn, head), tmp_path / "m.pt")
    x = torch.randn(30, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(42))
    torch.save(x, tmp_path / "x.pt")
    held, lengths = _padded_holdout()
    np.savez(tmp_path / "held.npz", inputs=held.numpy(), lengths=lengths.numpy())
    args = ["prune", "--checkpoint", str(tmp_path / "m.pt"), "--trust-checkpoint", "--data", str(tmp_path / "x.pt"),
            "--out", str(tmp_path / "p.safetensors"), "--no-progress"]
    assert main(args + ["--target", "0.05", "--holdout-data", str(tmp_path / "held.npz"), "--search", "scan"]) == 0
    summary = json.loads((tmp_path / "p.json").read_text())
    expected = spectral_prune((rnn, head), x, target=0.05, holdout_data=held, holdout_lengths=lengths, search="scan")
    assert summary["search"]["evaluated"] == {str(k): v for k, v in expected.search["evaluated"].items()}
    assert summary["settings"]["holdout_data"] == str(tmp_path / "held.npz")
    assert summary["search"]["holdout_sequences"] == 24
    with pytest.raises(SystemExit):
        main(args + ["--k", "3", "--holdout-data", str(tmp_path / "held.npz")])
    assert "--holdout-data: settings of the error-target search; give --target" in capsys.readouterr().err


def test_the_s10_criterion_refuses_held_out_settings_it_would_ignore():
    """criterion='s10' bounds the error on the calibration data: holdout_data and holdout were ignored there."""
    pair = make("relu", 6)
    x = torch.rand(20, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(43))
    for setting in (dict(holdout_data=x[:5]), dict(holdout=0.5)):
        name = next(iter(setting))
        with pytest.raises(ValueError, match=f"^{name}: criterion 's10' bounds the error on the calibration data"):
            spectral_prune(pair, x, target=0.5, criterion="s10", **setting)
    assert spectral_prune(pair, x, target=0.5, criterion="s10").search["criterion"] == "s10"


def test_a_whole_models_stack_searches_in_sequential_mode_with_its_inputs_replayed():
    """A whole model with a two-layer LSTM (after an embedding): in sequential mode (the default) every evaluated
    error equals that of the model pruned at that k from scratch on the calibration part, measured on the held-out
    part through the pair of the embedded inputs; the result reports the mode and keeps the units of the model
    pruned from scratch at the k found. The recurrent inputs are kept between the passes: the model runs for its
    checks, the first pass and the held-out reference, not once per k."""

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(30, 4, dtype=torch.float64)
            self.rnn = torch.nn.LSTM(4, 7, num_layers=2, batch_first=True, dtype=torch.float64)
            self.head = torch.nn.Linear(7, 3, dtype=torch.float64)

        def forward(self, tokens):
            return self.head(self.rnn(self.embed(tokens))[0])

    torch.manual_seed(21)
    model = Tagger()
    tokens = torch.randint(0, 30, (32, 6), generator=torch.Generator().manual_seed(21))
    calib, held, _, _ = split_holdout(tokens, 0.25, batch_first=True, seed=0)
    runs = []
    model.register_forward_pre_hook(lambda mod, args: runs.append(1))
    res = spectral_prune(model, tokens, target=0.003)
    runs_of_search = len(runs)
    assert res.covariance_mode == "sequential" and len(res.search["evaluated"]) >= 3
    pair, embedded_held = (model.rnn, model.head), model.embed(held).detach()
    for k, err in res.search["evaluated"].items():
        scratch = spectral_prune(model, calib, k=k)
        assert err == pytest.approx(naive_relative_error(pair, (scratch.rnn, scratch.readout), embedded_held),
                                    rel=1e-9, abs=1e-14)
    scratch = spectral_prune(model, calib, k=res.search["k"])
    assert [layer.units for layer in res.layers] == [layer.units for layer in scratch.layers]
    assert runs_of_search < 2 * len(res.search["evaluated"])


@pytest.mark.parametrize("mode", ["sequential", "original"])
def test_cli_target_on_a_stack_takes_the_covariance_mode(tmp_path, capsys, mode):
    """--covariance-mode was dropped when --target was given: the search now takes it, as the API does, and the
    summary records the mode with the errors of the API's search."""
    rnn, head = make("GRU", 6, layers=2)
    torch.save((rnn, head), tmp_path / "m.pt")
    x = torch.randn(30, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.save(x, tmp_path / "x.pt")
    assert main(["prune", "--checkpoint", str(tmp_path / "m.pt"), "--trust-checkpoint", "--data",
                 str(tmp_path / "x.pt"), "--target", "0.01", "--covariance-mode", mode, "--out",
                 str(tmp_path / "p.safetensors"), "--no-progress"]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "p.json").read_text())
    api = spectral_prune((rnn, head), x, target=0.01, covariance_mode=mode)
    assert summary["covariance_mode"] == mode
    assert {int(k): v for k, v in summary["search"]["evaluated"].items()} == pytest.approx(api.search["evaluated"])
