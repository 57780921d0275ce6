"""LSTM, GRU, stacked and bidirectional modules: the shrunk module computes what it should (section 4)."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning import RecurrentStack, count_macs, count_parameters, spectral_prune
from pruning.covariance import layer_covariances
from pruning.modules import as_layers

CELLS = ("rnn-tanh", "rnn-relu", "lstm", "gru")


def make(cell, d_x, m, layers, bidirectional, batch_first, d_y=3, seed=0):
    torch.manual_seed(seed)
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, dtype=torch.float64)
    if cell.startswith("rnn"):
        rnn = torch.nn.RNN(d_x, m, nonlinearity=cell[4:], **kw)
    else:
        rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(d_x, m, **kw)
    head = torch.nn.Linear((2 if bidirectional else 1) * m, d_y, dtype=torch.float64)
    return rnn, head


def inputs(rnn, n, T, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, rnn.input_size, generator=g, dtype=torch.float64)
    return x if rnn.batch_first else x.transpose(0, 1)


def outputs(rnn, head, x):
    with torch.no_grad():
        return head(rnn(x)[0])


def masked(rnn, head, units):
    """The original with every removed unit's outgoing weights zeroed: recurrent columns (all gate rows),
    the next layer's input columns of its direction, the read-out columns."""
    D = 2 if rnn.bidirectional else 1
    rnn, head = [__import__("copy").deepcopy(mod) for mod in (rnn, head)]
    m = rnn.hidden_size
    with torch.no_grad():
        for l in range(rnn.num_layers):
            for d in range(D):
                gone = sorted(set(range(m)) - set(units[l][d]))
                getattr(rnn, f"weight_hh_l{l}{'_reverse' if d else ''}")[:, gone] = 0
                cols = [d * m + j for j in gone]
                if l + 1 < rnn.num_layers:
                    for s in ("", "_reverse")[:D]:
                        getattr(rnn, f"weight_ih_l{l + 1}{s}")[:, cols] = 0
                else:
                    head.weight[:, cols] = 0
    return rnn, head


def unit_sets(res, D):
    L = len(res.layers) // D
    return [[res.layers[l * D + d].units for d in range(D)] for l in range(L)]


config = st.fixed_dictionaries(dict(
    cell=st.sampled_from(CELLS), d_x=st.integers(1, 3), m=st.integers(2, 6), layers=st.integers(1, 3),
    bidirectional=st.booleans(), batch_first=st.booleans(), T=st.integers(1, 5), n=st.integers(1, 4),
    seed=st.integers(0, 10_000)))


@settings(max_examples=40, deadline=None)
@given(config, st.data())
def test_without_reconstruction_the_shrunk_module_is_the_original_with_outgoing_weights_zeroed(c, data):
    rnn, head = make(c["cell"], c["d_x"], c["m"], c["layers"], c["bidirectional"], c["batch_first"], seed=c["seed"])
    ks = data.draw(st.lists(st.integers(1, c["m"]), min_size=c["layers"], max_size=c["layers"]))
    x = inputs(rnn, c["n"], c["T"], seed=c["seed"])
    # an absolute lam: a deep narrow ReLU stack may have a dead layer, which rel_lam refuses
    res = spectral_prune((rnn, head), inputs(rnn, 8, 4), ks, lam=1.0, method="random", reconstruct=False,
                         seed=c["seed"])
    D = 2 if c["bidirectional"] else 1
    units = unit_sets(res, D)
    assert res.ks == ks and count_parameters(res.rnn) <= count_parameters(rnn)
    assert isinstance(res.rnn, type(rnn) if len(set(ks)) == 1 else RecurrentStack)
    ref_rnn, ref_head = masked(rnn, head, units)
    torch.testing.assert_close(outputs(res.rnn, res.readout, x), outputs(ref_rnn, ref_head, x), rtol=1e-12,
                               atol=1e-12)
    # the kept units' states equal the masked original's, layer by layer and direction by direction
    with torch.no_grad():
        xs, xr = x, x
        for l, (a, b) in enumerate(zip(as_layers(res.rnn), as_layers(ref_rnn))):
            xs, xr = a(xs)[0], b(xr)[0]
            for d in range(D):
                cols = [d * c["m"] + j for j in units[l][d]]
                torch.testing.assert_close(xs[..., d * ks[l]:(d + 1) * ks[l]], xr[..., cols], rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(config, st.sampled_from(["sequential", "original"]))
def test_keeping_every_unit_with_tiny_lambda_reproduces_the_outputs(c, mode):
    rnn, head = make(c["cell"], c["d_x"], c["m"], c["layers"], c["bidirectional"], c["batch_first"], seed=c["seed"])
    x = inputs(rnn, c["n"], c["T"], seed=c["seed"])
    calib = inputs(rnn, 64, 6, seed=c["seed"] + 1)
    res = spectral_prune((rnn, head), calib, c["m"], lam=1e-12, covariance_mode=mode)
    assert type(res.rnn) is type(rnn) and res.rnn.hidden_size == c["m"]
    # S6 holds on fresh inputs when every covariance is invertible; a ReLU unit that is dead on the calibration
    # data gets a zero column of A_J and may wake up on other inputs, so then the claim is on the calibration data
    dead = any(np.linalg.eigvalsh(c.mean()).min() <= 1e-12 * max(1.0, np.trace(c.mean()))
               for row in res.covariance for c in row) if isinstance(res.covariance, list) else \
        np.linalg.eigvalsh(res.covariance.mean()).min() <= 1e-12 * max(1.0, np.trace(res.covariance.mean()))
    if dead:
        x = calib
    scale = outputs(rnn, head, x).abs().max().item() + 1
    torch.testing.assert_close(outputs(res.rnn, res.readout, x), outputs(rnn, head, x), rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("cell, G", [("rnn-tanh", 1), ("gru", 3), ("lstm", 4)])
def test_parameter_and_mac_counts_against_hand_derived_formulas(cell, G):
    d_x, m, d_y, T = 3, 5, 2, 7
    rnn, head = make(cell, d_x, m, 2, True, True, d_y=d_y)
    # per direction: G m (d_in + m) weights and 2 G m biases; layer 1 reads both directions (d_in = 2m)
    params = 2 * (G * m * (d_x + m) + 2 * G * m) + 2 * (G * m * (2 * m + m) + 2 * G * m) + d_y * 2 * m + d_y
    assert count_parameters(rnn, head) == params
    per_step = 2 * G * (m * d_x + m * m) + 2 * G * (m * 2 * m + m * m)
    assert count_macs(rnn, T, head) == T * per_step + d_y * 2 * m
    assert count_macs(rnn, T, head, readout_steps=T) == T * per_step + T * d_y * 2 * m
    res = spectral_prune((rnn, head), inputs(rnn, 16, 4), [3, 2])
    k0, k1 = 3, 2
    small = (2 * (G * k0 * (d_x + k0) + 2 * G * k0) + 2 * (G * k1 * (2 * k0 + k1) + 2 * G * k1)
             + d_y * 2 * k1 + d_y)
    assert count_parameters(res.rnn, res.readout) == small
    assert count_parameters((res.rnn, res.readout)) == small  # a pair as one argument
    with pytest.raises(TypeError, match=r"^modules: expected torch modules \(or pairs of them\), got NoneType"):
        count_parameters(None)
    assert count_macs(res.rnn, T, res.readout) == T * (2 * G * (k0 * d_x + k0 * k0) + 2 * G * (k1 * 2 * k0 + k1 * k1)) \
        + d_y * 2 * k1


@pytest.mark.parametrize("ks", [[3, 3], [4, 2]])
def test_saved_pruned_modules_load_back_with_plain_torch(ks):
    from pruning.modules import module_summary

    rnn, head = make("lstm", 2, 5, 2, True, False)
    res = spectral_prune((rnn, head), inputs(rnn, 16, 4), ks)
    x = inputs(rnn, 3, 6)
    buf = io.BytesIO()
    torch.save(res.rnn.state_dict(), buf)
    buf.seek(0)
    info = module_summary(res.rnn)
    if len(set(ks)) == 1:
        again = torch.nn.LSTM(info["input_size"], info["hidden_sizes"][0], num_layers=info["num_layers"],
                              bidirectional=info["bidirectional"], batch_first=info["batch_first"], dtype=torch.float64)
    else:
        again = RecurrentStack(info["cell"], info["input_size"], info["hidden_sizes"],
                               bidirectional=info["bidirectional"], batch_first=info["batch_first"],
                               dtype=torch.float64)
    again.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(again(x)[0], res.rnn(x)[0], rtol=0, atol=0)


def test_per_layer_covariances_match_a_direct_computation():
    rnn, _ = make("gru", 2, 4, 2, True, True)
    x = inputs(rnn, 10, 5)
    stats = layer_covariances(as_layers(rnn), x, batch_size=3)
    with torch.no_grad():
        h0 = as_layers(rnn)[0](x)[0]
        h1 = rnn(x)[0]  # the native module's output is the last layer's
    for l, h in enumerate((h0, h1)):
        for d in range(2):
            H = h[..., d * 4:(d + 1) * 4].reshape(-1, 4)
            np.testing.assert_allclose(stats[l][d].mean(), (H.T @ H / H.shape[0]).numpy(), rtol=1e-12, atol=1e-14)


class TiedLM(torch.nn.Module):
    def __init__(self, vocab=11, width=6):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, width, dtype=torch.float64)
        self.rnn = torch.nn.LSTM(width, width, num_layers=2, batch_first=True, dtype=torch.float64)
        self.readout = torch.nn.Linear(width, vocab, dtype=torch.float64)
        self.readout.weight = self.embedding.weight  # tied decoder

    def rnn_inputs(self, tokens):
        return self.embedding(tokens)

    def forward(self, tokens):
        return self.readout(self.rnn(self.rnn_inputs(tokens))[0])


def test_a_tied_decoder_absorbs_A_and_is_untied():
    torch.manual_seed(0)
    lm = TiedLM()
    tokens = torch.randint(0, 11, (32, 7))
    res = spectral_prune(lm, tokens, 6, lam=1e-12)
    new = res.model
    assert new.readout.weight.data_ptr() != new.embedding.weight.data_ptr()
    torch.testing.assert_close(new.embedding.weight, lm.embedding.weight)
    with torch.no_grad():
        torch.testing.assert_close(new(tokens[:4]), lm(tokens[:4]), rtol=0, atol=1e-6)
    small = spectral_prune(lm, tokens, [4, 3]).model
    assert small.readout.weight.shape == (11, 3) and small.embedding.weight.shape == (11, 6)
    assert small(tokens[:2]).shape == (2, 7, 11)


def test_sequential_and_original_covariance_modes_differ_only_above_the_first_layer():
    rnn, head = make("lstm", 2, 6, 2, False, True)
    x = inputs(rnn, 64, 5)
    seq = spectral_prune((rnn, head), x, [3, 3], covariance_mode="sequential")
    orig = spectral_prune((rnn, head), x, [3, 3], covariance_mode="original")
    assert seq.layers[0].units == orig.layers[0].units
    np.testing.assert_allclose(seq.covariance[0][0].mean(), orig.covariance[0][0].mean())
    assert not np.allclose(seq.covariance[1][0].mean(), orig.covariance[1][0].mean())
    # the original-mode statistics can be reused; the sequential ones are refused for a different plan
    again = spectral_prune((rnn, head), None, [3, 3], covariance=orig.covariance)
    assert [lp.units for lp in again.layers] == [lp.units for lp in orig.layers]
    for l in range(2):
        torch.testing.assert_close(again.covariance[l][0].outer_sum, orig.covariance[l][0].outer_sum, rtol=0, atol=0)
    # the sequential ones describe the network with layer 0 pruned: given back as the original network's they were
    # taken for it without a word (a result labelled 'original' from other statistics); they are refused, by layer
    assert [c[0].pruned_below for c in seq.covariance] == [False, True]
    assert not any(c[0].pruned_below for c in orig.covariance)
    with pytest.raises(ValueError, match=r"^covariance: the statistics of layer 1 were measured with the layers below "
                                         r"it pruned \(covariance_mode='sequential'\)"):
        spectral_prune((rnn, head), None, [4, 2], covariance=seq.covariance)
    merged = seq.covariance[1][0].merge(orig.covariance[1][0])
    assert merged.pruned_below and merged.count == 2 * orig.covariance[1][0].count


def test_bad_arguments_name_the_problem():
    rnn, head = make("gru", 2, 4, 2, True, True)
    x = inputs(rnn, 4, 3)
    with pytest.raises(ValueError, match="k: expected one value or one per layer"):
        spectral_prune((rnn, head), x, [2, 2, 2])
    with pytest.raises(ValueError, match=r"k\[1\]: expected 1 <= k <= m = 4"):
        spectral_prune((rnn, head), x, [2, 5])
    with pytest.raises(ValueError, match="covariance: expected one covariance per layer"):
        spectral_prune((rnn, head), None, 2, covariance=[np.eye(4)])
    with pytest.raises(ValueError, match="covariance_mode"):
        spectral_prune((rnn, head), x, 2, covariance_mode="later")
    with pytest.raises(ValueError, match="in_features"):
        spectral_prune((rnn, torch.nn.Linear(4, 2, dtype=torch.float64)), x, 2)
    with pytest.raises(AttributeError, match="layers"):
        spectral_prune((rnn, head), x, 2).units
