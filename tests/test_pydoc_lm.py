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
