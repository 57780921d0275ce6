"""Language models on pydoc text (benchmarks.pydoc_lm, benchmarks.language): the gated and tied models, the
best-validation checkpoint, bits per token against a hand-computed cross-entropy, and the tiny preset end to end with
its parameter counts checked against a count of the modules' tensors."""

import math

import pytest
import torch

from benchmarks.__main__ import main
from benchmarks.language import RNNLanguageModel, bptt_batches, train_language_model
from benchmarks.pydoc_lm import TEXT_PRESETS, bits_per_token, run_pydoc_lm
from benchmarks.runio import read_results
from pruning import spectral_prune, time_mean_covariance


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_language_model_cells_and_pruning(cell):
    torch.manual_seed(0)
    model = RNNLanguageModel(30, 8, 12, cell=cell)
    ids = torch.randint(0, 30, (2000,))
    calib = torch.cat([x for x, _ in bptt_batches(ids, 8, 20)][:-1])
    stats = time_mean_covariance(model.rnn, calib, input_transform=model.rnn_inputs)
    pruned = spectral_prune(model, None, 5, covariance=stats).model
    assert pruned.rnn.hidden_size == 5 and pruned.readout.in_features == 5
    assert pruned(ids[:40].view(2, 20)).shape == (2, 20, 30)


def test_tied_decoder_shares_the_embedding_and_unties_when_pruned():
    torch.manual_seed(0)
    model = RNNLanguageModel(30, 12, 12, cell="LSTM", tied=True)
    assert model.readout.weight is model.embedding.weight
    ids = torch.randint(0, 30, (2000,))
    calib = torch.cat([x for x, _ in bptt_batches(ids, 8, 20)][:-1])
    stats = time_mean_covariance(model.rnn, calib, input_transform=model.rnn_inputs)
    pruned = spectral_prune(model, None, 6, covariance=stats).model
    assert pruned.readout.weight.shape == (30, 6) and pruned.embedding.weight.shape == (30, 12)
    with pytest.raises(ValueError, match="tied: a tied decoder needs embed_dim == hidden_size"):
        RNNLanguageModel(30, 8, 12, tied=True)


def test_bits_per_token_is_the_mean_cross_entropy_in_bits():
    torch.manual_seed(1)
    model = RNNLanguageModel(20, 6, 7, cell="GRU").eval()
    ids = torch.randint(0, 20, (16 * 30 + 1,))
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in bptt_batches(ids, 16, 10):
            logp = torch.log_softmax(model(x).double(), dim=-1)
            total -= float(logp.gather(-1, y.unsqueeze(-1)).sum())
            count += y.numel()
    assert bits_per_token(model, ids, 10) == pytest.approx(total / count / math.log(2), rel=1e-5)


def test_training_keeps_the_best_validation_epoch():
    torch.manual_seed(2)
    model = RNNLanguageModel(15, 6, 8, cell="LSTM")
    ids, val = torch.randint(0, 15, (3000,)), torch.randint(0, 15, (600,))
    train_language_model(model, ids, epochs=4, batch_size=8, bptt=20, progress=False, val=val, schedule="onecycle")
    from benchmarks.language import perplexity

    assert len(model.val_history) == 4
    assert perplexity(model, val, bptt=20) == pytest.approx(min(model.val_history), rel=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        train_language_model(model, ids, epochs=1, schedule="cosine")


def test_tiny_preset_end_to_end(tmp_path):
    preset = TEXT_PRESETS["tiny"]
    logs = []
    run_pydoc_lm(preset, tmp_path, log=logs.append)
    rows = read_results(tmp_path / "pydoc_lm.csv")
    methods = {r["method"] for r in rows}
    assert {"full network", "spectral", "dense from scratch", "random + recon."} <= methods
    from benchmarks.pydoc_text import pydoc_corpus

    v = pydoc_corpus("char").vocab_size
    for r in rows:
        k = r["k"]
        # embedding (v x 8) + the LSTM's four gates (k (8 + k) weights and 2 k biases each) + decoder (v x k + v)
        assert r["params"] == v * 8 + 4 * (k * (8 + k) + 2 * k) + v * k + v
        assert 0 < r["test_bits"] < math.log2(v) + 1
    assert {r["k"] for r in rows if r["method"] == "spectral"} == set(preset.ks)
    assert any(r["finetuned"] == 1 for r in rows if r["method"] == "spectral")
    text = (tmp_path / "pydoc_lm.md").read_text()
    assert "SHA-256" in text and "| LSTM | 16 | 0 |" in text
    logs.clear()
    run_pydoc_lm(preset, tmp_path, log=logs.append)
    assert logs[0] == "pydoc-lm: 0 language models to run"
    assert main(["pydoc-lm", "--preset", "tiny", "--report-only", "--out", str(tmp_path / "none")]) == 2


def test_training_lowers_the_bits_on_a_learnable_stream():
    torch.manual_seed(3)
    model = RNNLanguageModel(10, 4, 6, cell="LSTM")
    ids = torch.arange(3000) % 10  # a deterministic cycle: learnable
    before = bits_per_token(model, ids, 20)
    train_language_model(model, ids, epochs=2, batch_size=8, bptt=20, progress=False)
    assert bits_per_token(model, ids, 20) < before


def test_criterion_pruning_of_a_tied_stack_leaves_the_original_model_intact():
    """prune_by_criterion on a two-layer tied model: the pruned copy's decoder is V A (untied, width k), its embedding
    is the original one, and the original model still shares one tensor between embedding and decoder."""
    from benchmarks.pydoc_lm import _criterion_scores
    from pruning import layer_covariances
    from pruning.criteria import prune_by_criterion
    from pruning.modules import as_layers

    torch.manual_seed(4)
    model = RNNLanguageModel(30, 12, 12, cell="GRU", num_layers=2, tied=True)
    before = model.embedding.weight.detach().clone()
    ids = torch.randint(0, 30, (2000,))
    windows = list(bptt_batches(ids, 8, 20))[:-1]
    x, y = torch.cat([w for w, _ in windows]), torch.cat([t for _, t in windows])
    grid = layer_covariances(as_layers(model.rnn), x, input_transform=model.rnn_inputs)
    scores = _criterion_scores(model, x, y)
    assert set(scores) == {"taylor", "mean_activation", "geometric_median"}
    for crit, s in scores.items():
        pruned = prune_by_criterion(model, None, 5, method=crit, scores=s, covariance=grid).model
        assert [layer.hidden_size for layer in as_layers(pruned.rnn)] == [5, 5]
        assert pruned.readout.weight.shape == (30, 5)
        assert torch.equal(pruned.embedding.weight, before)
        assert pruned(ids[:40].view(2, 20)).shape == (2, 20, 30)
    assert model.readout.weight is model.embedding.weight and torch.equal(model.embedding.weight, before)


def test_a_two_layer_tied_word_preset_end_to_end(tmp_path):
    """Every method (spectral, baselines, criteria) on a two-layer tied word-level GRU; parameter counts against a
    count of the tensors, a tied tensor counted once (the dense model of width k has embedding width k)."""
    from benchmarks.pydoc_lm import LM_CRITERIA, TextPreset, pydoc_lm_report
    from benchmarks.pydoc_text import pydoc_corpus

    preset = TextPreset("t", "word", cells=("GRU",), widths=(12,), ks=(6,), seeds=(0,), epochs=1, floor=1e9, embed=12,
                        bptt=20, calibration_windows=16, num_layers=2, tied=True)
    rows = run_pydoc_lm(preset, tmp_path, log=lambda _: None)
    v = pydoc_corpus("word").vocab_size
    gru = lambda d, k: 3 * (k * (d + k) + 2 * k)
    expected = {"full network": v * 12 + gru(12, 12) + gru(12, 12) + v,  # tied: the decoder's weight is the embedding
                "dense from scratch": v * 6 + gru(6, 6) + gru(6, 6) + v}
    pruned_count = v * 12 + gru(12, 6) + gru(6, 6) + v * 6 + v  # untied once pruned
    methods = {r["method"] for r in rows}
    assert {label for label, _, _ in LM_CRITERIA} <= methods and "spectral" in methods
    for r in rows:
        assert r["params"] == expected.get(r["method"], pruned_count), r["method"]
        assert 0 < r["test_bits"] < math.log2(v) + 1
    text = pydoc_lm_report(tmp_path, preset).read_text()
    assert "2-layer models, embedding 12, decoder tied to the embedding" in text


def test_speeds_are_timed_per_shape(tmp_path, monkeypatch):
    """A tied preset's dense model of width k has embedding width k, the pruned models of width k the full one: their
    forward passes are timed separately (one timing per shape), never shared."""
    import benchmarks.pydoc_lm as lm
    from benchmarks.pydoc_lm import TextPreset

    timed = []

    def fake_speed(model, ids, bptt, repeats=3):
        timed.append((model.rnn.hidden_size, model.embedding.embedding_dim))
        return float(len(timed))

    monkeypatch.setattr(lm, "_speed", fake_speed)
    preset = TextPreset("t", "word", cells=("GRU",), widths=(12,), ks=(6,), seeds=(0,), epochs=1, floor=1e9, embed=12,
                        bptt=20, calibration_windows=16, num_layers=2, tied=True, finetune_epochs=0)
    rows = run_pydoc_lm(preset, tmp_path, log=lambda _: None)
    assert sorted(timed) == [(6, 6), (6, 12), (12, 12)]
    speed = {(r["method"], r["k"]): r["tokens_per_s"] for r in rows}
    assert speed[("dense from scratch", 6)] != speed[("spectral", 6)] == speed[("random + recon.", 6)]
