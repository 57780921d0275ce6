"""An encoder whose final state starts a decoder: the pruned encoder returns its final state reconstructed at the
original width (pruning.final_state), so the decoder and anything else reading that state are left as they are."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning import load_pruned, spectral_prune
from pruning.final_state import ReconstructFinalState, final_state_map_of
from pruning.prune import DEFAULT_REL_LAM
from pruning.target import prune_to_target
from reference_impl import final_cell_ridge_maps, on_reconstructed_states


class _Seq2Seq(torch.nn.Module):
    """An encoder ``enc`` over the first three features whose final state starts the decoder ``dec`` (through a
    bridge over both directions for a bidirectional encoder); ``pool``, when set, also reads the encoder's output
    sequence (its mean over time), and the head reads every decoder step."""

    def __init__(self, cell="GRU", bidirectional=False, pool=False, layers=1, m=10):
        super().__init__()
        kw = dict(batch_first=True, dtype=torch.float64, num_layers=layers)
        D = 2 if bidirectional else 1
        self.enc = getattr(torch.nn, cell)(3, m, bidirectional=bidirectional, **kw)
        self.bridge = torch.nn.Linear(D * m, 7, dtype=torch.float64) if bidirectional else None
        self.dec = getattr(torch.nn, cell)(2, 7 if bidirectional else m, **kw)
        self.pool = torch.nn.Linear(D * m, 2, dtype=torch.float64) if pool else None
        self.head = torch.nn.Linear(self.dec.hidden_size, 2, dtype=torch.float64)

    def forward(self, x):
        out, h = self.enc(x[..., :3])
        if self.bridge is not None:  # (an LSTM's h_n and c_n each through it)
            bridged = lambda s: torch.tanh(self.bridge(torch.cat((s[0::2], s[1::2]), -1)))  # noqa: E731 (per layer)
            h = tuple(map(bridged, h)) if isinstance(h, tuple) else bridged(h)
        y = self.head(self.dec(x[..., 3:], h)[0])
        if self.pool is not None:
            y = y + self.pool(out.mean(1))[:, None]
        return y


def _enc_replaced(model, outputs, final):
    """The model with its encoder's output and final state replaced by the given tensors (a forward hook)."""
    other = copy.deepcopy(model)
    other.enc.register_forward_hook(lambda module, args, out: (outputs, final))
    return other


def _masked_encoder(model, res, D):
    """The original encoder with every removed unit's outgoing weights zeroed (its recurrent columns, the next
    layer's input columns), and the mask of the kept units of each row of the final state (layers x directions)."""
    enc, m = copy.deepcopy(model.enc), model.enc.hidden_size
    keep = torch.zeros(enc.num_layers * D, 1, m, dtype=torch.float64)
    with torch.no_grad():
        for lp in res.layers:
            keep[lp.layer * D + lp.direction, 0, list(lp.units)] = 1
            removed = torch.nonzero(keep[lp.layer * D + lp.direction, 0] == 0)[:, 0]
            getattr(enc, f"weight_hh_l{lp.layer}{'_reverse' if lp.direction else ''}")[:, removed] = 0
            if lp.layer + 1 < enc.num_layers:
                for s in ("", "_reverse")[:D]:
                    getattr(enc, f"weight_ih_l{lp.layer + 1}{s}")[:, lp.direction * m + removed] = 0
    return enc, keep


@settings(max_examples=20, deadline=None)
@given(cell=st.sampled_from(["RNN", "GRU", "LSTM"]), bidirectional=st.booleans(), pool=st.booleans(),
       layers=st.integers(1, 2), mode=st.sampled_from(["sequential", "original"]), k=st.integers(1, 10),
       k_top=st.one_of(st.none(), st.integers(1, 10)), seed=st.integers(0, 2 ** 16))
def test_a_pruned_encoder_hands_on_its_reconstructed_final_state(cell, bidirectional, pool, layers, mode, k, k_top,
                                                                 seed):
    """Without reconstruction the pruned model is the original whose encoder's units read no removed unit and whose
    decoder starts from its final state with the removed units' entries zeroed, row by row (and whose pooled read-out
    reads no removed unit); with reconstruction it is the original run on ``A_J h#``: the encoder's output and final
    state replaced by the pruned encoder's own, each layer-direction's row mapped by its A_J (the documented
    ``layers[i].A``), the maps the module holds, and an LSTM's final cells by the ridge maps computed here from the
    original's final cells. ``k_top``: another width for the second layer, which makes the pruned encoder a
    RecurrentStack whose final-state rows are zero-padded to the wider layer's width."""
    torch.manual_seed(seed)
    D, m = (2 if bidirectional else 1), 10
    if layers == 2 and k_top is not None:
        k = [k, k_top]
    widths = k if isinstance(k, list) else [k] * layers
    model = _Seq2Seq(cell, bidirectional, pool, layers=layers).eval()
    x = torch.randn(20, 6, 5, dtype=torch.float64)
    readout = ["pool"] if pool else []
    kw = dict(rnn="enc", readout=readout, precision="float64", covariance_mode=mode)
    plain = spectral_prune(model, x, k=k, reconstruct=False, **kw)
    enc, keep = _masked_encoder(model, plain, D)
    with torch.no_grad():
        out, h = enc(x[..., :3])
        mask = keep[-D:, 0].reshape(1, 1, D * m)
        start = tuple(s * keep for s in h) if isinstance(h, tuple) else h * keep
        expected = _enc_replaced(model, out * mask, start)(x)
        torch.testing.assert_close(plain.model(x), expected, rtol=1e-10, atol=1e-12)

    res = spectral_prune(model, x, k=k, **kw)
    rows = sorted(res.layers, key=lambda lp: (lp.layer, lp.direction))
    maps = final_state_map_of(res.model.enc)
    assert maps is not None and maps.shape == (layers * D, m, max(widths))
    for r, lp in enumerate(rows):
        np.testing.assert_array_equal(maps[r, :, :lp.k].numpy(), lp.A)
        assert not maps[r, :, lp.k:].any()  # the columns a narrower layer's padded entries meet
    cells = None
    if cell == "LSTM":
        with torch.no_grad():
            final_cells = model.enc(x[..., :3])[1][1]
        cells = final_cell_ridge_maps(final_cells, [lp.units for lp in rows], DEFAULT_REL_LAM)
        for r, lp in enumerate(rows):
            held = res.model.enc.final_cell_map[r].numpy()
            np.testing.assert_allclose(held[:, :lp.k], cells[r], rtol=1e-8, atol=1e-10)
            assert not held[:, lp.k:].any()
    else:
        assert not hasattr(res.model.enc, "final_cell_map")
    reference = on_reconstructed_states(model, "enc", res.model.enc, [lp.A for lp in rows], x[..., :3], cells)
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), reference(x), rtol=1e-8, atol=1e-10)
    if widths == [m] * layers:  # all units kept: A_J is a permutation up to the ridge, the model nearly unchanged
        with torch.no_grad():
            assert float((res.model(x) - model(x)).abs().max()) < 1e-3


def test_given_statistics_still_measure_an_lstm_encoders_final_cells():
    """With covariance= the pass does not run, so the final cells are measured by a run of the model over the data:
    the same maps as the one pass gives; without data they cannot be, and that is said."""
    torch.manual_seed(4)
    model = _Seq2Seq("LSTM").eval()
    x = torch.randn(16, 5, 5, dtype=torch.float64)
    once = spectral_prune(model, x, k=3, rnn="enc", readout=[], precision="float64")
    given_stats = spectral_prune(model, x, k=3, rnn="enc", readout=[], covariance=once.covariance)
    torch.testing.assert_close(given_stats.model.enc.final_cell_map, once.model.enc.final_cell_map, rtol=1e-12,
                               atol=1e-14)
    with pytest.warns(UserWarning, match="data: none given"):
        with pytest.raises(ValueError, match="final cell states of 'enc'.*pass data"):
            spectral_prune(model, None, k=3, rnn="enc", readout=[], covariance=once.covariance)


@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
def test_an_unbatched_call_gets_its_final_state_mapped(cell):
    """A single sequence without a batch dimension gives a final state of shape (directions, k): mapped per direction
    to (directions, m), the same rows as the batched call of that sequence."""
    torch.manual_seed(2)
    model = _Seq2Seq(cell, bidirectional=True).eval()
    x = torch.randn(10, 5, 5, dtype=torch.float64)
    enc = spectral_prune(model, x, k=3, rnn="enc", readout=[]).model.enc
    with torch.no_grad():
        one = enc(x[0, :, :3])[1]
        batched = enc(x[:1, :, :3])[1]
    for a, b in zip(one if cell == "LSTM" else (one,), batched if cell == "LSTM" else (batched,)):
        assert a.shape == (2, 10)
        torch.testing.assert_close(a, b[:, 0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell,layers,k", [("GRU", 1, 4), ("LSTM", 2, [4, 2])])
def test_the_pruned_encoder_saves_loads_and_moves_with_its_map(tmp_path, cell, layers, k):
    """``save`` records the map's shape and the weights hold its values: the loaded model computes what the pruned
    one does; the map follows the module to another dtype; dynamic quantization keeps the hook and its map. Layers
    of different widths: a RecurrentStack with padded maps, rebuilt the same way by ``load_pruned``."""
    torch.manual_seed(0)
    model = _Seq2Seq(cell, bidirectional=True, layers=layers).eval()
    x = torch.randn(16, 5, 5, dtype=torch.float64)
    res = spectral_prune(model, x, k=k, rnn="enc", readout=[])
    res.save(tmp_path / "p.safetensors")
    loaded = load_pruned(tmp_path / "p.safetensors", model=_Seq2Seq(cell, bidirectional=True, layers=layers))
    assert type(loaded.enc) is type(res.model.enc)
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))
        as32 = copy.deepcopy(res.model).float()
        assert as32.enc.final_state_map.dtype == torch.float32
        torch.testing.assert_close(as32(x.float()).double(), res.model(x), rtol=1e-4, atol=1e-5)
    hooks = [h for h in res.model.enc._forward_hooks.values() if isinstance(h, ReconstructFinalState)]
    assert len(hooks) == 1
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(as32), {getattr(torch.nn, cell)},
                                                       dtype=torch.qint8)
    with torch.no_grad():
        y = quantized(x.float())
    assert y.shape == res.model(x).shape and torch.isfinite(y).all()
    assert float((y.double() - res.model(x)).abs().max()) < 0.1 * float(res.model(x).abs().max()) + 0.05


def test_what_cannot_be_reconstructed_is_refused_clearly():
    """A module that is not a native RNN/GRU/LSTM (a RecurrentStack: with ``readout=[]``, and after the check passed
    only with its final state left to a reconstruction it cannot have), the error-target search (which measures read-outs only); the read-out
    check's error names ``readout=[]`` when a decoder reads the state."""
    from pruning import RecurrentStack

    torch.manual_seed(0)
    x = torch.randn(12, 5, 5, dtype=torch.float64)
    stacked = _Seq2Seq("GRU", pool=True, layers=2)
    stacked.enc = RecurrentStack("GRU", 3, [10, 10], batch_first=True, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"readout: \[\] names no read-out.*not a native"):
        spectral_prune(stacked, x, k=4, rnn="enc", readout=[])
    with pytest.raises(ValueError, match=r"passes this check with the final state of 'enc' left as it is.*not a "
                                         r"native nn.RNN"):
        spectral_prune(stacked, x, k=4, rnn="enc", readout="pool")  # the first check's error, and why the
        # reconstruction that would pass it is not available
    with pytest.raises(ValueError, match=r"readout=\[\] if none"):
        spectral_prune(_Seq2Seq("GRU"), x, k=4, rnn="enc")  # 'head' (reading the decoder) found by its width
    with pytest.raises(ValueError, match="target: .*final state"):
        prune_to_target(_Seq2Seq("GRU"), x, target=0.1, rnn="enc", readout=[])

    class Projected(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 6, batch_first=True, proj_size=2)

        def forward(self, x):
            return self.rnn(x)[0]

    with pytest.raises(ValueError, match="readout"):
        spectral_prune(Projected(), torch.randn(4, 3, 3), k=2, readout=[])


def test_a_named_read_out_of_the_final_state_is_still_absorbed():
    """A head on ``h_n`` alone (no decoder) passes the ordinary check: its columns absorb A_J and the module keeps
    returning k-wide states, as before; the reconstruction is only for states read outside the read-outs."""
    class LastState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(3, 8, batch_first=True, dtype=torch.float64)
            self.head = torch.nn.Linear(8, 2, dtype=torch.float64)

        def forward(self, x):
            return self.head(self.rnn(x)[1][-1])

    torch.manual_seed(0)
    model = LastState()
    res = spectral_prune(model, torch.randn(10, 5, 3, dtype=torch.float64), k=3)
    assert final_state_map_of(res.model.rnn) is None
    assert res.model.head.in_features == 3


@pytest.mark.parametrize("cell,layers,k", [("GRU", 1, 4), ("LSTM", 2, [2, 4])])
def test_the_pruned_encoder_exports_to_onnx_with_its_map(tmp_path, cell, layers, k):
    """The hook is traced into the ONNX graph: onnxruntime computes what the pruned model computes (also for a stack
    whose layers kept different widths)."""
    ort = pytest.importorskip("onnxruntime")
    from pruning.export import export_onnx

    torch.manual_seed(1)
    model = _Seq2Seq(cell, bidirectional=True, layers=layers).float().eval()
    x = torch.randn(16, 6, 5)
    res = spectral_prune(model, x, k=k, rnn="enc", readout=[])
    export_onnx(res.model, x, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    other = torch.randn(3, 9, 5)  # another batch size and length: the axes are dynamic
    got = session.run(None, {session.get_inputs()[0].name: other.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, res.model(other).numpy(), rtol=1e-4, atol=1e-5)
