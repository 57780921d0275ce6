"""A linear layer over a recurrent module's states beside other features (an attention decoder's output layer over
``cat(context, decoder_output)``): refused with the rewrite that makes it prunable, ``pruning.split_linear``, which
computes the same function with one linear layer per part; its part over the states is then a read-out."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pruning import SplitLinear, load_pruned, spectral_prune, split_linear
from pruning.final_state import final_state_map_of
from pruning.unitwise import ReadoutPathError
from reference_impl import on_reconstructed_states


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.integers(1, 9), min_size=1, max_size=4), out=st.integers(1, 6), bias=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2 ** 16))
def test_the_split_layer_computes_what_the_linear_layer_computes(widths, out, bias, dtype, seed):
    """Against the original layer on random inputs (round-off of one addition per part, per dtype); the weights are
    the original's column blocks, the bias the first part's, and the original model is left as it was."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(sum(widths), out, bias=bias, dtype=dtype))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    split = split_linear(model, "0", widths)
    layer = split.get_submodule("0")
    assert isinstance(layer, SplitLinear) and layer.in_features == sum(widths) and layer.out_features == out
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    x = torch.randn(5, 3, sum(widths), dtype=dtype)
    with torch.no_grad():
        got, want = split(x), model(x)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, want, **tol)
    columns = np.cumsum([0] + widths)
    for i, part in enumerate(layer.parts):
        assert part.weight.dtype == dtype
        torch.testing.assert_close(part.weight, model[0].weight[:, columns[i]:columns[i + 1]], rtol=0, atol=0)
        assert (part.bias is not None) == (bias and i == 0)


def test_bad_arguments_are_named():
    model = nn.Sequential(nn.Linear(5, 2), nn.GRU(2, 3))
    with pytest.raises(ValueError, match=r"widths: \[2, 2\] add up to 4, but '0' has in_features=5"):
        split_linear(model, "0", [2, 2])
    with pytest.raises(ValueError, match="widths: expected positive integers"):
        split_linear(model, "0", [5, 0])
    with pytest.raises(TypeError, match="path: '1' is a GRU; expected an nn.Linear"):
        split_linear(model, "1", [2])
    with pytest.raises(ValueError, match="path: the model has no submodule 'head'"):
        split_linear(model, "head", [5])
    model[0].bias.requires_grad_(False)  # frozen parts stay frozen
    frozen = split_linear(model, "0", [2, 3]).get_submodule("0")
    assert not frozen.parts[0].bias.requires_grad and frozen.parts[0].weight.requires_grad
    layer = split_linear(model, "0", [2, 3]).get_submodule("0")
    with pytest.raises(ValueError, match=r"input: expected a last dimension of 5 \(the parts' \[2, 3\]"):
        layer(torch.randn(4, 6))


class AttentionSeq2Seq(nn.Module):
    """A bidirectional encoder whose final state starts the decoder through a bridge, additive attention over its
    outputs (keys from a linear layer), and an output layer over ``cat(context, decoder_output)``."""

    def __init__(self, cell="GRU", m=8, dec=6, vocab=5):
        super().__init__()
        kw = dict(batch_first=True, dtype=torch.float64)
        self.enc = getattr(nn, cell)(3, m, bidirectional=True, **kw)
        self.bridge = nn.Linear(2 * m, dec, dtype=torch.float64)
        self.keys = nn.Linear(2 * m, dec, dtype=torch.float64)
        self.dec = getattr(nn, cell)(2, dec, **kw)
        self.score = nn.Linear(dec, 1, bias=False, dtype=torch.float64)
        self.out = nn.Linear(2 * m + dec, vocab, dtype=torch.float64)

    def forward(self, x, y):
        enc_out, h = self.enc(x)
        bridged = lambda s: torch.tanh(self.bridge(torch.cat((s[0], s[1]), -1)))[None]  # noqa: E731
        start = tuple(map(bridged, h)) if isinstance(h, tuple) else bridged(h)
        dec_out, _ = self.dec(y, start)
        scores = self.score(torch.tanh(self.keys(enc_out)[:, None] + dec_out[:, :, None])).squeeze(-1)
        context = torch.softmax(scores, -1) @ enc_out
        return self.out(torch.cat((context, dec_out), -1))


def _run(model, batch):
    return model(*batch)


@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
def test_an_attention_decoders_output_layer_is_refused_then_prunes_once_split(cell, tmp_path):
    """The plain model is refused naming split_linear; the split one prunes, and the pruned model is the original
    (split) model run on ``A_J h#``: the encoder's outputs and final state replaced by the pruned encoder's own,
    mapped back (an independent computation: reference_impl.on_reconstructed_states). With every unit kept and a tiny
    lambda it is the original model. A fresh instance split the same way loads the pruned weights."""
    torch.manual_seed(2)
    model = AttentionSeq2Seq(cell).eval()
    x, y = torch.randn(30, 7, 3, dtype=torch.float64), torch.randn(30, 4, 2, dtype=torch.float64)
    batches = [(x, y)]
    with pytest.raises(ValueError, match=r"split_linear\(model, 'out', \[16, 6\]\).*readout='out.parts.0'"):
        spectral_prune(model, batches, k=3, rnn="enc", readout=["keys", "out"], forward=_run)
    split = split_linear(model, "out", [16, 6])
    res = spectral_prune(split, batches, k=3, rnn="enc", readout=["keys", "out.parts.0"], forward=_run,
                         precision="float64")
    assert res.model.out.parts[0].in_features == 6 and res.model.out.parts[1].in_features == 6
    assert res.model.keys.in_features == 6 and final_state_map_of(res.model.enc) is not None
    rows = sorted(res.layers, key=lambda lp: lp.direction)
    cells = None
    if cell == "LSTM":
        cells = [res.model.enc.final_cell_map[r].numpy() for r in range(2)]  # the ridge maps: tested elsewhere
    reference = on_reconstructed_states(split, "enc", res.model.enc, [lp.A for lp in rows], x, cells)
    with torch.no_grad():
        torch.testing.assert_close(res.model(x, y), reference(x, y), rtol=1e-8, atol=1e-10)
    full = spectral_prune(split, batches, k=8, rnn="enc", readout=["keys", "out.parts.0"], forward=_run,
                          precision="float64", rel_lam=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(full.model(x, y), model(x, y), rtol=1e-6, atol=1e-6)
    res.save(tmp_path / "p.safetensors")
    loaded = load_pruned(tmp_path / "p.safetensors", model=split_linear(AttentionSeq2Seq(cell), "out", [16, 6]))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x, y), res.model(x, y))


def test_states_beside_features_of_the_same_width_get_the_hint_from_the_read_out_check():
    """When the other features happen to have the states' width, the layer looks like two states concatenated; the
    read-out check refuses it, and its message names split_linear."""
    torch.manual_seed(3)
    model = AttentionSeq2Seq("GRU", m=8, dec=16).eval()
    batches = [(torch.randn(12, 5, 3, dtype=torch.float64), torch.randn(12, 3, 2, dtype=torch.float64))]
    with pytest.raises(ReadoutPathError, match=r"'out' reads 32 features, taken as 2 of 'enc''s states.*"
                                               r"pruning.split_linear\(model, 'out'"):
        spectral_prune(model, batches, k=3, rnn="enc", readout=["keys", "out"], forward=_run)
    res = spectral_prune(split_linear(model, "out", [16, 16]), batches, k=3, rnn="enc",
                         readout=["keys", "out.parts.0"], forward=_run)
    assert res.model.out.parts[0].in_features == 6
